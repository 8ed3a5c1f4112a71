// AVX2 single-pair distances (compiled with -mavx2 -mfma -mf16c; called only when the CPU
// has them). The 64 running sums of pair_distance.h are eight ymm registers (sums
// 8i..8i+7); f16 rows are widened with vcvtph2ps (exact); the zero-padded last block comes
// from masked loads for f32 (vmaskmovps: no read past dim) and a zeroed copy for f16; the fold
// adds registers i and i+4, i and i+2, 0 and 1, then halves, in the contract's order.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/pair_distance.h"

namespace megatax::kernels {
namespace {

constexpr int kRegs = static_cast<int>(kPairLanes / 8);
static_assert(kRegs == 8, "the fold below is written for 8 x 8 sums");

// Lanes j < remaining set (all-ones), the others clear.
inline __m256i tail_mask(std::int64_t remaining) {
  const int n = remaining >= 8 ? 8 : (remaining <= 0 ? 0 : static_cast<int>(remaining));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <bool kF16>
inline __m256 load_y(const void* y, std::int64_t k) {
  if constexpr (kF16)
    return _mm256_cvtph_ps(_mm_loadu_si128(
        reinterpret_cast<const __m128i*>(static_cast<const std::uint16_t*>(y) + k)));
  return _mm256_loadu_ps(static_cast<const float*>(y) + k);
}

inline float fold(const __m256 (&s)[kRegs]) {
  const __m256 a0 = _mm256_add_ps(s[0], s[4]), a1 = _mm256_add_ps(s[1], s[5]);  // w = 32
  const __m256 a2 = _mm256_add_ps(s[2], s[6]), a3 = _mm256_add_ps(s[3], s[7]);
  const __m256 b0 = _mm256_add_ps(a0, a2), b1 = _mm256_add_ps(a1, a3);                  // w = 16
  const __m256 c = _mm256_add_ps(b0, b1);                                               // w = 8
  const __m128 d = _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1));  // w = 4
  const __m128 e = _mm_add_ps(d, _mm_movehl_ps(d, d));                                  // w = 2
  return _mm_cvtss_f32(_mm_add_ss(e, _mm_shuffle_ps(e, e, 1)));                         // w = 1
}

template <bool kL2>
inline __m256 step(__m256 x, __m256 y, __m256 s) {
  if constexpr (kL2) {
    const __m256 t = _mm256_sub_ps(x, y);
    return _mm256_fmadd_ps(t, t, s);
  } else {
    return _mm256_fmadd_ps(x, y, s);
  }
}

template <bool kL2, bool kF16>
float pair(const float* x, const void* y, std::int64_t dim) {
  __m256 s[kRegs];
  for (auto& v : s) v = _mm256_setzero_ps();
  std::int64_t k = 0;
  for (; k + kPairLanes <= dim; k += kPairLanes) {
#pragma GCC unroll 8
    for (int g = 0; g < kRegs; ++g)
      s[g] = step<kL2>(_mm256_loadu_ps(x + k + 8 * g), load_y<kF16>(y, k + 8 * g), s[g]);
  }
  if (k < dim) {
    alignas(32) std::uint16_t yt[kPairLanes] = {};  // f16 tail (zeros widen to +0)
    if constexpr (kF16)
      std::memcpy(yt, static_cast<const std::uint16_t*>(y) + k,
                  static_cast<std::size_t>(dim - k) * 2);
#pragma GCC unroll 8
    for (int g = 0; g < kRegs; ++g) {
      const __m256i m = tail_mask(dim - k - 8 * g);
      __m256 yv;
      if constexpr (kF16)
        yv = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(yt + 8 * g)));
      else
        yv = _mm256_maskload_ps(static_cast<const float*>(y) + k + 8 * g, m);
      s[g] = step<kL2>(_mm256_maskload_ps(x + k + 8 * g, m), yv, s[g]);
    }
  }
  return kL2 ? fold(s) : -fold(s);
}

}  // namespace

const PairKernels& pair_kernels_avx2() {
  static constexpr PairKernels k = {&pair<true, false>, &pair<false, false>, &pair<true, true>,
                                    &pair<false, true>};
  return k;
}

}  // namespace megatax::kernels
