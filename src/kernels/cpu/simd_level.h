// kernels/cpu/simd_level.h -- which CPU code path runs: detected once, overridable.
//
// The path is chosen once per process from cpuid (x86-64) or the build (aarch64: NEON),
// cached, and can be forced: by the environment variable MEGATAX_SIMD
// (scalar|avx2|avx512|neon, read once at first use) or per call through an options struct
// (KnnOptions::simd). Forcing a level the CPU or build lacks throws Error(kUnimplemented).
//
// Thread-safety: all functions are safe to call concurrently.
#pragma once

#include <string_view>
#include <vector>

namespace megatax::kernels {

enum class SimdLevel : int {
  kAuto = -1,   // "use the process default" (options only)
  kScalar = 0,  // portable C++ reference, always compiled
  kAvx2 = 1,    // x86-64 AVX2 + FMA + F16C
  kAvx512 = 2,  // x86-64 AVX-512 F/BW/DQ/VL (+ AVX512-BF16 dot products when present)
  kNeon = 3,    // aarch64 Advanced SIMD
};

const char* simd_level_name(SimdLevel level) noexcept;
// Parses "auto", "scalar", "avx2", "avx512", "neon"; throws Error(kInvalidArgument).
SimdLevel parse_simd_level(std::string_view name);

// True when this build has the level compiled in and this CPU can run it.
bool simd_level_supported(SimdLevel level) noexcept;
// Every supported level, scalar first.
std::vector<SimdLevel> supported_simd_levels();
// True when the CPU has AVX512-BF16 (vdpbf16ps); cached.
bool cpu_has_avx512_bf16() noexcept;

// The process default: MEGATAX_SIMD if set (validated), else the best supported level.
SimdLevel default_simd_level();
// Resolves kAuto to the default and validates an explicit request (throws if unsupported).
SimdLevel resolve_simd_level(SimdLevel requested);

}  // namespace megatax::kernels
