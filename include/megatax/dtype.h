// megatax/dtype.h -- element types of vectors, and exact conversions between them.
//
// f32 is IEEE binary32; f16 is IEEE binary16; bf16 is the upper 16 bits of a binary32
// (bfloat16); u8 is an unsigned byte (datasets such as .u8bin/.bvecs), converted to float
// by value (0..255). Conversions to f16/bf16 round to nearest, ties to even; NaN stays NaN
// (quiet); infinities stay infinite; values too small become subnormals or signed zero;
// values too large become infinity. Conversions to f32 are exact.
//
// Thread-safety: all functions are pure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace megatax {

enum class DType : std::uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2, kU8 = 3 };

// Bytes per element: 4, 2, 2, 1.
constexpr std::size_t dtype_size(DType t) noexcept {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kU8: return 1;
  }
  return 0;
}

// Canonical name: "f32", "f16", "bf16", "u8".
const char* dtype_name(DType t) noexcept;

// Parses a dtype name. Accepts the canonical names and the aliases "fp32", "float32",
// "fp16", "float16", "half", "bfloat16", "uint8". Throws Error(kInvalidArgument) naming
// the accepted values otherwise.
DType parse_dtype(std::string_view name);

// Scalar conversions (see the file comment for rounding rules).
float f16_to_f32(std::uint16_t h) noexcept;
std::uint16_t f32_to_f16(float f) noexcept;
float bf16_to_f32(std::uint16_t b) noexcept;
std::uint16_t f32_to_bf16(float f) noexcept;

// Bulk conversions. `src` holds n elements of `src_type`; `dst` receives n floats / halves.
// Ranges must not overlap.
void convert_to_f32(DType src_type, const void* src, std::size_t n, float* dst) noexcept;
// Converts n floats to dst_type (f32: copy; f16/bf16: rounded as above; u8: rounded to
// nearest and clamped to [0, 255], NaN -> 0).
void convert_from_f32(const float* src, std::size_t n, DType dst_type, void* dst) noexcept;

// Index of the first non-finite element (inf or nan; for f16 / bf16 converted from finite
// f32: a value too large for them) of n elements of `dtype`, or n (u8: always n). Bit tests,
// so that the check also holds under -ffast-math.
std::size_t first_non_finite(DType dtype, const void* data, std::size_t n) noexcept;

// Index of the first of n f32 values that `target` cannot hold, or n: NaN and Inf, and for
// f16 / bf16 the finite values that round (to nearest even, as f32_to_f16 / f32_to_bf16) to
// infinity (|v| >= 65520 for f16; for bf16 from halfway between its largest finite value
// and 2^128). Bit tests on each value's magnitude, vectorised (no round trip per value).
std::size_t first_unstorable(const float* v, std::size_t n, DType target) noexcept;

}  // namespace megatax
