// Tests of megatax/dtype.h against independent references:
//  - f16: the CPU's own conversions (F16C on x86-64, __fp16 / FCVT on aarch64) and, everywhere,
//    a reference that rounds in double with frexp/nearbyint/ldexp;
//  - bf16: the same double reference (there is no bf16 conversion instruction we can rely on);
//  - f16/bf16 -> f32: every one of the 65536 encodings, decoded independently in double.
// Sample counts are smaller on aarch64, where the tests run under qemu.
#include "megatax/dtype.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "megatax/error.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace megatax {
namespace {

#if defined(__aarch64__)
constexpr std::size_t kRandomSamples = std::size_t{1} << 19;  // under qemu
constexpr std::size_t kPerExponentSamples = 1024;
#else
constexpr std::size_t kRandomSamples = std::size_t{1} << 22;  // ~4 million
constexpr std::size_t kPerExponentSamples = 4096;
#endif

float bits_to_f32(std::uint32_t bits) { return std::bit_cast<float>(bits); }
std::uint32_t f32_to_bits(float f) { return std::bit_cast<std::uint32_t>(f); }

// ---- Independent double-precision reference for binary16 / bfloat16 -----------------------

// A binary floating-point format of 16 bits: 1 sign bit, `exp_bits`, `mant_bits`.
struct HalfFormat {
  const char* name;
  int exp_bits;   // 5 for f16, 8 for bf16
  int mant_bits;  // 10 for f16, 7 for bf16
  int bias() const { return (1 << (exp_bits - 1)) - 1; }
  int emin() const { return 1 - bias(); }  // exponent of the smallest normal
  int emax() const { return bias(); }      // exponent of the largest finite
  std::uint16_t exp_mask() const {
    return static_cast<std::uint16_t>(((1u << exp_bits) - 1u) << mant_bits);
  }
  std::uint16_t mant_mask() const { return static_cast<std::uint16_t>((1u << mant_bits) - 1u); }
};
constexpr HalfFormat kF16Format{"f16", 5, 10};
constexpr HalfFormat kBF16Format{"bf16", 8, 7};

bool is_half_nan(const HalfFormat& fmt, std::uint16_t h) {
  return (h & fmt.exp_mask()) == fmt.exp_mask() && (h & fmt.mant_mask()) != 0;
}

// Value of an encoding, computed in double from its fields. NaN encodings give a quiet NaN.
double ref_decode(const HalfFormat& fmt, std::uint16_t h) {
  const bool negative = (h & 0x8000u) != 0;
  const int exp_field = (h & fmt.exp_mask()) >> fmt.mant_bits;
  const int mant = h & fmt.mant_mask();
  double magnitude;
  if (exp_field == (1 << fmt.exp_bits) - 1) {
    if (mant != 0) return std::numeric_limits<double>::quiet_NaN();
    magnitude = std::numeric_limits<double>::infinity();
  } else if (exp_field == 0) {  // zero or subnormal: mant * 2^(emin - mant_bits)
    magnitude = std::ldexp(static_cast<double>(mant), fmt.emin() - fmt.mant_bits);
  } else {  // (2^mant_bits + mant) * 2^(e - mant_bits)
    magnitude = std::ldexp(static_cast<double>((1 << fmt.mant_bits) + mant),
                           exp_field - fmt.bias() - fmt.mant_bits);
  }
  return negative ? -magnitude : magnitude;
}

// Result of rounding a float to a 16-bit format: either an encoding or "some NaN".
struct RefResult {
  bool is_nan;
  std::uint16_t bits;  // valid when !is_nan
};

// Rounds `f` to the format, to nearest with ties to even, independently of the code under test:
// the value is split with frexp, rounded with nearbyint on a double that holds it exactly, and
// re-encoded field by field.
RefResult ref_encode(const HalfFormat& fmt, float f) {
  if (std::isnan(f)) return {true, 0};
  const std::uint16_t sign = std::signbit(f) ? 0x8000u : 0u;
  const double a = std::fabs(static_cast<double>(f));
  const std::uint16_t inf_bits = static_cast<std::uint16_t>(sign | fmt.exp_mask());
  if (std::isinf(a)) return {false, inf_bits};
  if (a == 0.0) return {false, sign};

  int e = 0;
  (void)std::frexp(a, &e);  // a = m * 2^e with m in [0.5, 1): a's leading bit is 2^(e-1)
  // Spacing of representable values around a: p = mant_bits + 1 significant bits for normals,
  // fixed at 2^(emin - mant_bits) in the subnormal range.
  const int quantum_exp = std::max(e - 1 - fmt.mant_bits, fmt.emin() - fmt.mant_bits);
  const double units = std::nearbyint(std::ldexp(a, -quantum_exp));  // default mode: RNE
  const double q = std::ldexp(units, quantum_exp);

  const double max_finite = std::ldexp(2.0 - std::ldexp(1.0, -fmt.mant_bits), fmt.emax());
  if (q > max_finite) return {false, inf_bits};
  if (q == 0.0) return {false, sign};
  if (q < std::ldexp(1.0, fmt.emin())) {  // subnormal
    const double mant = std::ldexp(q, fmt.mant_bits - fmt.emin());
    return {false, static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(mant))};
  }
  const int qe = std::ilogb(q);
  const double mant = std::ldexp(q, fmt.mant_bits - qe) - std::ldexp(1.0, fmt.mant_bits);
  const unsigned exp_field = static_cast<unsigned>(qe + fmt.bias());
  return {false, static_cast<std::uint16_t>(sign | (exp_field << fmt.mant_bits) |
                                            static_cast<unsigned>(mant))};
}

