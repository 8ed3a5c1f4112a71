// megatax/index_flat.h -- exact brute-force nearest-neighbour indexes (IndexFlatL2/IP).
//
// An IndexFlat owns a copy of every added vector, stored in `dtype` (f32, f16 or bf16;
// added vectors of another dtype are rounded to nearest even) in the CPU kernels' panel
// layout, and answers k-nearest-neighbour queries by a fused, streaming, multithreaded scan
// (no [nq, ntotal] matrix is ever built). Ids are the insertion positions 0..ntotal-1.
//
// Results: per query, k (distance, id) pairs sorted nearest first, ties to the smaller id.
// IndexFlatL2 returns squared L2 distances (>= 0); IndexFlatIP returns inner products,
// largest first. If k > ntotal, the tail of each row is id -1 with distance +inf (L2) or
// -inf (IP). Queries holding NaN or Inf are refused with Error(kInvalidArgument) naming the
// query row; so are added rows holding NaN or Inf (nothing of that add is kept).
//
// Thread-safety: search() and the accessors are const and may run concurrently; add(),
// reset() and load() need exclusive access.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "megatax/dtype.h"
#include "megatax/matrix.h"
#include "megatax/metric.h"

namespace megatax {

enum class Backend : int { kAuto = 0, kCpu = 1, kCuda = 2 };
const char* backend_name(Backend b) noexcept;
Backend parse_backend(const std::string& name);  // auto|cpu|cuda

struct SearchOptions {
  Backend backend = Backend::kAuto;  // kCuda: Error(kUnimplemented) in a build without CUDA
  int threads = 0;                   // 0 = all hardware threads
  std::string simd = "auto";         // CPU path: auto|scalar|avx2|avx512|neon
  // kCuda: the GPUs that hold the database (its rows dealt to them in blocks of 65,536,
  // every GPU searched at once, their k best merged: the same results as one GPU's). Empty:
  // GPU 0. The device copy stays between searches while this list stays the same; another
  // list moves it.
  std::vector<int> devices;
};

class IndexFlat {
 public:
  // dim >= 1; dtype f32, f16 or bf16. Throws Error(kInvalidArgument) otherwise.
  IndexFlat(std::int64_t dim, Metric metric, DType dtype = DType::kF32);
  ~IndexFlat();
  IndexFlat(IndexFlat&&) noexcept;
  IndexFlat& operator=(IndexFlat&&) noexcept;

  // Appends x (x.dim must equal dim()). Any number of calls.
  void add(const MatrixView& x);
  void add(std::int64_t n, const float* x) { add(MatrixView(x, n, dim(), DType::kF32)); }

  // distances, ids: caller-owned, queries.rows * k each. k >= 1; index may be empty
  // (then every id is -1).
  void search(const MatrixView& queries, std::int64_t k, float* distances,
              std::int64_t* ids, const SearchOptions& options = {}) const;
  void search(std::int64_t n, const float* queries, std::int64_t k, float* distances,
              std::int64_t* ids, const SearchOptions& options = {}) const {
    search(MatrixView(queries, n, dim(), DType::kF32), k, distances, ids, options);
  }

  // Copies stored vector i (0 <= i < ntotal) out as dim() floats.
  void reconstruct(std::int64_t i, float* out) const;

  void reset() noexcept;
  std::int64_t ntotal() const noexcept;
  std::int64_t dim() const noexcept;
  DType dtype() const noexcept;
  Metric metric() const noexcept;

  // Writes the index to `path` atomically (temp file + rename): a small header (magic
  // "MTXFLAT1", version, metric, dtype, dim, ntotal) then the raw rows. Throws
  // Error(kIoError) naming the path on failure; the old file, if any, is then intact.
  void save(const std::string& path) const;
  // Reads an index written by save(). Throws Error(kNotFound / kDataLoss) naming the path
  // and what was wrong (bad magic, unsupported version, truncated data).
  static IndexFlat load(const std::string& path);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// FAISS-style names.
class IndexFlatL2 : public IndexFlat {
 public:
  explicit IndexFlatL2(std::int64_t dim, DType dtype = DType::kF32)
      : IndexFlat(dim, Metric::kL2, dtype) {}
};
class IndexFlatIP : public IndexFlat {
 public:
  explicit IndexFlatIP(std::int64_t dim, DType dtype = DType::kF32)
      : IndexFlat(dim, Metric::kInnerProduct, dtype) {}
};

}  // namespace megatax
