#include "io/bigann_bin.h"

#include <array>

#include "io/dense_vector_reader.h"
#include "io/format.h"
#include "megatax/error.h"

namespace megatax::io {

std::unique_ptr<VectorReader> open_bigann_bin(const Storage& storage, const std::string& path,
                                              VectorFormat format) {
  if (format != VectorFormat::kFbin && format != VectorFormat::kU8bin) {
    throw_error(ErrorCode::kInternal, "open_bigann_bin: not a big-ann format");
  }
  const DType dtype = format == VectorFormat::kFbin ? DType::kF32 : DType::kU8;
  const std::uint64_t file_size = storage.size(path);
  if (file_size < kBigAnnHeaderBytes) {
    throw_error(ErrorCode::kDataLoss,
                "file " + path + ": expected at least " + std::to_string(kBigAnnHeaderBytes) +
                    " bytes (the ." + vector_format_name(format) +
                    " header: u32 rows, u32 dim), found " + std::to_string(file_size));
  }
  std::array<unsigned char, kBigAnnHeaderBytes> header{};
  storage.read_range(path, 0, header.size(), header.data());
  const std::uint64_t rows = load_u32_le(header.data());
  const std::uint64_t dim = load_u32_le(header.data() + 4);
  if (dim < 1 || dim > static_cast<std::uint64_t>(kMaxDim)) {
    throw_error(ErrorCode::kDataLoss, "file " + path + ": header says dim " + std::to_string(dim) +
                                          "; expected 1 to " + std::to_string(kMaxDim));
  }
  // rows < 2^32 and dim < 2^31, so rows * dim fits; times the element size it may not.
  std::uint64_t expected = 0;
  if (!checked_mul(rows * dim, dtype_size(dtype), &expected) ||
      !checked_add(expected, kBigAnnHeaderBytes, &expected)) {
    throw_error(ErrorCode::kDataLoss, "file " + path + ": header says " + std::to_string(rows) +
                                          " rows x " + std::to_string(dim) +
                                          " dims, more than 2^64 bytes; found " +
                                          std::to_string(file_size) + " bytes");
  }
  check_file_size(path, expected, file_size,
                  "8 header + " + std::to_string(rows) + " rows x " + std::to_string(dim) + " x " +
                      std::to_string(dtype_size(dtype)) + " bytes");
  return std::make_unique<DenseVectorReader>(storage, path, format, kBigAnnHeaderBytes,
                                             static_cast<std::int64_t>(rows),
                                             static_cast<std::int64_t>(dim), dtype);
}

}  // namespace megatax::io