std::string hex32(std::uint32_t x) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", x);
  return buf;
}
std::string hex16(std::uint16_t x) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%04X", x);
  return buf;
}

// ---- Hardware / compiler references for binary16 -------------------------------------------

#if defined(__x86_64__)
__attribute__((target("f16c"))) std::uint16_t hw_f32_to_f16(float f) {
  return static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) float hw_f16_to_f32(std::uint16_t h) { return _cvtsh_ss(h); }
// F16C is VEX-encoded: usable when CPUID reports it and the OS saves the YMM state. (Read from
// CPUID directly: clang 14's __builtin_cpu_supports does not know "f16c".)
bool hw_f16_available() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
  const bool f16c = ((ecx >> 29) & 1u) != 0;
  const bool osxsave = ((ecx >> 27) & 1u) != 0;
  if (!f16c || !osxsave) return false;
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  return (xcr0_lo & 0x6u) == 0x6u;  // XMM and YMM state enabled
}
constexpr const char* kHwName = "F16C";
#elif defined(__aarch64__)
std::uint16_t hw_f32_to_f16(float f) {
  const __fp16 h = static_cast<__fp16>(f);  // FCVT Hd, Sn: IEEE binary16, FPCR rounding (RNE)
  return std::bit_cast<std::uint16_t>(h);
}
float hw_f16_to_f32(std::uint16_t h) { return static_cast<float>(std::bit_cast<__fp16>(h)); }
bool hw_f16_available() { return true; }
constexpr const char* kHwName = "__fp16";
#else
std::uint16_t hw_f32_to_f16(float) { return 0; }
float hw_f16_to_f32(std::uint16_t) { return 0.f; }
bool hw_f16_available() { return false; }
constexpr const char* kHwName = "none";
#endif

// ---- Inputs ----------------------------------------------------------------------------------

// Floats chosen to sit on and around every rounding decision of a 16-bit format: for every
// finite encoding h (both signs), the float value of h, the midpoint between h and h+1 (a tie,
// exact in f32 because a 16-bit format has at most 11 significant bits) and the floats just
// below and above that midpoint.
std::vector<float> tie_cases(const HalfFormat& fmt) {
  std::vector<float> out;
  out.reserve(4 * 65536);
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto h16 = static_cast<std::uint16_t>(h);
    const double v = ref_decode(fmt, h16);
    if (!std::isfinite(v)) continue;
    const double next = ref_decode(fmt, static_cast<std::uint16_t>(h16 + 1));
    out.push_back(static_cast<float>(v));
    if ((h & 0x7FFFu) == 0x7FFFu) continue;
    // h+1 may be infinity: then the midpoint is the overflow threshold, max + half a unit.
    const double step =
        std::isinf(next) ? std::ldexp(1.0, fmt.emax() - fmt.mant_bits) : std::fabs(next - v);
    const double mid = std::copysign(std::fabs(v) + step / 2, v);
    const auto midf = static_cast<float>(mid);
    EXPECT_EQ(static_cast<double>(midf), mid) << "midpoint not exact in f32";
    out.push_back(midf);
    out.push_back(std::nextafter(midf, 0.f));
    out.push_back(std::nextafter(midf, std::copysign(INFINITY, midf)));
  }
  return out;
}

