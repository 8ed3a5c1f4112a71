#include "kernels/cpu/simd_level.h"

#include <cstdint>
#include <cstdlib>
#include <string>

#include "megatax/error.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

namespace megatax::kernels {
namespace {

struct CpuFeatures {
  bool avx2 = false;
  bool avx512 = false;
  bool avx512_bf16 = false;
};

#if defined(__x86_64__) || defined(_M_X64)
std::uint64_t read_xcr0() {
  std::uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<std::uint64_t>(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(_M_X64)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
  if (!osxsave) return f;
  const std::uint64_t xcr0 = read_xcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;
  const bool zmm_state = (xcr0 & 0xE6) == 0xE6;
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = (b >> 5) & 1;
  const bool avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1,
             avx512vl = (b >> 31) & 1;
  f.avx2 = ymm_state && avx2 && fma && f16c;
  f.avx512 = f.avx2 && zmm_state && avx512f && avx512dq && avx512bw && avx512vl;
  unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
  __cpuid_count(7, 1, a1, b1, c1, d1);
  f.avx512_bf16 = f.avx512 && ((a1 >> 5) & 1);
#endif
  return f;
}

const CpuFeatures& features() {
  static const CpuFeatures f = detect();
  return f;
}

SimdLevel best_level() {
  if (simd_level_supported(SimdLevel::kAvx512)) return SimdLevel::kAvx512;
  if (simd_level_supported(SimdLevel::kAvx2)) return SimdLevel::kAvx2;
  if (simd_level_supported(SimdLevel::kNeon)) return SimdLevel::kNeon;
  return SimdLevel::kScalar;
}

}  // namespace

const char* simd_level_name(SimdLevel level) noexcept {
  switch (level) {
    case SimdLevel::kAuto: return "auto";
    case SimdLevel::kScalar: return "scalar";
    case SimdLevel::kAvx2: return "avx2";
    case SimdLevel::kAvx512: return "avx512";
    case SimdLevel::kNeon: return "neon";
  }
  return "unknown";
}

SimdLevel parse_simd_level(std::string_view name) {
  if (name == "auto" || name.empty()) return SimdLevel::kAuto;
  if (name == "scalar") return SimdLevel::kScalar;
  if (name == "avx2") return SimdLevel::kAvx2;
  if (name == "avx512") return SimdLevel::kAvx512;
  if (name == "neon") return SimdLevel::kNeon;
  throw_error(ErrorCode::kInvalidArgument, "unknown SIMD level '" + std::string(name) +
                                               "': expected auto, scalar, avx2, avx512 or neon");
}

bool simd_level_supported(SimdLevel level) noexcept {
  switch (level) {
    case SimdLevel::kAuto:
    case SimdLevel::kScalar: return true;
#if defined(MEGATAX_HAVE_X86_SIMD)
    case SimdLevel::kAvx2: return features().avx2;
    case SimdLevel::kAvx512: return features().avx512;
#else
    case SimdLevel::kAvx2:
    case SimdLevel::kAvx512: return false;
#endif
    case SimdLevel::kNeon:
#if defined(MEGATAX_HAVE_NEON)
      return true;
#else
      return false;
#endif
  }
  return false;
}

std::vector<SimdLevel> supported_simd_levels() {
  std::vector<SimdLevel> out;
  for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512, SimdLevel::kNeon})
    if (simd_level_supported(l)) out.push_back(l);
  return out;
}

bool cpu_has_avx512_bf16() noexcept { return features().avx512_bf16; }

SimdLevel default_simd_level() {
  static const SimdLevel level = [] {
    const char* env = std::getenv("MEGATAX_SIMD");
    if (env == nullptr || *env == '\0') return best_level();
    SimdLevel l = parse_simd_level(env);
    if (l == SimdLevel::kAuto) return best_level();
    if (!simd_level_supported(l))
      throw_error(ErrorCode::kUnimplemented, std::string("MEGATAX_SIMD=") + env +
                                                 ": this CPU or build does not support it");
    return l;
  }();
  return level;
}

SimdLevel resolve_simd_level(SimdLevel requested) {
  if (requested == SimdLevel::kAuto) return default_simd_level();
  if (!simd_level_supported(requested))
    throw_error(ErrorCode::kUnimplemented, std::string("SIMD level ") +
                                               simd_level_name(requested) +
                                               " is not supported by this CPU or build");
  return requested;
}

}  // namespace megatax::kernels
