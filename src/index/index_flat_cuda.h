// index/index_flat_cuda.h -- the device copy of an IndexFlat's database, for searches with
// Backend::kCuda: the rows (in the index dtype) and their squared norms stay in GPU memory
// between searches; a search copies only the queries in and the results out, and rows added
// since the last search are uploaded (appended) before it. reset()/load() drop the copy.
// Host side: rows go up through two 32 MiB page-locked halves filled on all threads; queries
// are converted once for all shards, on all threads, into page-locked memory, in batches of
// 128-row blocks that keep the search's page-locked staging within 64 MiB.
//
// Numerics: cuda::topk on the index dtype: f32 as 3xTF32 on tensor cores (megatax/cuda.h;
// MEGATAX_CUDA_F32=ffma for exact FFMA products), f16/bf16 on tensor cores with f32 accumulation; queries are
// rounded to the index dtype first (the CPU path widens the rows instead), so 16-bit indexes
// may order near-ties differently from the CPU.
//
// Sharded over several GPUs (SearchOptions::devices), each search runs every shard at once
// and merges their k best on the host (index/flat_shards.h).
//
// Thread-safety: one thread at a time (IndexFlat serialises its searches on the mirror).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cpu/packed_matrix.h"
#include "megatax/matrix.h"
#include "megatax/metric.h"

namespace megatax::index {

class CudaFlatMirror {
 public:
  virtual ~CudaFlatMirror() = default;
  // The GPUs holding the copy, one shard each (index/flat_shards.h), in order.
  virtual const std::vector<int>& devices() const = 0;
  // Brings the device copy up to `db`: rows are only ever appended, except that a new
  // `generation` (the index was reset) means start over.
  virtual void sync(const kernels::PackedMatrix& db, std::uint64_t generation) = 0;
  // The k nearest rows of the device copy for each query (IndexFlat::search's contract).
  virtual void search(const MatrixView& queries, std::int64_t k, Metric metric, float* distances,
                      std::int64_t* ids) = 0;
};

// A mirror over `devices` (GPU numbers, one shard each, the rows dealt to them in blocks;
// a GPU may appear twice; empty: GPU 0), searched at the same time and merged: the same
// results as one GPU's. Throws Error(kUnimplemented) in a build without the CUDA backend,
// Error(kFailedPrecondition) when no GPU is visible, Error(kInvalidArgument) naming a
// device that does not exist.
std::unique_ptr<CudaFlatMirror> make_cuda_flat_mirror(const std::vector<int>& devices);

}  // namespace megatax::index