std::vector<float> edge_cases() {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> v = {
      0.f,
      -0.f,
      inf,
      -inf,
      std::numeric_limits<float>::quiet_NaN(),
      -std::numeric_limits<float>::quiet_NaN(),
      bits_to_f32(0x7F800001u),
      bits_to_f32(0xFF800001u),  // signalling NaNs
      bits_to_f32(0x7FC00001u),
      bits_to_f32(0x7FFFFFFFu),
      bits_to_f32(0x7F802000u),
      65504.f,
      65519.99f,
      65520.f,
      65536.f,
      1e9f,
      FLT_MAX,
      -FLT_MAX,
      std::ldexp(1.f, -24),
      std::ldexp(1.f, -25),
      std::nextafter(std::ldexp(1.f, -25), 1.f),
      std::nextafter(std::ldexp(1.f, -25), 0.f),
      1.5f * std::ldexp(1.f, -24),
      std::ldexp(1.f, -14),
      std::nextafter(std::ldexp(1.f, -14), 0.f),
      std::ldexp(1.f, -14) - std::ldexp(1.f, -25),  // tie between largest subnormal and 2^-14
      std::ldexp(1.f, -15),
      FLT_MIN,
      std::nextafter(FLT_MIN, 0.f),
      FLT_TRUE_MIN,
      -FLT_TRUE_MIN,
      1.f,
      -1.f,
      1.f + std::ldexp(1.f, -11),
      1.f + 3 * std::ldexp(1.f, -11),
      1.f + std::ldexp(1.f, -8),
      1.f + 3 * std::ldexp(1.f, -8),
      0.1f,
      1.f / 3,
      3.14159265f,
      bits_to_f32(0x7F7F7FFFu),
      bits_to_f32(0x7F7F8000u),
      bits_to_f32(0x7F7E8000u),
      bits_to_f32(0x00008000u),
      bits_to_f32(0x00018000u),
      bits_to_f32(0x00008001u)};
  const std::size_t n = v.size();
  for (std::size_t i = 0; i < n; ++i) v.push_back(-v[i]);
  return v;
}

// Random bit patterns over the whole f32 range, then random mantissas for every exponent.
std::vector<float> random_cases(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> out;
  out.reserve(kRandomSamples + 256 * kPerExponentSamples);
  for (std::size_t i = 0; i < kRandomSamples; ++i) {
    out.push_back(bits_to_f32(static_cast<std::uint32_t>(rng())));
  }
  for (std::uint32_t exp = 0; exp < 256; ++exp) {
    for (std::size_t i = 0; i < kPerExponentSamples; ++i) {
      const auto r = static_cast<std::uint32_t>(rng());
      out.push_back(bits_to_f32((r & 0x807FFFFFu) | (exp << 23)));
    }
  }
  return out;
}

// Checks `got` against the reference; returns false (after one failure message) on mismatch.
bool check_encode(const HalfFormat& fmt, const char* ref_name, float f, std::uint16_t got,
                  const RefResult& want) {
  if (want.is_nan) {
    if (is_half_nan(fmt, got)) return true;
    ADD_FAILURE() << fmt.name << "(" << hex32(f32_to_bits(f)) << " = " << f << ") = " << hex16(got)
                  << ", " << ref_name << " says NaN";
    return false;
  }
  if (got == want.bits) return true;
  ADD_FAILURE() << fmt.name << "(" << hex32(f32_to_bits(f)) << " = " << f << ") = " << hex16(got)
                << ", " << ref_name << " says " << hex16(want.bits);
  return false;
}

// Runs `convert` over inputs against `reference`; stops after a few failures.
template <typename Convert, typename Reference>
void check_all(const HalfFormat& fmt, const char* ref_name, const std::vector<float>& inputs,
               Convert convert, Reference reference) {
  int failures = 0;
  for (const float f : inputs) {
    if (!check_encode(fmt, ref_name, f, convert(f), reference(f)) && ++failures >= 10) {
      FAIL() << "stopping after 10 failures";
    }
  }
}

