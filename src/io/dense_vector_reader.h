// io/dense_vector_reader.h -- a VectorReader for files that are a header followed by the
// rows back to back (.npy, .fbin, .u8bin). The format's opener checks the header and the
// file size, then hands the layout to this class.
//
// Thread-safety: immutable; const calls may run concurrently (see VectorReader).
#pragma once

#include <cstdint>
#include <string>

#include "megatax/storage.h"
#include "megatax/vector_format.h"

namespace megatax::io {

class DenseVectorReader final : public VectorReader {
 public:
  // `storage` is borrowed. Preconditions (checked by the opener): rows >= 0, dim >= 1,
  // data_offset + rows * dim * dtype_size(dtype) fits in 64 bits and equals the file size.
  DenseVectorReader(const Storage& storage, std::string path, VectorFormat format,
                    std::uint64_t data_offset, std::int64_t rows, std::int64_t dim, DType dtype)
      : storage_(storage),
        path_(std::move(path)),
        format_(format),
        data_offset_(data_offset),
        rows_(rows),
        dim_(dim),
        dtype_(dtype) {}

  const std::string& path() const noexcept override { return path_; }
  VectorFormat format() const noexcept override { return format_; }
  std::int64_t rows() const noexcept override { return rows_; }
  std::int64_t dim() const noexcept override { return dim_; }
  DType dtype() const noexcept override { return dtype_; }
  void read(std::int64_t row_begin, std::int64_t n_rows, void* dst) const override;
  void read_rows(std::span<const std::int64_t> rows, void* dst) const override;
  InPlaceRows rows_in_place() const override;

 private:
  const Storage& storage_;
  const std::string path_;
  const VectorFormat format_;
  const std::uint64_t data_offset_;
  const std::int64_t rows_;
  const std::int64_t dim_;
  const DType dtype_;
};

}  // namespace megatax::io
