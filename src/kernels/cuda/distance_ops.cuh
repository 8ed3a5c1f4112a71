// kernels/cuda/distance_ops.cuh -- what a dot product becomes (the distance op) and how the
// candidates of a row are compared (the reduction), kept apart from the GEMM core.
//
// A distance op turns the dot product <x, c> into a *score* that is smaller for nearer
// points and that can be compared across columns without the row's own term; finalize()
// turns the winning score into the distance reported to the caller:
//   L2Op:           score = ||c||^2 - 2 <x, c>;  distance = max(||x||^2 + score, 0)
//   InnerProductOp: score = -<x, c>;             similarity = -score
// The argmin of the score is the argmin of the distance (||x||^2 is constant along a row).
//
// Internal header: compiled by nvcc only.
#pragma once

#include <cstdint>

namespace megatax::cuda::detail {

struct L2Op {
  static constexpr bool kUsesNorms = true;
  __device__ __forceinline__ static float col_term(const float* c_norms, std::int64_t j) {
    return c_norms[j];
  }
  __device__ __forceinline__ static float score(float dot, float col_term) {
    return fmaf(-2.f, dot, col_term);
  }
  __device__ __forceinline__ static float finalize(float score, float x_norm) {
    const float v = x_norm + score;
    return v > 0.f ? v : 0.f;  // also maps -0 to +0; NaN stays NaN
  }
};

struct InnerProductOp {
  static constexpr bool kUsesNorms = false;
  __device__ __forceinline__ static float col_term(const float*, std::int64_t) { return 0.f; }
  __device__ __forceinline__ static float score(float dot, float) { return -dot; }
  __device__ __forceinline__ static float finalize(float score, float) { return -score; }
};

// The reduction: (score, index) pairs ordered by score, then index (ties to the smaller
// index). NaN scores never win; +inf scores still order by index.
struct MinScoreIndex {
  template <class I>
  __device__ __forceinline__ static bool better(float s, I i, float best_s, I best_i) {
    return s < best_s || (s == best_s && i < best_i);
  }
};

// Order-preserving map of a float to uint32 (a < b  <=>  key(a) < key(b), for non-NaN).
__device__ __forceinline__ std::uint32_t float_order_key(float f) {
  const std::uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float float_from_order_key(std::uint32_t k) {
  const std::uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
  return __uint_as_float(u);
}

}  // namespace megatax::cuda::detail
