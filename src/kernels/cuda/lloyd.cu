// Lloyd's decisions for many problems on the device (megatax/cuda.h, lloyd_decide): a block
// a problem adds its rows' distances in row order (one thread: the host's chain of float64
// adds, the block's other warps staging the next chunk meanwhile), decides as
// LloydRun::assigned() does (cluster/kmeans_steps.h), and writes its rows' labels numbered
// across the batch and its centroids' keep flags for the update that follows.
#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/check.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 2048;  // distances staged at a time, in two buffers (16 KiB)

__global__ void __launch_bounds__(kThreads) lloyd_decide_kernel(LloydDecideArgs a) {
  const std::int64_t g = blockIdx.x;
  const int tid = static_cast<int>(threadIdx.x);
  const std::int64_t r0 = a.row_begin[g], r1 = a.row_begin[g + 1];
  const std::int64_t c0 = a.centroid_begin[g], c1 = a.centroid_begin[g + 1];
  __shared__ float s_d[2][kChunk];
  __shared__ int s_update;
  if (a.assigned[g] != 0) {  // (the same on every thread)
    const std::int64_t n = r1 - r0;
    const float* d = a.distances + r0;
    const std::int64_t chunks = (n + kChunk - 1) / kChunk;
    for (std::int64_t e = tid; e < kChunk && e < n; e += kThreads) s_d[0][e] = d[e];
    __syncthreads();
    double sum = 0;
    for (std::int64_t ch = 0; ch < chunks; ++ch) {
      const std::int64_t next = (ch + 1) * kChunk;
      if (tid >= 32 && next < n) {  // warps 1.. stage the next chunk
        const std::int64_t len = n - next < kChunk ? n - next : kChunk;
        for (std::int64_t e = tid - 32; e < len; e += kThreads - 32) s_d[(ch + 1) & 1][e] = d[next + e];
      }
      if (tid == 0) {  // LloydRun's total(): one float64 add a row, in row order
        const float* s = s_d[ch & 1];
        const std::int64_t len = n - ch * kChunk < kChunk ? n - ch * kChunk : kChunk;
        std::int64_t e = 0;
        for (; e + 8 <= len; e += 8) {
          float v[8];
#pragma unroll
          for (int u = 0; u < 8; ++u) v[u] = s[e + u];
#pragma unroll
          for (int u = 0; u < 8; ++u) sum += static_cast<double>(v[u]);
        }
        for (; e < len; ++e) sum += static_cast<double>(s[e]);
      }
      __syncthreads();
    }
    if (tid == 0) {  // LloydRun::assigned(): converged (after an update), or out of updates
      LloydProblem p = a.problems[g];
      bool update = true;
      if (p.updates > 0 && fabs(p.last_inertia - sum) / fmax(fabs(sum), 1e-300) < p.tol) {
        update = false;
      } else if (p.updates == p.max_iter) {
        update = false;
      }
      p.last_inertia = sum;
      if (update) ++p.updates;
      a.problems[g] = p;
      a.inertia[g] = sum;
      s_update = update ? 1 : 0;
    }
  } else if (tid == 0) {
    s_update = 0;
  }
  __syncthreads();
  const bool update = s_update != 0;
  if (tid == 0) a.updates[g] = update ? 1 : 0;
  const auto offset = static_cast<std::int32_t>(c0);
  for (std::int64_t i = r0 + tid; i < r1; i += kThreads) a.global_labels[i] = update ? a.labels[i] + offset : -1;
  for (std::int64_t c = c0 + tid; c < c1; c += kThreads) a.keep[c] = update ? 0 : 1;
}

}  // namespace
}  // namespace detail

void lloyd_decide(Resources& res, const LloydDecideArgs& a) {
  if (a.groups < 1 || a.groups > 0x7fffffff)
    throw Error(ErrorCode::kInvalidArgument,
                "lloyd_decide: groups = " + std::to_string(a.groups) + " (expected 1 .. 2^31 - 1)");
  if (a.row_begin == nullptr || a.centroid_begin == nullptr || a.assigned == nullptr || a.labels == nullptr ||
      a.distances == nullptr || a.problems == nullptr || a.inertia == nullptr || a.updates == nullptr ||
      a.global_labels == nullptr || a.keep == nullptr)
    throw Error(ErrorCode::kInvalidArgument, "lloyd_decide: a device array is null");
  res.activate();
  const auto stream = static_cast<cudaStream_t>(res.stream());
  detail::lloyd_decide_kernel<<<static_cast<unsigned>(a.groups), detail::kThreads, 0, stream>>>(a);
  MEGATAX_CUDA_CHECK_LAUNCH("lloyd_decide_kernel");
}

}  // namespace megatax::cuda
