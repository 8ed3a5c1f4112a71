// io/parquet_writer.h -- the engine's per-shard output (global id, path, distance to the
// leaf centroid) as a Parquet file (docs/formats.md, "Output as Parquet").
//
// Thread-safety: a pure function; concurrent calls on different paths are fine if the
// Storage is safe for concurrent access.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "megatax/storage.h"

namespace megatax::io {

struct ParquetWriteOptions {
  std::int64_t row_group_rows = std::int64_t{1} << 20;  // rows per row group (>= 1)
  int zstd_level = 3;                                   // ZSTD compression level (1..22)
};

// Writes n = ids.size() rows with the schema
//   id    int64 not null                         the sample's global (or id-column) id
//   path  list<element: int32 not null> not null  the child index at levels 1..levels
//   dist  float not null                         distance to the leaf centroid
// where paths holds n * levels int32 values, row-major (paths[i * levels + l] is row i's
// child at level l + 1) and dist holds n values. ZSTD-compressed, dictionary encoding off
// (ids and distances are nearly unique), statistics on. The whole file is built in memory
// (about n * (12 + 4 * levels) bytes before compression) and written with one
// storage.write_atomic: it appears whole or not at all.
// Errors: kInvalidArgument for mismatched sizes or levels < 1; the storage's errors;
// kUnimplemented when built without Arrow.
void write_paths_parquet(Storage& storage, const std::string& path,
                         std::span<const std::int64_t> ids, std::span<const std::int32_t> paths,
                         std::int64_t levels, std::span<const float> dist,
                         const ParquetWriteOptions& options = {});

}  // namespace megatax::io
