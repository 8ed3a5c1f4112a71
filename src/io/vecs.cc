#include "io/vecs.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "io/format.h"
#include "megatax/error.h"

namespace megatax::io {
namespace {

class VecsReader final : public VectorReader {
 public:
  VecsReader(const Storage& storage, std::string path, VectorFormat format, std::int64_t rows,
             std::int64_t dim, DType dtype)
      : storage_(storage),
        path_(std::move(path)),
        format_(format),
        rows_(rows),
        dim_(dim),
        dtype_(dtype) {}

  const std::string& path() const noexcept override { return path_; }
  VectorFormat format() const noexcept override { return format_; }
  std::int64_t rows() const noexcept override { return rows_; }
  std::int64_t dim() const noexcept override { return dim_; }
  DType dtype() const noexcept override { return dtype_; }

  void read(std::int64_t row_begin, std::int64_t n_rows, void* dst) const override {
    check_read_range(row_begin, n_rows, dst);
    if (n_rows == 0) return;
    const auto payload = static_cast<std::uint64_t>(row_bytes());
    const std::uint64_t stride = kVecsDimBytes + payload;
    const std::uint64_t chunk_rows = std::max<std::uint64_t>(1, kReadScratchBytes / stride);
    std::vector<unsigned char> scratch(
        static_cast<std::size_t>(std::min<std::uint64_t>(chunk_rows, n_rows) * stride));
    auto* out = static_cast<unsigned char*>(dst);
    std::uint64_t row = static_cast<std::uint64_t>(row_begin);
    const std::uint64_t end = row + static_cast<std::uint64_t>(n_rows);
    while (row < end) {
      const std::uint64_t k = std::min(chunk_rows, end - row);
      storage_.read_range(path_, row * stride, k * stride, scratch.data());
      for (std::uint64_t i = 0; i < k; ++i) {
        const unsigned char* rec = scratch.data() + i * stride;
        const auto row_dim = static_cast<std::int32_t>(load_u32_le(rec));
        if (row_dim != dim_) {
          throw_error(ErrorCode::kDataLoss, "file " + path_ + ": row " + std::to_string(row + i) +
                                                " has dim " + std::to_string(row_dim) +
                                                ", expected " + std::to_string(dim_) +
                                                " (from row 0)");
        }
        std::memcpy(out, rec + kVecsDimBytes, static_cast<std::size_t>(payload));
        out += payload;
      }
      row += k;
    }
  }

 private:
  const Storage& storage_;
  const std::string path_;
  const VectorFormat format_;
  const std::int64_t rows_;
  const std::int64_t dim_;
  const DType dtype_;
};

std::int32_t read_dim(const Storage& storage, const std::string& path, std::uint64_t offset) {
  std::array<unsigned char, kVecsDimBytes> bytes{};
  storage.read_range(path, offset, bytes.size(), bytes.data());
  return static_cast<std::int32_t>(load_u32_le(bytes.data()));
}

}  // namespace

std::unique_ptr<VectorReader> open_vecs(const Storage& storage, const std::string& path,
                                        VectorFormat format) {
  if (format != VectorFormat::kFvecs && format != VectorFormat::kBvecs) {
    throw_error(ErrorCode::kInternal, "open_vecs: not a vecs format");
  }
  const DType dtype = format == VectorFormat::kFvecs ? DType::kF32 : DType::kU8;
  const std::uint64_t file_size = storage.size(path);
  if (file_size == 0) {
    return std::make_unique<VecsReader>(storage, path, format, 0, 0, dtype);
  }
  if (file_size < kVecsDimBytes) {
    throw_error(ErrorCode::kDataLoss, "file " + path +
                                          ": expected at least 4 bytes (row 0's "
                                          "i32 dim), found " +
                                          std::to_string(file_size));
  }
  const std::int32_t dim = read_dim(storage, path, 0);
  if (dim < 1) {
    throw_error(ErrorCode::kDataLoss,
                "file " + path + ": row 0 has dim " + std::to_string(dim) + "; expected >= 1");
  }
  const std::uint64_t stride = kVecsDimBytes + static_cast<std::uint64_t>(dim) * dtype_size(dtype);
  if (file_size % stride != 0) {
    throw_error(ErrorCode::kDataLoss,
                "file " + path + ": expected a multiple of " + std::to_string(stride) +
                    " bytes (rows of 4 + " + std::to_string(dim) + " x " +
                    std::to_string(dtype_size(dtype)) + " bytes, dim from row 0), found " +
                    std::to_string(file_size) + ": truncated, or rows of different dims");
  }
  const std::uint64_t rows = file_size / stride;
  if (rows > 1) {
    const std::int32_t last = read_dim(storage, path, (rows - 1) * stride);
    if (last != dim) {
      throw_error(ErrorCode::kDataLoss, "file " + path + ": row " + std::to_string(rows - 1) +
                                            " has dim " + std::to_string(last) + ", expected " +
                                            std::to_string(dim) + " (from row 0)");
    }
  }
  return std::make_unique<VecsReader>(storage, path, format, static_cast<std::int64_t>(rows), dim,
                                      dtype);
}

}  // namespace megatax::io
