// kernels/cuda/assign_sm90.h -- the Hopper (sm_90a) form of the fused assign: warpgroup MMA
// (wgmma) fed by the bulk tensor copy engine (TMA), one producer warp and two consumer
// warpgroups per block, a persistent grid. assign.cu calls it when it applies and falls back
// to the portable mma.sync kernel otherwise.
//
// Internal header (CUDA types allowed).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "megatax/matrix.h"

namespace megatax::cuda::detail {

// True when the Hopper kernel can run x against c on the current device: a compute
// capability 9.0 GPU, this build carries the sm_90a kernels, f16/bf16 operands TMA can
// describe (tensor_map.h), and the environment does not force the portable kernel
// (MEGATAX_CUDA_ASSIGN=mma, for side-by-side benchmarks).
bool sm90_assign_usable(const MatrixView& x, const MatrixView& c);

// One flat assignment (every row of x against all of c), the contract of cuda::assign.
struct Sm90AssignJob {
  MatrixView x, c;
  bool l2 = true;                          // else inner product
  const float* c_norms = nullptr;          // [k], required for L2
  const float* x_norms = nullptr;          // [n] or null (fused when needed)
  void* labels = nullptr;
  bool label64 = true;
  float* dist = nullptr;
  unsigned long long* packed_ws = nullptr; // [n] workspace (split minima)
  float* xn_ws = nullptr;                  // [n] workspace (fused norms of split runs)
};
void launch_assign_sm90(const Sm90AssignJob& job, int sm_count, std::size_t l2_bytes,
                        cudaStream_t stream);

// One grouped assignment (rows sorted by group; each group against its own centroid range),
// the contract of cuda::assign_grouped: labels are indices within the group's range.
// `items_ws` holds max_sm90_group_items(row_begin) work items on the device.
struct Sm90GroupedJob {
  MatrixView x, c;
  bool l2 = true;
  const float* c_norms = nullptr;          // [c.rows], required for L2
  std::int32_t* labels = nullptr;
  float* dist = nullptr;
};
std::int64_t max_sm90_group_items(const std::int64_t* row_begin, std::size_t groups);
void launch_assign_grouped_sm90(const Sm90GroupedJob& job, const std::int64_t* row_begin,
                                const std::int64_t* centroid_begin,
                                const std::int64_t* centroid_end, const std::uint8_t* skip,
                                std::size_t groups, void* items_ws, int sm_count,
                                cudaStream_t stream);

}  // namespace megatax::cuda::detail
