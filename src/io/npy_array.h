// io/npy_array.h -- whole small .npy arrays in and out (model files, fit state).
//
// For files the engine writes itself (centroids, node tables, per-shard paths): read whole
// into memory, with every header field checked against what the caller expects.
// Thread-safety: pure functions over a Storage safe for concurrent use.
#pragma once

#include <cstdint>
#include <string>
#include <memory>
#include <vector>

#include "megatax/storage.h"

namespace megatax::io {

// Reads a C-order .npy array of element type `descr` ("<i4", "<i8", "<f4", "<f8") and rank
// 1 or 2; returns the elements and stores the shape. Throws Error(kDataLoss) naming the path
// when the descr, order or size is not what is expected. Alloc: std::allocator<T>, or (for
// float and int32) DefaultInitAllocator<T>: the buffer is not zero-filled before the read.
template <typename T, typename Alloc = std::allocator<T>>
std::vector<T, Alloc> read_npy_array(const Storage& storage, const std::string& path,
                                     std::vector<std::int64_t>* shape);

// Writes a 1-D or 2-D array of float64 (the writer of vector_format.h lacks it).
void write_npy_f64(Storage& storage, const std::string& path, const std::vector<double>& data,
                   const std::vector<std::int64_t>& shape);

}  // namespace megatax::io