RefResult hw_f16_ref(float f) {
  const std::uint16_t h = hw_f32_to_f16(f);
  return {is_half_nan(kF16Format, h), h};
}

// ---- f16 -----------------------------------------------------------------------------------

TEST(DTypeF16, DecodeAllEncodingsMatchesDoubleReference) {
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto h16 = static_cast<std::uint16_t>(h);
    const float got = f16_to_f32(h16);
    const double want = ref_decode(kF16Format, h16);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << hex16(h16);
      EXPECT_EQ(std::signbit(got), (h & 0x8000u) != 0) << hex16(h16);
      EXPECT_NE(f32_to_bits(got) & 0x00400000u, 0u) << "NaN not quiet: " << hex16(h16);
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << hex16(h16);
      ASSERT_EQ(std::signbit(got), std::signbit(want)) << hex16(h16);
    }
  }
}

TEST(DTypeF16, DecodeAllEncodingsMatchesHardware) {
  if (!hw_f16_available()) GTEST_SKIP() << "no hardware f16 conversion on this CPU";
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto h16 = static_cast<std::uint16_t>(h);
    const float got = f16_to_f32(h16);
    const float want = hw_f16_to_f32(h16);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << hex16(h16) << " vs " << kHwName;
    } else {
      ASSERT_EQ(f32_to_bits(got), f32_to_bits(want)) << hex16(h16) << " vs " << kHwName;
    }
  }
}

TEST(DTypeF16, RoundTripOfEveryEncoding) {
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto h16 = static_cast<std::uint16_t>(h);
    const std::uint16_t back = f32_to_f16(f16_to_f32(h16));
    if (is_half_nan(kF16Format, h16)) {
      ASSERT_TRUE(is_half_nan(kF16Format, back)) << hex16(h16);
      EXPECT_EQ(back & 0x8000u, h16 & 0x8000u) << hex16(h16);
    } else {
      ASSERT_EQ(back, h16);
    }
  }
}

TEST(DTypeF16, EdgeCasesWithKnownAnswers) {
  struct Case {
    float in;
    std::uint16_t want;
  };
  const float inf = std::numeric_limits<float>::infinity();
  const Case cases[] = {
      {0.f, 0x0000},
      {-0.f, 0x8000},
      {inf, 0x7C00},
      {-inf, 0xFC00},
      {1.f, 0x3C00},
      {-2.f, 0xC000},
      {65504.f, 0x7BFF},                // largest finite
      {65519.99f, 0x7BFF},              // just below the overflow threshold
      {65520.f, 0x7C00},                // the threshold ties to even: infinity
      {-65520.f, 0xFC00},               //
      {FLT_MAX, 0x7C00},                //
      {std::ldexp(1.f, -24), 0x0001},   // smallest subnormal
      {std::ldexp(1.f, -25), 0x0000},   // half of it ties to even: zero
      {-std::ldexp(1.f, -25), 0x8000},  //
      {std::nextafter(std::ldexp(1.f, -25), 1.f), 0x0001},
      {1.5f * std::ldexp(1.f, -24), 0x0002},                  // tie between 1 and 2 units: even
      {2.5f * std::ldexp(1.f, -24), 0x0002},                  // tie between 2 and 3 units: even
      {std::ldexp(1.f, -14), 0x0400},                         // smallest normal
      {std::ldexp(1.f, -14) - std::ldexp(1.f, -25), 0x0400},  // tie 0x3FF/0x400: even
      {std::ldexp(1.f, -14) - std::ldexp(1.f, -24), 0x03FF},  // largest subnormal
      {1.f + std::ldexp(1.f, -11), 0x3C00},                   // tie: even (down)
      {1.f + 3 * std::ldexp(1.f, -11), 0x3C02},               // tie: even (up)
      {FLT_TRUE_MIN, 0x0000},
      {-FLT_TRUE_MIN, 0x8000},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(hex16(f32_to_f16(c.in)), hex16(c.want)) << c.in << " " << hex32(f32_to_bits(c.in));
  }
  // NaNs stay NaN (never infinity, even when the payload's top bits are zero), keep their sign
  // and are quiet.
  for (const std::uint32_t nan_bits :
       {0x7FC00000u, 0x7F800001u, 0x7F801FFFu, 0x7FFFFFFFu, 0xFFC00000u, 0xFF800001u}) {
    const std::uint16_t h = f32_to_f16(bits_to_f32(nan_bits));
    EXPECT_TRUE(is_half_nan(kF16Format, h)) << hex32(nan_bits) << " -> " << hex16(h);
    EXPECT_EQ(h & 0x8000u, (nan_bits >> 16) & 0x8000u) << hex32(nan_bits);
    EXPECT_NE(h & 0x0200u, 0u) << "not quiet: " << hex32(nan_bits) << " -> " << hex16(h);
  }
}

