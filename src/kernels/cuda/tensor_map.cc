// kernels/cuda/tensor_map.cc -- see tensor_map.h.
#include "kernels/cuda/tensor_map.h"

#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>

#include <climits>
#include <mutex>
#include <string>

#include "kernels/cuda/check.h"
#include "megatax/error.h"

namespace megatax::cuda::detail {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                         &q) == cudaSuccess &&
        q == cudaDriverEntryPointSuccess) {
      fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
    }
  });
  if (fn == nullptr) {
    throw Error(ErrorCode::kFailedPrecondition,
                "CUDA: the driver has no cuTensorMapEncodeTiled (driver older than CUDA 12?)");
  }
  return fn;
}

}  // namespace

bool device_is_sm90() {
  static int cached[64];
  static std::once_flag once[64];
  int dev = 0;
  MEGATAX_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) return false;
  std::call_once(once[dev], [dev] {
    int major = 0, minor = 0;
    MEGATAX_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    MEGATAX_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    cached[dev] = (major == 9 && minor == 0) ? 1 : 0;
  });
  return cached[dev] == 1;
}

bool tma_compatible(const MatrixView& x, bool allow_f32) {
  const bool f32 = x.dtype == DType::kF32;
  if (x.dtype != DType::kF16 && x.dtype != DType::kBF16 && !(allow_f32 && f32)) return false;
  const auto base = reinterpret_cast<std::uintptr_t>(x.data);
  const std::int64_t row_bytes = x.stride * static_cast<std::int64_t>(dtype_size(x.dtype));
  return base % 16 == 0 && row_bytes % 16 == 0 && x.rows < INT_MAX && x.dim < INT_MAX &&
         x.dim >= 1;
}

CUtensorMap make_tensor_map_2d(const MatrixView& x, std::int64_t rows, int box_rows,
                               int box_cols) {
  CUtensorMap map{};
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(x.dim),
                              static_cast<cuuint64_t>(rows > 0 ? rows : 1)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(x.stride) * dtype_size(x.dtype)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(box_cols), static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUtensorMapDataType type = x.dtype == DType::kBF16  ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                   : x.dtype == DType::kF32 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32
                                                            : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  const CUresult r = encoder()(&map, type, 2, const_cast<void*>(x.data), dims, strides, box,
                               elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                               CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    throw Error(ErrorCode::kInternal,
                "CUDA: cuTensorMapEncodeTiled failed (CUresult " + std::to_string(static_cast<int>(r)) +
                    ") for a " + std::to_string(rows) + " x " + std::to_string(x.dim) +
                    " matrix with stride " + std::to_string(x.stride));
  }
  return map;
}

}  // namespace megatax::cuda::detail
