// io/parquet_reader.h -- the .parquet VectorReader behind open_vector_file (docs/formats.md,
// "Parquet"). Reads through our Storage (POSIX, memory, object stores alike) with Arrow's
// Parquet reader: only the embedding column (and the id column) are decoded, row group by
// row group in batches of a few MiB, so memory does not grow with the file or the row
// group.
//
// Thread-safety: the reader is safe for concurrent calls; they are served one at a time
// (one mutex guards the cache of decoded batches).
#pragma once

#include <memory>
#include <string>

#include "megatax/storage.h"
#include "megatax/vector_format.h"

namespace megatax::io {

// Opens `path` as Parquet with `options` (see VectorReadOptions). Reads the footer and the
// schema, checks the column types, learns dim (fixed-size types: from the schema; others:
// from the first non-null row, which is decoded) and counts the rows (with skip_null and
// possible nulls: one pass over the column; see docs/formats.md). `storage` is borrowed.
// Errors name the file and the column: kDataLoss (not Parquet, truncated, corrupt pages,
// null rows without skip_null, rows of another dim), kInvalidArgument (missing column,
// unsupported type, bad options), kUnimplemented (built without Arrow), and the storage's.
std::unique_ptr<VectorReader> open_parquet(const Storage& storage, const std::string& path,
                                           const VectorReadOptions& options);

}  // namespace megatax::io