TEST(DTypeF16, EncodeMatchesDoubleReference) {
  const auto ref = [](float f) { return ref_encode(kF16Format, f); };
  check_all(kF16Format, "double reference", edge_cases(), f32_to_f16, ref);
  check_all(kF16Format, "double reference", tie_cases(kF16Format), f32_to_f16, ref);
  check_all(kF16Format, "double reference", random_cases(1), f32_to_f16, ref);
}

TEST(DTypeF16, EncodeMatchesHardware) {
  if (!hw_f16_available()) GTEST_SKIP() << "no hardware f16 conversion on this CPU";
  check_all(kF16Format, kHwName, edge_cases(), f32_to_f16, hw_f16_ref);
  check_all(kF16Format, kHwName, tie_cases(kF16Format), f32_to_f16, hw_f16_ref);
  check_all(kF16Format, kHwName, random_cases(2), f32_to_f16, hw_f16_ref);
}

// The reference itself agrees with the hardware, so that a shared mistake of the reference and
// the code under test would still be caught on machines with F16C / FP16.
TEST(DTypeF16, DoubleReferenceMatchesHardware) {
  if (!hw_f16_available()) GTEST_SKIP() << "no hardware f16 conversion on this CPU";
  const auto ref = [](float f) { return ref_encode(kF16Format, f); };
  const auto hw = [](float f) { return hw_f32_to_f16(f); };
  check_all(kF16Format, "double reference", edge_cases(), hw, ref);
  check_all(kF16Format, "double reference", tie_cases(kF16Format), hw, ref);
}

// ---- bf16 ----------------------------------------------------------------------------------

TEST(DTypeBF16, DecodeAllEncodingsExactly) {
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const auto b16 = static_cast<std::uint16_t>(b);
    const float got = bf16_to_f32(b16);
    const double want = ref_decode(kBF16Format, b16);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << hex16(b16);
      // bf16 -> f32 is exact: the NaN keeps its payload bits too.
      ASSERT_EQ(f32_to_bits(got), b << 16) << hex16(b16);
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << hex16(b16);
      ASSERT_EQ(std::signbit(got), std::signbit(want)) << hex16(b16);
    }
  }
}

TEST(DTypeBF16, RoundTripOfEveryEncoding) {
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const auto b16 = static_cast<std::uint16_t>(b);
    const std::uint16_t back = f32_to_bf16(bf16_to_f32(b16));
    if (is_half_nan(kBF16Format, b16)) {
      ASSERT_TRUE(is_half_nan(kBF16Format, back)) << hex16(b16);
      EXPECT_EQ(back & 0x8000u, b16 & 0x8000u) << hex16(b16);
    } else {
      ASSERT_EQ(back, b16);
    }
  }
}

