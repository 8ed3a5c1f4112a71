// aarch64 Advanced SIMD single-pair distances. The 64 running sums of pair_distance.h are
// sixteen q-registers (sums 4i..4i+3); f16 rows are widened with fcvtl (exact); the
// zero-padded last block is copied into zeroed stack blocks (no read past dim); the fold
// adds registers i and i+8, i+4, i+2, i+1, then the two halves and the two lanes, in the
// contract's order. vfmaq_f32 is a fused multiply-add.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/pair_distance.h"

namespace megatax::kernels {
namespace {

constexpr int kRegs = static_cast<int>(kPairLanes / 4);
static_assert(kRegs == 16, "the fold below is written for 16 x 4 sums");

inline float fold(float32x4_t (&s)[kRegs]) {
  for (int w = kRegs / 2; w >= 1; w /= 2)  // w = 32, 16, 8, 4 sums: whole registers
    for (int i = 0; i < w; ++i) s[i] = vaddq_f32(s[i], s[i + w]);
  const float32x2_t h = vadd_f32(vget_low_f32(s[0]), vget_high_f32(s[0]));  // w = 2
  return vget_lane_f32(h, 0) + vget_lane_f32(h, 1);                         // w = 1
}

template <bool kF16>
inline float32x4_t load_y(const void* y, std::int64_t k) {
  if constexpr (kF16)
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(static_cast<const std::uint16_t*>(y) + k)));
  return vld1q_f32(static_cast<const float*>(y) + k);
}

template <bool kL2>
inline float32x4_t step(float32x4_t x, float32x4_t y, float32x4_t s) {
  if constexpr (kL2) {
    const float32x4_t t = vsubq_f32(x, y);
    return vfmaq_f32(s, t, t);
  } else {
    return vfmaq_f32(s, x, y);
  }
}

template <bool kL2, bool kF16>
inline void block(const float* x, const void* y, float32x4_t (&s)[kRegs]) {
#pragma GCC unroll 16
  for (int g = 0; g < kRegs; ++g)
    s[g] = step<kL2>(vld1q_f32(x + 4 * g), load_y<kF16>(y, 4 * g), s[g]);
}

template <bool kL2, bool kF16>
float pair(const float* x, const void* y, std::int64_t dim) {
  using Elem = std::conditional_t<kF16, std::uint16_t, float>;
  const Elem* ye = static_cast<const Elem*>(y);
  float32x4_t s[kRegs];
  for (auto& v : s) v = vdupq_n_f32(0.f);
  std::int64_t k = 0;
  for (; k + kPairLanes <= dim; k += kPairLanes) block<kL2, kF16>(x + k, ye + k, s);
  if (k < dim) {
    float xt[kPairLanes] = {};
    Elem yt[kPairLanes] = {};  // zeros (f16 zeros widen to +0)
    const auto n = static_cast<std::size_t>(dim - k);
    std::memcpy(xt, x + k, n * sizeof(float));
    std::memcpy(yt, ye + k, n * sizeof(Elem));
    block<kL2, kF16>(xt, yt, s);
  }
  return kL2 ? fold(s) : -fold(s);
}

}  // namespace

const PairKernels& pair_kernels_neon() {
  static constexpr PairKernels k = {&pair<true, false>, &pair<false, false>, &pair<true, true>,
                                    &pair<false, true>};
  return k;
}

}  // namespace megatax::kernels
