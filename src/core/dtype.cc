#include "megatax/dtype.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>

#if defined(MEGATAX_HAVE_F16C_TU)
#include <cpuid.h>
#endif

#include "megatax/error.h"

namespace megatax {

const char* dtype_name(DType t) noexcept {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kU8: return "u8";
  }
  return "unknown";
}

DType parse_dtype(std::string_view name) {
  if (name == "f32" || name == "fp32" || name == "float32" || name == "float") return DType::kF32;
  if (name == "f16" || name == "fp16" || name == "float16" || name == "half") return DType::kF16;
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  if (name == "u8" || name == "uint8") return DType::kU8;
  throw_error(ErrorCode::kInvalidArgument,
              "unknown dtype '" + std::string(name) + "': expected f32, f16, bf16 or u8");
}

float f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t mant = h & 0x3FFu;
  std::uint32_t bits;
  if (exp == 0x1F) {  // inf or NaN: keep payload, force quiet
    bits = sign | 0x7F800000u | (mant << 13) | (mant ? 0x00400000u : 0u);
  } else if (exp != 0) {  // normal
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  } else if (mant == 0) {  // signed zero
    bits = sign;
  } else {  // subnormal: value = mant * 2^-24; normalise
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400u) == 0);
    mant &= 0x3FFu;
    bits = sign | (static_cast<std::uint32_t>(127 - 15 - e) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

std::uint16_t f32_to_f16(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t abs = x & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) {  // inf or NaN
    if (abs == 0x7F800000u) return sign | 0x7C00u;
    return static_cast<std::uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
  }
  // 65520 = largest value that rounds to 65504 or below is < 65520; >= 65520 -> inf.
  if (abs >= 0x477FF000u) return sign | 0x7C00u;
  if (abs >= 0x38800000u) {  // normal in f16 (>= 2^-14)
    const std::uint32_t mant_rounded = abs + 0xFFFu + ((abs >> 13) & 1u);  // RNE at bit 13
    return static_cast<std::uint16_t>(sign | ((mant_rounded - 0x38000000u) >> 13));
  }
  if (abs < 0x33000000u) return sign;  // < 2^-25: rounds to zero (2^-25 itself ties to 0)
  // Subnormal: value / 2^-24 rounded to nearest even integer.
  const std::uint32_t exp = abs >> 23;
  const std::uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
  const std::uint32_t shift = 126u - exp;  // 113 - exp + 13, exp in [102, 112]
  const std::uint32_t q = mant >> shift;
  const std::uint32_t rem = mant & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1u);
  const std::uint32_t r = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
  return static_cast<std::uint16_t>(sign | r);
}

float bf16_to_f32(std::uint16_t b) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

std::uint16_t f32_to_bf16(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) {  // NaN: keep sign and top payload, force quiet
    return static_cast<std::uint16_t>((x >> 16) | 0x0040u);
  }
  const std::uint32_t rounded = x + 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>(rounded >> 16);
}

#if defined(MEGATAX_HAVE_F16C_TU)
namespace detail {
void f16_to_f32_f16c(const std::uint16_t* src, std::size_t n, float* dst) noexcept;
void f32_to_f16_f16c(const float* src, std::size_t n, std::uint16_t* dst) noexcept;
}  // namespace detail

namespace {
// F16C array conversions (core/dtype_f16c.cc) when the CPU has them (CPUID.1:ECX F16C, AVX,
// OSXSAVE, and the OS saving YMM state); else the scalar loops. (cpuid directly: clang's
// __builtin_cpu_supports does not know "f16c".)
bool have_f16c() noexcept {
  static const bool yes = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const bool f16c = (c >> 29) & 1u, avx = (c >> 28) & 1u, osxsave = (c >> 27) & 1u;
    if (!(f16c && avx && osxsave)) return false;
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0x6u) == 0x6u;  // XMM and YMM state enabled
  }();
  return yes;
}
}  // namespace
#endif

