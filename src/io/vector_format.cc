// VectorReader's shared parts, the dense reader and the extension-based factory.
#include "megatax/vector_format.h"

#include <algorithm>
#include <vector>

#include "io/bigann_bin.h"
#include "io/dense_vector_reader.h"
#include "io/format.h"
#include "io/npy.h"
#include "io/parquet_reader.h"
#include "io/path.h"
#include "io/vecs.h"
#include "megatax/error.h"
#include "megatax/storage.h"

namespace megatax {

const char* vector_format_name(VectorFormat format) noexcept {
  switch (format) {
    case VectorFormat::kNpy: return "npy";
    case VectorFormat::kFbin: return "fbin";
    case VectorFormat::kU8bin: return "u8bin";
    case VectorFormat::kFvecs: return "fvecs";
    case VectorFormat::kBvecs: return "bvecs";
    case VectorFormat::kParquet: return "parquet";
  }
  return "unknown";
}

VectorFormat vector_format_from_path(const std::string& path) {
  const std::string_view name = io::base_name(path);
  const std::size_t dot = name.rfind('.');
  const std::string_view ext = dot == std::string_view::npos ? "" : name.substr(dot);
  if (ext == ".npy") return VectorFormat::kNpy;
  if (ext == ".fbin") return VectorFormat::kFbin;
  if (ext == ".u8bin") return VectorFormat::kU8bin;
  if (ext == ".fvecs") return VectorFormat::kFvecs;
  if (ext == ".bvecs") return VectorFormat::kBvecs;
  if (ext == ".parquet") return VectorFormat::kParquet;
  throw_error(ErrorCode::kInvalidArgument,
              "file " + path + ": unknown vector file extension '" + std::string(ext) +
                  "'; expected .npy, .fbin, .u8bin, .fvecs or .bvecs, or .parquet");
}

void VectorReader::check_read_range(std::int64_t row_begin, std::int64_t n_rows,
                                    const void* dst) const {
  if (row_begin < 0 || n_rows < 0 || row_begin > rows() || n_rows > rows() - row_begin) {
    throw_error(ErrorCode::kOutOfRange,
                "file " + path() + ": cannot read rows [" + std::to_string(row_begin) + ", " +
                    std::to_string(row_begin) + " + " + std::to_string(n_rows) + "); it has " +
                    std::to_string(rows()) + " rows");
  }
  if (n_rows > 0 && dst == nullptr) {
    throw_error(ErrorCode::kInvalidArgument, "file " + path() + ": read into a null buffer");
  }
}

void VectorReader::read_rows(std::span<const std::int64_t> rows, void* dst) const {
  auto* out = static_cast<unsigned char*>(dst);
  for (std::size_t t = 0; t < rows.size(); ++t)
    read(rows[t], 1, out + t * static_cast<std::size_t>(row_bytes()));
}

void VectorReader::read_rows_f32(std::span<const std::int64_t> rows, float* dst) const {
  if (dtype() == DType::kF32) {
    read_rows(rows, dst);
    return;
  }
  std::vector<unsigned char> raw(rows.size() * static_cast<std::size_t>(row_bytes()));
  read_rows(rows, raw.data());
  convert_to_f32(dtype(), raw.data(), rows.size() * static_cast<std::size_t>(dim()), dst);
}

void VectorReader::read_f32(std::int64_t row_begin, std::int64_t n_rows, float* dst) const {
  if (dtype() == DType::kF32) {
    read(row_begin, n_rows, dst);
    return;
  }
  check_read_range(row_begin, n_rows, dst);
  if (n_rows == 0) return;
  const auto stored_row = static_cast<std::uint64_t>(row_bytes());
  const std::int64_t chunk_rows = static_cast<std::int64_t>(
      std::max<std::uint64_t>(1, io::kReadScratchBytes / std::max<std::uint64_t>(1, stored_row)));
  const std::int64_t first = std::min(chunk_rows, n_rows);
  std::vector<unsigned char> scratch(static_cast<std::size_t>(first * row_bytes()));
  const auto d = static_cast<std::size_t>(dim());
  for (std::int64_t done = 0; done < n_rows;) {
    const std::int64_t k = std::min(chunk_rows, n_rows - done);
    read(row_begin + done, k, scratch.data());
    convert_to_f32(dtype(), scratch.data(), static_cast<std::size_t>(k) * d,
                   dst + static_cast<std::size_t>(done) * d);
    done += k;
  }
}

void VectorReader::read_ids(std::int64_t row_begin, std::int64_t n_rows, std::int64_t* dst) const {
  check_read_range(row_begin, n_rows, dst);
  throw_error(ErrorCode::kFailedPrecondition,
              "file " + path() + ": has no id column (ids come from a Parquet id column)");
}

std::unique_ptr<VectorReader> open_vector_file(const Storage& storage, const std::string& path) {
  return open_vector_file(storage, path, VectorReadOptions());
}

std::unique_ptr<VectorReader> open_vector_file(const Storage& storage, const std::string& path,
                                               const VectorReadOptions& options) {
  const VectorFormat format = vector_format_from_path(path);
  switch (format) {
    case VectorFormat::kNpy: return io::open_npy(storage, path);
    case VectorFormat::kFbin:
    case VectorFormat::kU8bin: return io::open_bigann_bin(storage, path, format);
    case VectorFormat::kFvecs:
    case VectorFormat::kBvecs: return io::open_vecs(storage, path, format);
    case VectorFormat::kParquet: return io::open_parquet(storage, path, options);
  }
  throw_error(ErrorCode::kInternal, "open_vector_file: unhandled format");
}

namespace io {

void check_file_size(const std::string& path, std::uint64_t expected, std::uint64_t actual,
                     const std::string& why) {
  if (expected == actual) return;
  throw_error(ErrorCode::kDataLoss, "file " + path + ": expected " + std::to_string(expected) +
                                        " bytes, found " + std::to_string(actual) + " (" + why +
                                        ")" +
                                        (actual < expected ? ": truncated" : ": trailing bytes"));
}

void DenseVectorReader::read_rows(std::span<const std::int64_t> rows, void* dst) const {
  const auto rb = static_cast<std::uint64_t>(row_bytes());
  std::vector<Storage::ReadRequest> requests(rows.size());
  for (std::size_t t = 0; t < rows.size(); ++t) {
    check_read_range(rows[t], 1, dst);
    requests[t] = {data_offset_ + static_cast<std::uint64_t>(rows[t]) * rb, rb,
                   static_cast<unsigned char*>(dst) + t * rb};
  }
  storage_.read_ranges(path_, requests);
}

void DenseVectorReader::read(std::int64_t row_begin, std::int64_t n_rows, void* dst) const {
  check_read_range(row_begin, n_rows, dst);
  if (n_rows == 0) return;
  const auto rb = static_cast<std::uint64_t>(row_bytes());
  storage_.read_range(path_, data_offset_ + static_cast<std::uint64_t>(row_begin) * rb,
                      static_cast<std::uint64_t>(n_rows) * rb, dst);
}

VectorReader::InPlaceRows DenseVectorReader::rows_in_place() const {
  std::shared_ptr<const Storage::MappedBytes> bytes = storage_.map_read_only(path_);
  // (a file of another size than the one opened was replaced since: its rows are not these)
  if (bytes == nullptr || bytes->size != data_offset_ + static_cast<std::uint64_t>(rows_ * row_bytes())) return {};
  return {bytes, bytes->data + data_offset_};
}

}  // namespace io
}  // namespace megatax
