// kernels/cuda/assign_splits.cuh -- the column-split contract shared by the fused assign
// kernels (assign.cu: portable mma.sync / FFMA; assign_sm90.cu: Hopper wgmma):
//   - how many column tiles one work item covers (tiles_per_split),
//   - how a split's row minimum is merged (one 64-bit atomicMin of pack_min: the winner is
//     the same, ties to the smaller index, whatever the split), and
//   - how the merged words become labels and distances (launch_unpack_splits).
//
// Internal header: compiled by nvcc only.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/check.h"
#include "kernels/cuda/distance_ops.cuh"

namespace megatax::cuda::detail {

// Column tiles per work item: as many as keep the X row blocks in flight (one per resident
// block, each x_block_bytes) within 1 / l2_share of L2 -- the blocks of one row block run
// next to each other and share it through L2 -- and few enough that the grid fills the GPU.
inline std::int64_t tiles_per_split(std::int64_t row_blocks, std::int64_t tiles,
                                    std::int64_t resident, std::int64_t x_block_bytes,
                                    std::size_t l2_bytes, int l2_share = 4) {
  const std::int64_t l2_rows =
      std::max<std::int64_t>(1, static_cast<std::int64_t>(l2_bytes / l2_share) / x_block_bytes);
  std::int64_t tps = std::max<std::int64_t>(1, l2_rows * tiles / resident);
  if (row_blocks < resident) {
    const std::int64_t want_splits = (resident + row_blocks - 1) / row_blocks;
    tps = std::min(tps, std::max<std::int64_t>(1, tiles / want_splits));
  }
  return std::min(tps, tiles);
}

// The merge word of a split's (score, index): smaller score first, then smaller index.
__device__ __forceinline__ unsigned long long pack_min(float score, int index) {
  return (static_cast<unsigned long long>(float_order_key(score)) << 32) |
         static_cast<unsigned int>(index);
}

__device__ __forceinline__ void write_label(void* labels, bool label64, std::int64_t row,
                                            std::int64_t value) {
  if (label64) {
    static_cast<std::int64_t*>(labels)[row] = value;
  } else {
    static_cast<std::int32_t*>(labels)[row] = static_cast<std::int32_t>(value);
  }
}

template <class Op>
__global__ void unpack_splits_kernel(const unsigned long long* packed, std::int64_t n,
                                     const float* x_norms, void* labels, bool label64,
                                     float* dist) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= n) return;
  const unsigned long long key = packed[row];
  const bool found = key != ~0ull;
  write_label(labels, label64, row, found ? static_cast<std::int64_t>(key & 0xffffffffull) : -1);
  if (dist != nullptr) {
    const float s = float_from_order_key(static_cast<std::uint32_t>(key >> 32));
    const float xn = Op::kUsesNorms ? x_norms[row] : 0.f;
    dist[row] = found ? Op::finalize(s, xn) : __int_as_float(0x7fc00000);
  }
}

// packed[n] (all ones where no split found a finite score) -> labels (-1 there) and, if
// dist, distances (NaN there); x_norms[n] needed for L2 distances.
template <class Op>
void launch_unpack_splits(const unsigned long long* packed, std::int64_t n, const float* x_norms,
                          void* labels, bool label64, float* dist, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>((n + 255) / 256);
  unpack_splits_kernel<Op><<<blocks, 256, 0, stream>>>(packed, n, x_norms, labels, label64, dist);
  MEGATAX_CUDA_CHECK_LAUNCH("unpack_splits_kernel");
}

}  // namespace megatax::cuda::detail
