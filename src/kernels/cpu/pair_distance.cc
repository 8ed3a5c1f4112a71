// Single-pair distances: the dispatch and the portable reference (compiled with
// -ffp-contract=off: the only fused operations are the explicit std::fma of the contract in
// pair_distance.h).
#include "kernels/cpu/pair_distance.h"

#include <cmath>
#include <string>

#include "megatax/error.h"

namespace megatax::kernels {
namespace {

template <bool kF16>
inline float load(const void* y, std::int64_t k) {
  if constexpr (kF16) return f16_to_f32(static_cast<const std::uint16_t*>(y)[k]);
  return static_cast<const float*>(y)[k];
}

template <bool kL2, bool kF16>
float pair(const float* x, const void* y, std::int64_t dim) {
  float s[kPairLanes] = {};
  for (std::int64_t b = 0; b < dim; b += kPairLanes) {
    for (std::int64_t r = 0; r < kPairLanes; ++r) {
      const std::int64_t k = b + r;
      const float xv = k < dim ? x[k] : 0.f;
      const float yv = k < dim ? load<kF16>(y, k) : 0.f;
      if constexpr (kL2) {
        const float t = xv - yv;
        s[r] = std::fma(t, t, s[r]);
      } else {
        s[r] = std::fma(xv, yv, s[r]);
      }
    }
  }
  for (std::int64_t w = kPairLanes / 2; w >= 1; w /= 2)
    for (std::int64_t r = 0; r < w; ++r) s[r] = s[r] + s[r + w];
  return kL2 ? s[0] : -s[0];
}

}  // namespace

const PairKernels& pair_kernels_scalar() {
  static constexpr PairKernels k = {&pair<true, false>, &pair<false, false>, &pair<true, true>,
                                    &pair<false, true>};
  return k;
}

PairDistanceFn pair_distance_kernel(SimdLevel level, Metric metric, DType y_dtype) {
  if (y_dtype != DType::kF32 && y_dtype != DType::kF16)
    throw_error(ErrorCode::kInvalidArgument, std::string("pair distance: no kernel for ") +
                                                 dtype_name(y_dtype) + " rows (f32 or f16)");
  const PairKernels* t = nullptr;
  switch (level) {
    case SimdLevel::kScalar: t = &pair_kernels_scalar(); break;
#if defined(MEGATAX_HAVE_X86_SIMD)
    case SimdLevel::kAvx2: t = &pair_kernels_avx2(); break;
    case SimdLevel::kAvx512: t = &pair_kernels_avx512(); break;
#endif
#if defined(MEGATAX_HAVE_NEON)
    case SimdLevel::kNeon: t = &pair_kernels_neon(); break;
#endif
    default:
      throw_error(ErrorCode::kUnimplemented,
                  std::string("no pair distance kernel for SIMD level ") + simd_level_name(level) +
                      " in this build");
  }
  const bool l2 = metric == Metric::kL2;
  if (y_dtype == DType::kF16) return l2 ? t->l2_f16 : t->ip_f16;
  return l2 ? t->l2_f32 : t->ip_f32;
}

}  // namespace megatax::kernels
