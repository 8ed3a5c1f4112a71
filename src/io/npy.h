// io/npy.h -- the .npy format (numpy.lib.format versions 1.0, 2.0 and 3.0): header
// parsing, the 2-D reader behind open_vector_file, and header building for write_npy.
//
// Thread-safety: pure functions, or reads through a Storage that is safe for concurrent use.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "megatax/storage.h"
#include "megatax/vector_format.h"

namespace megatax::io {

// What an .npy header says. Any descr, order and rank; the reader decides what it supports.
struct NpyHeader {
  int major = 0;      // 1, 2 or 3
  int minor = 0;      // 0
  std::string descr;  // e.g. "<f4"; structured dtypes are refused while parsing
  bool fortran_order = false;
  std::vector<std::int64_t> shape;  // each >= 0
  std::uint64_t data_offset = 0;    // bytes before the first element
};

// Reads and parses the header of the .npy file at `path` (whose size is `file_size`).
// Throws Error(kDataLoss) for a bad magic, an unsupported version, a header longer than
// kNpyMaxHeaderBytes or the file, or a header that is not a dict with 'descr' (a string),
// 'fortran_order' (True/False) and 'shape' (a tuple of non-negative ints).
NpyHeader read_npy_header(const Storage& storage, const std::string& path, std::uint64_t file_size);

// Parses the header dict text (what follows the length field). `path` names the file in
// errors. Sets descr, fortran_order and shape.
void parse_npy_header_dict(std::string_view text, const std::string& path, NpyHeader* header);

// Opens a 2-D C-order '<f4', '<f2' or '|u1' array (see vector_format.h for the errors).
std::unique_ptr<VectorReader> open_npy(const Storage& storage, const std::string& path);

// The complete header (magic .. '\n', a multiple of kNpyAlign bytes) for a C-order array of
// `descr` and `shape` (each >= 0): version 1.0, or 2.0 when the dict is too long for 1.0.
std::string make_npy_header(std::string_view descr, std::span<const std::int64_t> shape);

}  // namespace megatax::io
