#include "kernels/cpu/block_kernel.h"

#include <string>

#include "megatax/error.h"

namespace megatax::kernels {

DistanceBlockFn distance_block_kernel(SimdLevel level) {
  switch (level) {
    case SimdLevel::kScalar: return &distance_block_scalar;
#if defined(MEGATAX_HAVE_X86_SIMD)
    case SimdLevel::kAvx2: return &distance_block_avx2;
    case SimdLevel::kAvx512: return &distance_block_avx512;
#endif
#if defined(MEGATAX_HAVE_NEON)
    case SimdLevel::kNeon: return &distance_block_neon;
#endif
    default: break;
  }
  throw_error(ErrorCode::kUnimplemented,
              std::string("no distance kernel for SIMD level ") + simd_level_name(level) +
                  " in this build");
}

}  // namespace megatax::kernels
