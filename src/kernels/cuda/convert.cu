// Rows to float32 on the device (megatax/cuda.h, rows_to_f32): one thread per element of a
// grid-stride loop over the rows' elements; f16/bf16 values are exact in f32. Memory-bound
// (reads n * d elements, writes n * d floats).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
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
    rows_to_f32_kernel(const T* x, std::int64_t rows, std::int64_t d, std::int64_t ld, float* out) {
  const std::int64_t total = rows * d;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    const std::int64_t r = e / d, j = e - r * d;
    out[e] = to_f32(x[r * ld + j]);
  }
}

}  // namespace
}  // namespace detail

void rows_to_f32(Resources& res, const MatrixView& x, float* out) {
  detail::validate_device_view(x, "rows_to_f32: x");
  if (x.rows == 0 || x.dim == 0) return;
  if (out == nullptr) throw Error(ErrorCode::kInvalidArgument, "rows_to_f32: out is null");
  res.activate();
  const auto stream = static_cast<cudaStream_t>(res.stream());
  const std::int64_t total = x.rows * x.dim;
  const auto blocks = static_cast<unsigned>(
      std::min<std::int64_t>((total + detail::kThreads - 1) / detail::kThreads, std::int64_t{res.sm_count()} * 32));
  switch (x.dtype) {
    case DType::kF32:
      detail::rows_to_f32_kernel<<<blocks, detail::kThreads, 0, stream>>>(static_cast<const float*>(x.data), x.rows,
                                                                          x.dim, x.stride, out);
      break;
    case DType::kF16:
      detail::rows_to_f32_kernel<<<blocks, detail::kThreads, 0, stream>>>(static_cast<const __half*>(x.data), x.rows,
                                                                          x.dim, x.stride, out);
      break;
    case DType::kBF16:
      detail::rows_to_f32_kernel<<<blocks, detail::kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x.data), x.rows, x.dim, x.stride, out);
      break;
    default: throw Error(ErrorCode::kInvalidArgument, "rows_to_f32: unsupported dtype");
  }
  MEGATAX_CUDA_CHECK_LAUNCH("rows_to_f32_kernel");
}

}  // namespace megatax::cuda
