// AVX2 variant of add_row_f64 (compiled with -mavx2): 4 floats widened and added per step.
#include <immintrin.h>

#include "kernels/cpu/row_sums.h"

namespace megatax::kernels {

void add_row_f64_avx2(const float* row, double* sum, std::int64_t d) noexcept {
  std::int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    const __m256 x = _mm256_loadu_ps(row + j);
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
    _mm256_storeu_pd(sum + j, _mm256_add_pd(_mm256_loadu_pd(sum + j), lo));
    _mm256_storeu_pd(sum + j + 4, _mm256_add_pd(_mm256_loadu_pd(sum + j + 4), hi));
  }
  for (; j < d; ++j) sum[j] += static_cast<double>(row[j]);
}

}  // namespace megatax::kernels
