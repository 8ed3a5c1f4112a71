// bench/cuda/bench_util.h -- device helpers of the CUDA benchmark (bench_util.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "megatax/dtype.h"

namespace megatax::bench {

// Fills count elements of dtype (f32/f16/bf16) with uniform values in [-1, 1) from a hash of
// (seed, index); queued on `stream`.
void fill_uniform(void* dst, std::size_t count, DType dtype, std::uint64_t seed,
                  cudaStream_t stream);

// Reads `bytes` (a multiple of 16) with 16-byte loads and folds them into *sink (so the reads
// cannot be optimised away); queued on `stream`. Used to measure HBM read bandwidth.
void read_all(const void* src, std::size_t bytes, unsigned* sink, int sm_count,
              cudaStream_t stream);

// Queues a kernel of independent tf32 `mma.sync m16n8k8` MMAs and nothing else (no memory
// traffic; two blocks of 8 warps an SM) and returns its tf32 FLOPs: timed, it gives the
// ceiling of the portable tensor-core kernels' f32 (3xTF32) path on this card.
double queue_mma_tf32_peak(int sm_count, cudaStream_t stream);

}  // namespace megatax::bench
