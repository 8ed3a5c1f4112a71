// AVX-512 variant of add_row_f64 (compiled with -mavx512f): 8 floats widened per add.
#include <immintrin.h>

#include "kernels/cpu/row_sums.h"

namespace megatax::kernels {

void add_row_f64_avx512(const float* row, double* sum, std::int64_t d) noexcept {
  std::int64_t j = 0;
  for (; j + 16 <= d; j += 16) {
    const __m512 x = _mm512_loadu_ps(row + j);
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
    const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    _mm512_storeu_pd(sum + j, _mm512_add_pd(_mm512_loadu_pd(sum + j), lo));
    _mm512_storeu_pd(sum + j + 8, _mm512_add_pd(_mm512_loadu_pd(sum + j + 8), hi));
  }
  if (j < d) {
    // Tail: 8 at a time, then one by one (no reads or writes past d).
    for (; j + 8 <= d; j += 8) {
      const __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(row + j));
      _mm512_storeu_pd(sum + j, _mm512_add_pd(_mm512_loadu_pd(sum + j), v));
    }
    for (; j < d; ++j) sum[j] += static_cast<double>(row[j]);
  }
}

}  // namespace megatax::kernels
