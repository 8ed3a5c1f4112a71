// io/vecs.h -- the TEXMEX formats .fvecs (float32) and .bvecs (uint8): rows back to back,
// each an i32 LE dim followed by dim elements. The dim is repeated in every row; all must
// be equal.
//
// Thread-safety: the reader is immutable; reads go through a Storage that is safe for
// concurrent use.
#pragma once

#include <memory>
#include <string>

#include "megatax/storage.h"
#include "megatax/vector_format.h"

namespace megatax::io {

// Opens an .fvecs (format kFvecs, f32) or .bvecs (kBvecs, u8) file. Reads row 0's dim
// (must be >= 1), checks that the file size is a multiple of the row size 4 + dim * elem
// and that the last row's dim matches (kDataLoss naming the row otherwise). An empty file
// has 0 rows and dim 0. Every other row's dim is checked when that row is read.
std::unique_ptr<VectorReader> open_vecs(const Storage& storage, const std::string& path,
                                        VectorFormat format);

}  // namespace megatax::io
