// Row norms: one warp per row, f32 accumulation, 16-byte loads when the rows allow them; and
// the small host helpers of launch.h (dtype labels, operand checks, tile choices).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/element.cuh"
#include "kernels/cuda/launch.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {
namespace {

constexpr int kNormThreads = 256;
constexpr int kNormRowsPerBlock = kNormThreads / 32;

// kVec elements of T fill 16 bytes.
template <class T>
__global__ void __launch_bounds__(kNormThreads)
    row_norms_kernel(const T* x, std::int64_t n, std::int64_t ld, std::int64_t d, bool aligned,
                     float* out) {
  constexpr int kVec = 16 / sizeof(T);
  const int lane = threadIdx.x % 32;
  const std::int64_t row =
      static_cast<std::int64_t>(blockIdx.x) * kNormRowsPerBlock + threadIdx.x / 32;
  if (row >= n) return;
  const T* p = x + row * ld;
  float s = 0.f;
  if (aligned) {
    for (std::int64_t j = static_cast<std::int64_t>(lane) * kVec; j < d; j += 32 * kVec) {
      union {
        uint4 v;
        T e[kVec];
      } u;
      u.v = *reinterpret_cast<const uint4*>(p + j);
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        const float f = to_f32(u.e[e]);
        s = fmaf(f, f, s);
      }
    }
  } else {
    for (std::int64_t j = lane; j < d; j += 32) {
      const float f = to_f32(p[j]);
      s = fmaf(f, f, s);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) out[row] = s;
}

}  // namespace

const char* dtype_label(DType t) noexcept {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kU8: return "u8";
  }
  return "?";
}

bool f32_wide_tiles() {
  const char* v = std::getenv("MEGATAX_CUDA_F32_TILES");  // read per launch: benchmarks flip it
  return v == nullptr || std::strcmp(v, "4x4") != 0;
}

bool f32_tensor_cores() {
  const char* v = std::getenv("MEGATAX_CUDA_F32");
  return v == nullptr || std::strcmp(v, "ffma") != 0;
}

bool vector_aligned(const MatrixView& x) {
  const std::int64_t per16 = 16 / static_cast<std::int64_t>(dtype_size(x.dtype));
  return reinterpret_cast<std::uintptr_t>(x.data) % 16 == 0 && x.stride % per16 == 0 &&
         x.dim % per16 == 0;
}

void validate_device_view(const MatrixView& x, const char* what) {
  if (x.dtype != DType::kF32 && x.dtype != DType::kF16 && x.dtype != DType::kBF16) {
    throw Error(ErrorCode::kInvalidArgument, std::string(what) + ": dtype " +
                                                 dtype_label(x.dtype) +
                                                 " not supported on CUDA (f32, f16, bf16)");
  }
  if (x.rows < 0 || x.dim < 1 || x.stride < x.dim) {
    throw Error(ErrorCode::kInvalidArgument,
                std::string(what) + ": bad shape rows=" + std::to_string(x.rows) +
                    " dim=" + std::to_string(x.dim) + " stride=" + std::to_string(x.stride) +
                    " (expected rows >= 0, dim >= 1, stride >= dim)");
  }
  if (x.rows > 0 && x.data == nullptr) {
    throw Error(ErrorCode::kInvalidArgument, std::string(what) + ": data is null");
  }
}

void validate_operand_pair(const MatrixView& x, const MatrixView& other, const char* op,
                           const char* x_name, const char* other_name, const char* other_verb) {
  validate_device_view(x, (std::string(op) + ": " + x_name).c_str());
  validate_device_view(other, (std::string(op) + ": " + other_name).c_str());
  if (other.dtype != x.dtype || other.dim != x.dim) {
    throw Error(ErrorCode::kInvalidArgument,
                std::string(op) + ": " + other_name + " " + other_verb + " " + dtype_label(other.dtype) +
                    " x " + std::to_string(other.dim) + ", expected " + dtype_label(x.dtype) + " x " +
                    std::to_string(x.dim) + " like " + x_name);
  }
}

void launch_row_norms(const MatrixView& x, float* out, cudaStream_t stream) {
  if (x.rows == 0) return;
  const auto blocks =
      static_cast<unsigned>((x.rows + kNormRowsPerBlock - 1) / kNormRowsPerBlock);
  const bool aligned = vector_aligned(x);
  switch (x.dtype) {
    case DType::kF32:
      row_norms_kernel<float><<<blocks, kNormThreads, 0, stream>>>(
          static_cast<const float*>(x.data), x.rows, x.stride, x.dim, aligned, out);
      break;
    case DType::kF16:
      row_norms_kernel<__half><<<blocks, kNormThreads, 0, stream>>>(
          static_cast<const __half*>(x.data), x.rows, x.stride, x.dim, aligned, out);
      break;
    case DType::kBF16:
      row_norms_kernel<__nv_bfloat16><<<blocks, kNormThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x.data), x.rows, x.stride, x.dim, aligned, out);
      break;
    default:
      throw Error(ErrorCode::kInvalidArgument, "row_norms: unsupported dtype");
  }
  MEGATAX_CUDA_CHECK_LAUNCH("row_norms_kernel");
}

}  // namespace detail

void row_norms(Resources& res, const MatrixView& x, float* out) {
  detail::validate_device_view(x, "row_norms: x");
  if (x.rows > 0 && out == nullptr) {
    throw Error(ErrorCode::kInvalidArgument, "row_norms: out is null");
  }
  res.activate();
  detail::launch_row_norms(x, out, static_cast<cudaStream_t>(res.stream()));
}

}  // namespace megatax::cuda
