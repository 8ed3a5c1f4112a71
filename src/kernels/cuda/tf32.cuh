// kernels/cuda/tf32.cuh -- f32 products on tensor cores as 3xTF32: the split of an f32 value
// into two tf32 parts and the m16n8k8 MMA that multiplies them (gemm_core.cuh's MmaCore<P,
// float>, the few-query top-k's f32 tiles in topk_sm90_few.cu).
//
// a.b = big.big + big.small + small.big, each product accumulated in f32 by its own MMA; the
// dropped small.small term and the tensor cores' truncation of the remainders to tf32 leave
// ~2^-21 of |a||b| a product (f32-class accuracy; exact FFMA products are the alternative).
//
// Internal header: compiled by nvcc only.
#pragma once

#include <cstdint>

namespace megatax::cuda::detail {

// x = big + small exactly, big = x rounded to tf32 (10 explicit mantissa bits; half-way cases
// away from zero, by an integer add on the bits), small = the remainder (|small| <= 2^-11
// |x|), which the tensor cores truncate to tf32 (<= 2^-22 |x| lost). Three ALU operations an
// element: cvt.rna.tf32 costs four (with its inf check). Finite |x| within 2^-11 of FLT_MAX
// round to inf (their squares overflow f32 anyway).
__device__ __forceinline__ void split_tf32(std::uint32_t x, std::uint32_t& big,
                                           std::uint32_t& small) {
  big = (x + 0x1000u) & 0xffffe000u;
  small = __float_as_uint(__uint_as_float(x) - __uint_as_float(big));
}

// d += a * b for one m16n8k8 tile (A row-major 16 x 8, B column-major 8 x 8; PTX's fragments).
__device__ __forceinline__ void mma_tf32(float (&d)[4], const std::uint32_t (&a)[4],
                                         std::uint32_t b0, std::uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace megatax::cuda::detail