TEST(DTypeBF16, EdgeCasesWithKnownAnswers) {
  struct Case {
    std::uint32_t in;
    std::uint16_t want;
  };
  const Case cases[] = {
      {0x00000000u, 0x0000}, {0x80000000u, 0x8000},  // signed zeros
      {0x7F800000u, 0x7F80}, {0xFF800000u, 0xFF80},  // infinities
      {0x3F800000u, 0x3F80},                         // 1
      {0x3F808000u, 0x3F80},                         // 1 + 2^-8: tie, even (down)
      {0x3F818000u, 0x3F82},                         // 1 + 3*2^-8: tie, even (up)
      {0x3F808001u, 0x3F81},                         // just above the tie
      {0x7F7FFFFFu, 0x7F80},                         // FLT_MAX rounds to infinity
      {0x7F7F7FFFu, 0x7F7F},                         // just below the overflow tie
      {0x7F7F8000u, 0x7F80},                         // the overflow tie: even is infinity
      {0xFF7F8000u, 0xFF80},                         //
      {0x7F7E8000u, 0x7F7E},                         // tie below the max: even (down)
      {0x00000001u, 0x0000},                         // smallest f32 subnormal
      {0x00008000u, 0x0000},                         // tie in the subnormals: even (zero)
      {0x00018000u, 0x0002},                         // tie: even (up)
      {0x00008001u, 0x0001},                         // smallest bf16 subnormal
      {0x007FFFFFu, 0x0080},                         // largest subnormal rounds to FLT_MIN
      {0x80008001u, 0x8001},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(hex16(f32_to_bf16(bits_to_f32(c.in))), hex16(c.want)) << hex32(c.in);
  }
  for (const std::uint32_t nan_bits :
       {0x7FC00000u, 0x7F800001u, 0x7F807FFFu, 0x7FFFFFFFu, 0xFFC00000u, 0xFF800001u}) {
    const std::uint16_t b = f32_to_bf16(bits_to_f32(nan_bits));
    EXPECT_TRUE(is_half_nan(kBF16Format, b)) << hex32(nan_bits) << " -> " << hex16(b);
    EXPECT_EQ(b & 0x8000u, (nan_bits >> 16) & 0x8000u) << hex32(nan_bits);
    EXPECT_NE(b & 0x0040u, 0u) << "not quiet: " << hex32(nan_bits) << " -> " << hex16(b);
  }
}

TEST(DTypeBF16, EncodeMatchesDoubleReference) {
  const auto ref = [](float f) { return ref_encode(kBF16Format, f); };
  check_all(kBF16Format, "double reference", edge_cases(), f32_to_bf16, ref);
  check_all(kBF16Format, "double reference", tie_cases(kBF16Format), f32_to_bf16, ref);
  check_all(kBF16Format, "double reference", random_cases(3), f32_to_bf16, ref);
}

// ---- names and sizes -----------------------------------------------------------------------

TEST(DTypeNames, SizesAndCanonicalNames) {
  static_assert(dtype_size(DType::kF32) == 4);
  static_assert(dtype_size(DType::kF16) == 2);
  static_assert(dtype_size(DType::kBF16) == 2);
  static_assert(dtype_size(DType::kU8) == 1);
  EXPECT_STREQ(dtype_name(DType::kF32), "f32");
  EXPECT_STREQ(dtype_name(DType::kF16), "f16");
  EXPECT_STREQ(dtype_name(DType::kBF16), "bf16");
  EXPECT_STREQ(dtype_name(DType::kU8), "u8");
  for (const DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kU8}) {
    EXPECT_EQ(parse_dtype(dtype_name(t)), t) << dtype_name(t);
  }
}

TEST(DTypeNames, ParseAcceptsDocumentedAliases) {
  const std::pair<const char*, DType> aliases[] = {
      {"f32", DType::kF32},  {"fp32", DType::kF32},  {"float32", DType::kF32},
      {"f16", DType::kF16},  {"fp16", DType::kF16},  {"float16", DType::kF16},
      {"half", DType::kF16}, {"bf16", DType::kBF16}, {"bfloat16", DType::kBF16},
      {"u8", DType::kU8},    {"uint8", DType::kU8},
  };
  for (const auto& [name, want] : aliases) {
    EXPECT_EQ(parse_dtype(name), want) << name;
  }
}

TEST(DTypeNames, ParseRejectsUnknownNamesWithHelpfulMessage) {
  for (const char* bad : {"", "f64", "int8", "F 32", "bf", "u8 ", "float64"}) {
    try {
      (void)parse_dtype(bad);
      ADD_FAILURE() << "parse_dtype(\"" << bad << "\") did not throw";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << bad;
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::string("'") + bad + "'"), std::string::npos) << msg;
      for (const char* accepted : {"f32", "f16", "bf16", "u8"}) {
        EXPECT_NE(msg.find(accepted), std::string::npos) << msg << " lacks " << accepted;
      }
    }
  }
}

