// kernels/cuda/element.cuh -- the f32 value of one element of a kernel operand (f32, f16,
// bf16; 16-bit values are exact in f32). Internal to kernels/cuda.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace megatax::cuda::detail {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

}  // namespace megatax::cuda::detail
