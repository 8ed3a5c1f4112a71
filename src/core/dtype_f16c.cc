// f16 <-> f32 array conversion with the F16C instructions (x86-64; compiled with -mf16c and
// called by core/dtype.cc only when the CPU has F16C and AVX). vcvtph2ps is exact for every
// code (subnormals, infinities; NaNs come out quiet with their payload); vcvtps2ph with
// rounding mode 0 rounds to nearest even like f32_to_f16. dtype_test checks both against the
// scalar conversions over all 65536 codes and millions of floats.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace megatax::detail {

void f16_to_f32_f16c(const std::uint16_t* src, std::size_t n, float* dst) noexcept {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  if (i < n) {
    alignas(16) std::uint16_t tail_in[8] = {};
    alignas(32) float tail_out[8];
    for (std::size_t j = 0; j < n - i; ++j) tail_in[j] = src[i + j];
    _mm256_store_ps(tail_out, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(tail_in))));
    for (std::size_t j = 0; j < n - i; ++j) dst[i + j] = tail_out[j];
  }
}

void f32_to_f16_f16c(const float* src, std::size_t n, std::uint16_t* dst) noexcept {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  if (i < n) {
    alignas(32) float tail_in[8] = {};
    alignas(16) std::uint16_t tail_out[8];
    for (std::size_t j = 0; j < n - i; ++j) tail_in[j] = src[i + j];
    _mm_store_si128(reinterpret_cast<__m128i*>(tail_out),
                    _mm256_cvtps_ph(_mm256_load_ps(tail_in), _MM_FROUND_TO_NEAREST_INT));
    for (std::size_t j = 0; j < n - i; ++j) dst[i + j] = tail_out[j];
  }
}

}  // namespace megatax::detail
