// Means: new k-means centroids from float64 per-cluster sums, on the device, so that the
// sums (k x d doubles) never cross the bus. One block per cluster.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/element.cuh"
#include "kernels/cuda/launch.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads)
    means_kernel(const double* sums, const std::int64_t* counts, std::int64_t d,
                 const std::uint8_t* keep, bool normalise, float* centroids, T* converted,
                 std::int64_t ld_converted) {
  const std::int64_t c = blockIdx.x;
  const std::int64_t count = counts[c];
  if (count == 0 || (keep != nullptr && keep[c] != 0)) return;
  const double* s = sums + c * d;
  float* cen = centroids + c * d;
  const auto inv_count = static_cast<double>(count);
  double sq = 0;
  for (std::int64_t j = threadIdx.x; j < d; j += kThreads) {
    const auto v = static_cast<float>(s[j] / inv_count);
    cen[j] = v;
    sq += static_cast<double>(v) * v;
  }
  if (normalise) {
    // Fixed-order sum of squares: per-thread strided partials, then a tree over the block.
    __shared__ double part[kThreads];
    part[threadIdx.x] = sq;
    __syncthreads();
    for (int o = kThreads / 2; o > 0; o /= 2) {
      if (static_cast<int>(threadIdx.x) < o) part[threadIdx.x] += part[threadIdx.x + o];
      __syncthreads();
    }
    const double total = part[0];
    if (total > 0) {
      const double inv = 1.0 / sqrt(total);
      for (std::int64_t j = threadIdx.x; j < d; j += kThreads) cen[j] = static_cast<float>(cen[j] * inv);
    }
  }
  if (converted != nullptr) {
    __syncthreads();
    for (std::int64_t j = threadIdx.x; j < d; j += kThreads) store_f32(converted + c * ld_converted + j, cen[j]);
  }
}

}  // namespace
}  // namespace detail

void means(Resources& res, const MeansArgs& a) {
  if (a.k < 0 || a.d < 1)
    throw Error(ErrorCode::kInvalidArgument, "means: k = " + std::to_string(a.k) + ", d = " +
                                                 std::to_string(a.d) + " (expected k >= 0, d >= 1)");
  if (a.k == 0) return;
  if (a.sums == nullptr || a.counts == nullptr || a.centroids == nullptr)
    throw Error(ErrorCode::kInvalidArgument, "means: sums, counts and centroids must not be null");
  const bool conv = a.converted != nullptr;
  if (conv && a.converted_dtype != DType::kF32 && a.converted_dtype != DType::kF16 &&
      a.converted_dtype != DType::kBF16)
    throw Error(ErrorCode::kInvalidArgument, "means: converted_dtype must be f32, f16 or bf16");
  res.activate();
  const auto stream = static_cast<cudaStream_t>(res.stream());
  const auto blocks = static_cast<unsigned>(a.k);
  const DType t = conv ? a.converted_dtype : DType::kF32;
  switch (t) {
    case DType::kF32:
      detail::means_kernel<float><<<blocks, detail::kThreads, 0, stream>>>(
          a.sums, a.counts, a.d, a.keep, a.normalise, a.centroids, static_cast<float*>(a.converted), a.d);
      break;
    case DType::kF16:
      detail::means_kernel<__half><<<blocks, detail::kThreads, 0, stream>>>(
          a.sums, a.counts, a.d, a.keep, a.normalise, a.centroids, static_cast<__half*>(a.converted), a.d);
      break;
    case DType::kBF16:
      detail::means_kernel<__nv_bfloat16><<<blocks, detail::kThreads, 0, stream>>>(
          a.sums, a.counts, a.d, a.keep, a.normalise, a.centroids,
          static_cast<__nv_bfloat16*>(a.converted), a.d);
      break;
    default: throw Error(ErrorCode::kInvalidArgument, "means: unsupported dtype of converted");
  }
  MEGATAX_CUDA_CHECK_LAUNCH("means_kernel");
}

}  // namespace megatax::cuda
