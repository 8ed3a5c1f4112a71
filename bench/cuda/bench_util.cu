// Device helpers of the CUDA benchmark: random fill, read-bandwidth kernel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "bench/cuda/bench_util.h"
#include "kernels/cuda/check.h"

namespace megatax::bench {
namespace {

__device__ __forceinline__ std::uint64_t mix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <class T>
__global__ void fill_kernel(T* dst, std::size_t count, std::uint64_t seed) {
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::uint64_t h = mix(seed ^ mix(i));
    const float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    store(dst + i, 2.f * u - 1.f);
  }
}

__global__ void read_kernel(const uint4* src, std::size_t n, unsigned* sink) {
  unsigned acc = 0;
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = src[i], b = src[i + stride], c = src[i + 2 * stride], d = src[i + 3 * stride];
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^
           d.z ^ d.w;
  }
  for (; i < n; i += stride) {
    const uint4 a = src[i];
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x12345678u) *sink = acc;  // practically never; keeps the loads alive
}

// Eight independent accumulator chains a warp: enough MMAs in flight to fill the pipe.
constexpr int kPeakChains = 8;
constexpr int kPeakIters = 20000;

__global__ void __launch_bounds__(256) mma_tf32_peak_kernel(float* sink, std::uint32_t seed) {
  float acc[kPeakChains][4] = {};
  std::uint32_t a[4], b[2];
  for (int i = 0; i < 4; ++i) a[i] = seed * (threadIdx.x + i);
  b[0] = seed ^ threadIdx.x;
  b[1] = seed + threadIdx.x;
  for (int it = 0; it < kPeakIters; ++it) {
#pragma unroll
    for (int j = 0; j < kPeakChains; ++j) {
      asm volatile(
          "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, "
          "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
          : "+f"(acc[j][0]), "+f"(acc[j][1]), "+f"(acc[j][2]), "+f"(acc[j][3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
  }
  float s = 0.f;
  for (int j = 0; j < kPeakChains; ++j)
    for (int e = 0; e < 4; ++e) s += acc[j][e];
  if (s == 1.2345f) *sink = s;  // practically never; keeps the MMAs alive
}

}  // namespace

double queue_mma_tf32_peak(int sm_count, cudaStream_t stream) {
  static float* sink = nullptr;
  if (sink == nullptr) MEGATAX_CUDA_CHECK(cudaMalloc(&sink, sizeof(float)));
  const int blocks = 2 * sm_count;
  mma_tf32_peak_kernel<<<blocks, 256, 0, stream>>>(sink, 7);
  MEGATAX_CUDA_CHECK_LAUNCH("mma_tf32_peak_kernel");
  const double mma_flops = 16.0 * 8 * 8 * 2;  // m16n8k8
  return mma_flops * kPeakChains * kPeakIters * (256 / 32) * static_cast<double>(blocks);
}

void fill_uniform(void* dst, std::size_t count, DType dtype, std::uint64_t seed,
                  cudaStream_t stream) {
  const unsigned blocks = 132 * 16;
  switch (dtype) {
    case DType::kF32:
      fill_kernel<<<blocks, 256, 0, stream>>>(static_cast<float*>(dst), count, seed);
      break;
    case DType::kF16:
      fill_kernel<<<blocks, 256, 0, stream>>>(static_cast<__half*>(dst), count, seed);
      break;
    default:
      fill_kernel<<<blocks, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(dst), count, seed);
      break;
  }
  MEGATAX_CUDA_CHECK_LAUNCH("fill_kernel");
}

void read_all(const void* src, std::size_t bytes, unsigned* sink, int sm_count,
              cudaStream_t stream) {
  read_kernel<<<sm_count * 8, 512, 0, stream>>>(static_cast<const uint4*>(src), bytes / 16, sink);
  MEGATAX_CUDA_CHECK_LAUNCH("read_kernel");
}

}  // namespace megatax::bench