// ---- bulk conversions ----------------------------------------------------------------------

TEST(DTypeBulk, ToF32MatchesScalarForEveryEncoding) {
  std::vector<std::uint16_t> all(0x10000);
  for (std::uint32_t i = 0; i < 0x10000u; ++i) all[i] = static_cast<std::uint16_t>(i);
  std::vector<float> out(all.size());

  convert_to_f32(DType::kF16, all.data(), all.size(), out.data());
  for (std::size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(f32_to_bits(out[i]), f32_to_bits(f16_to_f32(all[i]))) << hex16(all[i]);
  }
  convert_to_f32(DType::kBF16, all.data(), all.size(), out.data());
  for (std::size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(f32_to_bits(out[i]), std::uint32_t{all[i]} << 16) << hex16(all[i]);
  }
}

TEST(DTypeBulk, U8ToF32IsTheByteValue) {
  std::array<std::uint8_t, 256> bytes{};
  for (int i = 0; i < 256; ++i) bytes[i] = static_cast<std::uint8_t>(i);
  std::array<float, 256> out{};
  convert_to_f32(DType::kU8, bytes.data(), bytes.size(), out.data());
  for (int i = 0; i < 256; ++i) EXPECT_EQ(out[i], static_cast<float>(i)) << i;
}

TEST(DTypeBulk, F32CopyIsBitExact) {
  const std::vector<float> src = edge_cases();
  std::vector<float> mid(src.size(), 7.f);
  std::vector<float> back(src.size(), 7.f);
  convert_to_f32(DType::kF32, src.data(), src.size(), mid.data());
  convert_from_f32(mid.data(), mid.size(), DType::kF32, back.data());
  for (std::size_t i = 0; i < src.size(); ++i) {
    ASSERT_EQ(f32_to_bits(mid[i]), f32_to_bits(src[i])) << i;
    ASSERT_EQ(f32_to_bits(back[i]), f32_to_bits(src[i])) << i;
  }
}

TEST(DTypeBulk, FromF32HalvesMatchScalar) {
  std::vector<float> src = edge_cases();
  const std::vector<float> more = random_cases(4);
  src.insert(src.end(), more.begin(), more.begin() + 100000);
  std::vector<std::uint16_t> out(src.size());

  convert_from_f32(src.data(), src.size(), DType::kF16, out.data());
  for (std::size_t i = 0; i < src.size(); ++i) {
    ASSERT_EQ(out[i], f32_to_f16(src[i])) << hex32(f32_to_bits(src[i]));
  }
  convert_from_f32(src.data(), src.size(), DType::kBF16, out.data());
  for (std::size_t i = 0; i < src.size(); ++i) {
    ASSERT_EQ(out[i], f32_to_bf16(src[i])) << hex32(f32_to_bits(src[i]));
  }
}

TEST(DTypeBulk, FromF32ToU8RoundsAndClamps) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    float in;
    std::uint8_t want;
  };
  const Case cases[] = {
      {0.f, 0},
      {-0.f, 0},
      {-1.f, 0},
      {-1e30f, 0},
      {-inf, 0},
      {0.4f, 0},
      {0.6f, 1},
      {1.f, 1},
      {1.49f, 1},
      {1.51f, 2},
      {127.f, 127},
      {127.7f, 128},
      {200.2f, 200},
      {254.f, 254},
      {254.6f, 255},
      {255.f, 255},
      {255.4f, 255},
      {255.6f, 255},
      {256.f, 255},
      {1e30f, 255},
      {inf, 255},
      {nan, 0},
      {-nan, 0},
      {FLT_TRUE_MIN, 0},
      // Ties: rounded like the other conversions, to even.
      {0.5f, 0},
      {1.5f, 2},
      {2.5f, 2},
      {254.5f, 254},
  };
  std::vector<float> src;
  for (const Case& c : cases) src.push_back(c.in);
  std::vector<std::uint8_t> out(src.size(), 0xAB);
  convert_from_f32(src.data(), src.size(), DType::kU8, out.data());
  for (std::size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(int{out[i]}, int{cases[i].want}) << "u8(" << cases[i].in << ")";
  }
  // Every integer value in range converts to itself.
  std::vector<float> ints(256);
  for (int i = 0; i < 256; ++i) ints[i] = static_cast<float>(i);
  std::vector<std::uint8_t> int_out(ints.size(), 0xAB);
  convert_from_f32(ints.data(), ints.size(), DType::kU8, int_out.data());
  for (int i = 0; i < 256; ++i) EXPECT_EQ(int{int_out[i]}, i);
}

