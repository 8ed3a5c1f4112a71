// AVX-512 single-pair distances (compiled with -mavx512f/dq/bw/vl -mfma; called only when the
// CPU has them). The 64 running sums of pair_distance.h are four zmm registers (sums 0-15,
// 16-31, 32-47, 48-63); f16 rows are widened with vcvtph2ps (exact); the zero-padded last
// block comes from masked loads (no read past dim); the fold adds registers 0+2 and 1+3,
// then the two, then halves, in the contract's order.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/pair_distance.h"

namespace megatax::kernels {
namespace {

constexpr int kRegs = static_cast<int>(kPairLanes / 16);
static_assert(kRegs == 4, "the fold below is written for 4 x 16 sums");

inline __mmask16 tail_mask(std::int64_t remaining) {
  if (remaining >= 16) return 0xFFFF;
  if (remaining <= 0) return 0;
  return static_cast<__mmask16>((1u << remaining) - 1u);
}

// (The zero-masked conversion: GCC 12 warns about _mm512_cvtph_ps's undefined pass-through.)
template <bool kF16>
inline __m512 load_y(const void* y, std::int64_t k) {
  if constexpr (kF16)
    return _mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                                             static_cast<const std::uint16_t*>(y) + k)));
  return _mm512_loadu_ps(static_cast<const float*>(y) + k);
}
template <bool kF16>
inline __m512 load_y(const void* y, std::int64_t k, __mmask16 m) {
  if constexpr (kF16)
    return _mm512_maskz_cvtph_ps(
        m, _mm256_maskz_loadu_epi16(m, static_cast<const std::uint16_t*>(y) + k));
  return _mm512_maskz_loadu_ps(m, static_cast<const float*>(y) + k);
}

// w = 32, 16 (registers), 8 (256-bit halves), 4 (128-bit halves), 2, 1.
inline float fold(const __m512 (&s)[kRegs]) {
  const __m512 a = _mm512_add_ps(_mm512_add_ps(s[0], s[2]), _mm512_add_ps(s[1], s[3]));
  const __m256 b = _mm256_add_ps(_mm512_extractf32x8_ps(a, 0), _mm512_extractf32x8_ps(a, 1));
  const __m128 c = _mm_add_ps(_mm256_castps256_ps128(b), _mm256_extractf128_ps(b, 1));
  const __m128 d = _mm_add_ps(c, _mm_movehl_ps(c, c));
  return _mm_cvtss_f32(_mm_add_ss(d, _mm_shuffle_ps(d, d, 1)));
}

template <bool kL2>
inline __m512 step(__m512 x, __m512 y, __m512 s) {
  if constexpr (kL2) {
    const __m512 t = _mm512_sub_ps(x, y);
    return _mm512_fmadd_ps(t, t, s);
  } else {
    return _mm512_fmadd_ps(x, y, s);
  }
}

template <bool kL2, bool kF16>
float pair(const float* x, const void* y, std::int64_t dim) {
  __m512 s[kRegs];
  for (auto& v : s) v = _mm512_setzero_ps();
  std::int64_t k = 0;
  for (; k + kPairLanes <= dim; k += kPairLanes) {
#pragma GCC unroll 4
    for (int g = 0; g < kRegs; ++g)
      s[g] = step<kL2>(_mm512_loadu_ps(x + k + 16 * g), load_y<kF16>(y, k + 16 * g), s[g]);
  }
  if (k < dim) {
#pragma GCC unroll 4
    for (int g = 0; g < kRegs; ++g) {
      const __mmask16 m = tail_mask(dim - k - 16 * g);
      s[g] =
          step<kL2>(_mm512_maskz_loadu_ps(m, x + k + 16 * g), load_y<kF16>(y, k + 16 * g, m), s[g]);
    }
  }
  return kL2 ? fold(s) : -fold(s);
}

}  // namespace

const PairKernels& pair_kernels_avx512() {
  static constexpr PairKernels k = {&pair<true, false>, &pair<false, false>, &pair<true, true>,
                                    &pair<false, true>};
  return k;
}

}  // namespace megatax::kernels
