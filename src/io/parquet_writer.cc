// write_paths_parquet: the engine's per-shard output as a ZSTD Parquet file, built in memory
// with Arrow's Parquet writer and committed with one Storage::write_atomic.
#include "io/parquet_writer.h"

#include <arrow/api.h>
#include <arrow/io/memory.h>
#include <parquet/arrow/writer.h>
#include <parquet/exception.h>
#include <parquet/properties.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "megatax/error.h"

namespace megatax::io {
namespace {

template <class T>
std::shared_ptr<arrow::Buffer> wrap(const T* data, std::int64_t n) {
  return std::make_shared<arrow::Buffer>(reinterpret_cast<const std::uint8_t*>(data),
                                         n * static_cast<std::int64_t>(sizeof(T)));
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw_error(ErrorCode::kInternal, "write Parquet " + path + ": " + what);
}

}  // namespace

void write_paths_parquet(Storage& storage, const std::string& path,
                         std::span<const std::int64_t> ids, std::span<const std::int32_t> paths,
                         std::int64_t levels, std::span<const float> dist,
                         const ParquetWriteOptions& options) {
  const auto n = static_cast<std::int64_t>(ids.size());
  if (levels < 1) {
    throw_error(ErrorCode::kInvalidArgument,
                "write Parquet " + path + ": levels " + std::to_string(levels) + " must be >= 1");
  }
  if (static_cast<std::int64_t>(dist.size()) != n ||
      static_cast<std::int64_t>(paths.size()) / levels != n ||
      static_cast<std::int64_t>(paths.size()) % levels != 0) {
    throw_error(ErrorCode::kInvalidArgument,
                "write Parquet " + path + ": " + std::to_string(n) + " ids, " +
                    std::to_string(paths.size()) + " path values and " +
                    std::to_string(dist.size()) + " distances; expected n, n * levels (levels " +
                    std::to_string(levels) + ") and n");
  }
  if (options.row_group_rows < 1 || options.zstd_level < 1 || options.zstd_level > 22) {
    throw_error(ErrorCode::kInvalidArgument,
                "write Parquet " + path + ": row_group_rows must be >= 1 and zstd_level in 1..22");
  }
  // Chunks of at most row_group_rows rows (and int32 list offsets): the arrays borrow the
  // caller's memory; only the list offsets are built.
  const std::int64_t max_rows_by_offsets = std::numeric_limits<std::int32_t>::max() / levels;
  const std::int64_t chunk_rows = std::max<std::int64_t>(
      1, std::min(options.row_group_rows, max_rows_by_offsets));
  arrow::ArrayVector id_chunks;
  arrow::ArrayVector path_chunks;
  arrow::ArrayVector dist_chunks;
  std::vector<std::shared_ptr<arrow::Buffer>> offset_buffers;
  const auto element_field = arrow::field("element", arrow::int32(), /*nullable=*/false);
  const auto path_type = arrow::list(element_field);
  for (std::int64_t begin = 0; begin < n; begin += chunk_rows) {
    const std::int64_t rows = std::min(chunk_rows, n - begin);
    std::vector<std::int32_t> offsets(static_cast<std::size_t>(rows) + 1);
    for (std::int64_t i = 0; i <= rows; ++i) offsets[i] = static_cast<std::int32_t>(i * levels);
    arrow::Result<std::unique_ptr<arrow::Buffer>> offset_buffer =
        arrow::AllocateBuffer((rows + 1) * static_cast<std::int64_t>(sizeof(std::int32_t)));
    if (!offset_buffer.ok()) {
      throw_error(ErrorCode::kResourceExhausted,
                  "write Parquet " + path + ": " + offset_buffer.status().ToString());
    }
    std::memcpy((*offset_buffer)->mutable_data(), offsets.data(),
                offsets.size() * sizeof(std::int32_t));
    std::shared_ptr<arrow::Buffer> offsets_shared = std::move(*offset_buffer);
    id_chunks.push_back(std::make_shared<arrow::Int64Array>(rows, wrap(ids.data() + begin, rows)));
    dist_chunks.push_back(
        std::make_shared<arrow::FloatArray>(rows, wrap(dist.data() + begin, rows)));
    auto values = std::make_shared<arrow::Int32Array>(
        rows * levels, wrap(paths.data() + begin * levels, rows * levels));
    path_chunks.push_back(
        std::make_shared<arrow::ListArray>(path_type, rows, offsets_shared, values));
  }
  const auto schema = arrow::schema({arrow::field("id", arrow::int64(), /*nullable=*/false),
                                     arrow::field("path", path_type, /*nullable=*/false),
                                     arrow::field("dist", arrow::float32(), /*nullable=*/false)});
  const std::shared_ptr<arrow::Table> table = arrow::Table::Make(
      schema, {std::make_shared<arrow::ChunkedArray>(id_chunks, arrow::int64()),
               std::make_shared<arrow::ChunkedArray>(path_chunks, path_type),
               std::make_shared<arrow::ChunkedArray>(dist_chunks, arrow::float32())});
  const std::shared_ptr<parquet::WriterProperties> props =
      parquet::WriterProperties::Builder()
          .compression(parquet::Compression::ZSTD)
          ->compression_level(options.zstd_level)
          ->disable_dictionary()
          ->enable_statistics()
          ->build();
  const std::shared_ptr<parquet::ArrowWriterProperties> arrow_props =
      parquet::ArrowWriterProperties::Builder().store_schema()->build();
  arrow::Result<std::shared_ptr<arrow::io::BufferOutputStream>> sink =
      arrow::io::BufferOutputStream::Create();
  if (!sink.ok()) fail(path, sink.status().ToString());
  arrow::Status st;
  try {
    st = parquet::arrow::WriteTable(*table, arrow::default_memory_pool(), *sink, chunk_rows, props,
                                    arrow_props);
  } catch (const parquet::ParquetException& e) {
    fail(path, e.what());
  }
  if (!st.ok()) fail(path, st.ToString());
  arrow::Result<std::shared_ptr<arrow::Buffer>> bytes = (*sink)->Finish();
  if (!bytes.ok()) fail(path, bytes.status().ToString());
  storage.write_atomic(path, (*bytes)->data(), static_cast<std::uint64_t>((*bytes)->size()));
}

}  // namespace megatax::io