void convert_to_f32(DType src_type, const void* src, std::size_t n, float* dst) noexcept {
  if (n == 0) return;
  switch (src_type) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kF16: {
      const auto* s = static_cast<const std::uint16_t*>(src);
#if defined(MEGATAX_HAVE_F16C_TU)
      if (have_f16c()) return detail::f16_to_f32_f16c(s, n, dst);
#endif
      for (std::size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::kBF16: {
      // bf16_to_f32 written out: the call is not inlined where the library is built
      // position-independent (interposable), and the loop then does not vectorise.
      const auto* s = static_cast<const std::uint16_t*>(src);
      for (std::size_t i = 0; i < n; ++i) dst[i] = std::bit_cast<float>(static_cast<std::uint32_t>(s[i]) << 16);
      return;
    }
    case DType::kU8: {
      const auto* s = static_cast<const std::uint8_t*>(src);
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
  }
}

void convert_from_f32(const float* src, std::size_t n, DType dst_type, void* dst) noexcept {
  if (n == 0) return;
  switch (dst_type) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kF16: {
      auto* d = static_cast<std::uint16_t*>(dst);
#if defined(MEGATAX_HAVE_F16C_TU)
      if (have_f16c()) return detail::f32_to_f16_f16c(src, n, d);
#endif
      for (std::size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::kBF16: {
      // f32_to_bf16 written out branch-free, so that the loop vectorises (the call did not:
      // ~1 ns a value, the f32 -> bf16 conversion of a GPU fit's batches).
      auto* d = static_cast<std::uint16_t*>(dst);
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint32_t x = std::bit_cast<std::uint32_t>(src[i]);
        const std::uint32_t rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
        const std::uint32_t quiet_nan = (x >> 16) | 0x0040u;
        d[i] = static_cast<std::uint16_t>((x & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
      }
      return;
    }
    case DType::kU8: {
      auto* d = static_cast<std::uint8_t*>(dst);
      for (std::size_t i = 0; i < n; ++i) {
        const float v = src[i];
        d[i] = std::isnan(v) ? 0 : v <= 0.f ? 0 : v >= 255.f ? 255
                                 : static_cast<std::uint8_t>(std::nearbyint(v));
      }
      return;
    }
  }
}

namespace {

// Index of the first of n 16-bit floats whose exponent bits (`mask`) are all ones (inf or
// nan), or n: blocks of 64 without an early exit (vectorised), then the exact index.
std::size_t first_all_ones_16(const std::uint16_t* x, std::size_t n, std::uint16_t mask) {
  std::size_t b = 0;
  for (; b + 64 <= n; b += 64) {
    std::uint32_t bad = 0;
    for (std::size_t i = b; i < b + 64; ++i) bad |= static_cast<std::uint32_t>((x[i] & mask) == mask);
    if (bad != 0) break;
  }
  for (std::size_t i = b; i < n; ++i) {
    if ((x[i] & mask) == mask) return i;
  }
  return n;
}

}  // namespace

std::size_t first_non_finite(DType dtype, const void* data, std::size_t n) noexcept {
  switch (dtype) {
    case DType::kF32: {
      // Blocks of 64 without an early exit (vectorised), then the exact index in the block.
      const auto* x = static_cast<const std::uint32_t*>(data);
      std::size_t b = 0;
      for (; b + 64 <= n; b += 64) {
        std::uint32_t bad = 0;
        for (std::size_t i = b; i < b + 64; ++i) bad |= static_cast<std::uint32_t>((x[i] & 0x7F800000u) == 0x7F800000u);
        if (bad != 0) break;
      }
      for (std::size_t i = b; i < n; ++i) {
        if ((x[i] & 0x7F800000u) == 0x7F800000u) return i;
      }
      return n;
    }
    case DType::kF16: return first_all_ones_16(static_cast<const std::uint16_t*>(data), n, 0x7C00u);
    case DType::kBF16: return first_all_ones_16(static_cast<const std::uint16_t*>(data), n, 0x7F80u);
    case DType::kU8: return n;
  }
  return n;
}

std::size_t first_unstorable(const float* v, std::size_t n, DType target) noexcept {
  // The smallest magnitude bit pattern (sign cleared) that `target` cannot hold.
  const std::uint32_t limit = target == DType::kF16    ? 0x477FF000u   // 65520
                              : target == DType::kBF16 ? 0x7F7F8000u
                                                       : 0x7F800000u;  // Inf, NaN
  auto magnitude = [v](std::size_t i) {
    std::uint32_t m;
    std::memcpy(&m, v + i, sizeof m);
    return m & 0x7FFFFFFFu;
  };
  // Blocks of 64 without an early exit (the max vectorises), then the exact index.
  std::size_t b = 0;
  for (; b + 64 <= n; b += 64) {
    std::uint32_t worst = 0;
    for (std::size_t i = b; i < b + 64; ++i) worst = std::max(worst, magnitude(i));
    if (worst >= limit) break;
  }
  for (std::size_t i = b; i < n; ++i) {
    if (magnitude(i) >= limit) return i;
  }
  return n;
}

}  // namespace megatax