TEST(DTypeBulk, ZeroLengthWritesNothing) {
  const float src[1] = {1.f};
  std::uint16_t dst16[1] = {0xABCD};
  std::uint8_t dst8[1] = {0xAB};
  float dstf[1] = {7.f};
  convert_from_f32(src, 0, DType::kF16, dst16);
  convert_from_f32(src, 0, DType::kBF16, dst16);
  convert_from_f32(src, 0, DType::kU8, dst8);
  convert_from_f32(src, 0, DType::kF32, dstf);
  convert_to_f32(DType::kF16, dst16, 0, dstf);
  convert_to_f32(DType::kU8, dst8, 0, dstf);
  EXPECT_EQ(dst16[0], 0xABCD);
  EXPECT_EQ(dst8[0], 0xAB);
  EXPECT_EQ(dstf[0], 7.f);
}

// first_unstorable's bit test against the round trip it stands for. Rounding is monotone in
// the magnitude, so "rounds to infinity" is a threshold: checking every bit pattern within
// 3000 ulps of each edge (both signs), random patterns and the specials covers it.
TEST(DTypeBulk, FirstUnstorableMatchesTheRoundTrip) {
  std::mt19937 rng(std::random_device{}());
  std::vector<std::uint32_t> patterns = {0u, 1u, 0x3F800000u, 0x7F800000u, 0x7FC00000u, 0x7F800001u,
                                         0x7F7FFFFFu};
  for (const std::uint32_t edge : {0x477FF000u, 0x7F7F8000u, 0x7F800000u})
    for (std::uint32_t b = edge - 3000; b <= edge + 3000 && b <= 0x7FFFFFFFu; ++b) patterns.push_back(b);
  std::uniform_int_distribution<std::uint32_t> any(0, 0x7FFFFFFFu);
  for (int i = 0; i < 100000; ++i) patterns.push_back(any(rng));
  for (const DType target : {DType::kF32, DType::kF16, DType::kBF16}) {
    int mismatches = 0;
    for (const std::uint32_t p : patterns) {
      for (const std::uint32_t sign : {0u, 0x80000000u}) {
        const std::uint32_t bits = p | sign;
        float v;
        std::memcpy(&v, &bits, sizeof v);
        bool want = !std::isfinite(v);
        if (!want && target == DType::kF16) want = !std::isfinite(f16_to_f32(f32_to_f16(v)));
        if (!want && target == DType::kBF16) want = !std::isfinite(bf16_to_f32(f32_to_bf16(v)));
        const bool got = first_unstorable(&v, 1, target) == 0;
        if (got != want && ++mismatches <= 5)
          ADD_FAILURE() << dtype_name(target) << ": bits 0x" << std::hex << bits << " flagged " << got
                        << ", expected " << want;
      }
    }
    EXPECT_EQ(mismatches, 0) << dtype_name(target);
  }
}

TEST(DTypeBulk, FirstUnstorableFindsTheFirstPosition) {
  for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{63}, std::size_t{64},
                              std::size_t{65}, std::size_t{200}}) {
    std::vector<float> v(n, 1.5f);
    EXPECT_EQ(first_unstorable(v.data(), n, DType::kF16), n);
    for (std::size_t p = 0; p < n; p += 7) {
      std::vector<float> w = v;
      w[p] = 70000.f;  // fine in f32 and bf16, too large for f16
      if (p + 3 < n) w[p + 3] = std::numeric_limits<float>::quiet_NaN();
      EXPECT_EQ(first_unstorable(w.data(), n, DType::kF16), p) << "n " << n;
      EXPECT_EQ(first_unstorable(w.data(), n, DType::kBF16), p + 3 < n ? p + 3 : n) << "n " << n;
      EXPECT_EQ(first_unstorable(w.data(), n, DType::kF32), p + 3 < n ? p + 3 : n) << "n " << n;
    }
  }
}

}  // namespace
}  // namespace megatax
