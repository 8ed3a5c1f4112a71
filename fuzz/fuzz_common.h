// fuzz/fuzz_common.h -- the shared body of the vector-file fuzz targets.
//
// The input bytes become one file in an in-memory Storage; the target then opens it the
// way the engine does (open_vector_file, and Dataset + BatchReader + check_finite) and
// reads every row, in the stored dtype and as f32. megatax::Error is the expected way to
// refuse bad input; anything else -- a crash, a sanitizer report, another exception
// (std::bad_alloc, std::length_error), a hang, or a broken invariant (__builtin_trap) --
// is a bug.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "io/memory_storage.h"
#include "megatax/dataset.h"
#include "megatax/error.h"
#include "megatax/vector_format.h"

namespace megatax::fuzz {

// Reads every row of the file in batches of a few KiB.
inline void read_everything(const VectorReader& reader, std::size_t file_size) {
  const std::int64_t rows = reader.rows();
  const std::int64_t dim = reader.dim();
  const std::int64_t row_bytes = reader.row_bytes();
  // Invariants of every reader: sizes are sane and the rows fit in the file.
  if (rows < 0 || dim < 0 || (rows > 0 && dim < 1)) __builtin_trap();
  if (rows > 0 && static_cast<std::uint64_t>(row_bytes) >
                      static_cast<std::uint64_t>(file_size) / static_cast<std::uint64_t>(rows)) {
    __builtin_trap();
  }
  if (rows == 0) return;
  const std::int64_t batch = std::max<std::int64_t>(1, 4096 / std::max<std::int64_t>(1, row_bytes));
  std::vector<unsigned char> raw(static_cast<std::size_t>(std::min(batch, rows) * row_bytes));
  std::vector<float> f32(static_cast<std::size_t>(std::min(batch, rows) * dim));
  for (std::int64_t row = 0; row < rows; row += batch) {
    const std::int64_t k = std::min(batch, rows - row);
    reader.read(row, k, raw.data());
    reader.read_f32(row, k, f32.data());
  }
}

inline void fuzz_one_file(const std::uint8_t* data, std::size_t size, const std::string& path) {
  io::MemoryStorage storage;
  storage.write_atomic(path, data, size);
  try {
    const auto reader = open_vector_file(storage, path);
    read_everything(*reader, size);
  } catch (const Error&) {
  }
  try {
    const Dataset ds = Dataset::open(storage, path);
    if (ds.shards().size() != 1 || ds.rows() < 1 || ds.dim() < 1) __builtin_trap();
    BatchReader batches(ds, 0, 7);
    Batch batch;
    while (batches.next(&batch)) {
      try {
        check_finite(batch, ds);
      } catch (const Error&) {
      }
    }
    if (ds.locate(ds.rows() - 1).row != ds.rows() - 1) __builtin_trap();
  } catch (const Error&) {
  }
}

}  // namespace megatax::fuzz
