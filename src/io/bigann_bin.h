// io/bigann_bin.h -- the big-ann-benchmarks binary formats .fbin (float32) and .u8bin
// (uint8): a header of two little-endian u32, rows then dim, then rows*dim elements.
//
// Thread-safety: reads through a Storage that is safe for concurrent use.
#pragma once

#include <memory>
#include <string>

#include "megatax/storage.h"
#include "megatax/vector_format.h"

namespace megatax::io {

// Opens an .fbin (format kFbin, f32) or .u8bin (kU8bin, u8) file. Checks: file at least
// kBigAnnHeaderBytes long, dim >= 1, and size == 8 + rows * dim * element size (else
// kDataLoss "file X: expected N bytes, found M (...)").
std::unique_ptr<VectorReader> open_bigann_bin(const Storage& storage, const std::string& path,
                                              VectorFormat format);

}  // namespace megatax::io
