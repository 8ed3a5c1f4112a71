#include "kernels/cpu/row_sums.h"

#include <string>

#include "megatax/error.h"

namespace megatax::kernels {

void add_row_f64_scalar(const float* row, double* sum, std::int64_t d) noexcept {
  for (std::int64_t j = 0; j < d; ++j) sum[j] += static_cast<double>(row[j]);
}

AddRowF64Fn add_row_f64_kernel(SimdLevel level) {
  const SimdLevel l = resolve_simd_level(level);
  if (!simd_level_supported(l))
    throw_error(ErrorCode::kUnimplemented,
                std::string("add_row_f64: SIMD level ") + simd_level_name(l) + " is not available here");
  switch (l) {
#if defined(MEGATAX_HAVE_X86_SIMD)
    case SimdLevel::kAvx512: return add_row_f64_avx512;
    case SimdLevel::kAvx2: return add_row_f64_avx2;
#endif
    default: return add_row_f64_scalar;  // NEON: the compiler vectorises the scalar loop
  }
}

void add_row_f64(const float* row, double* sum, std::int64_t d) noexcept {
  static const AddRowF64Fn fn = []() -> AddRowF64Fn {
    try {
      return add_row_f64_kernel(SimdLevel::kAuto);
    } catch (...) {
      return &add_row_f64_scalar;
    }
  }();
  fn(row, sum, d);
}

}  // namespace megatax::kernels
