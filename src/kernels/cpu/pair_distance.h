// kernels/cpu/pair_distance.h -- the distance between two single f32 vectors, one function
// per SIMD level and metric.
//
// For searches that visit vectors one at a time in an order they cannot know in advance
// (the HNSW graph over a wide node's children): no packing, no batching. x is an f32 row;
// y is an f32 row or an IEEE half (f16) row, widened exactly to f32 (a compact copy that
// halves the bytes a memory-bound search reads). Batched work (k-means assignment, flat
// scans, k-NN) uses the block kernels (block_kernel.h) instead.
//
// Numerics contract -- every level returns the same bits (so a graph built from these
// distances is the same graph on every CPU), y's values taken as floats:
//   64 running sums s[0..63], all +0 at first. The dims are read in blocks of 64, the last
//   block zero-padded; for dim k = 64 b + r:
//     kL2:           t = x[k] - y[k];  s[r] = fma(t, t, s[r])
//     kInnerProduct: s[r] = fma(x[k], y[k], s[r])
//   then the sums are folded in halves: for w = 32, 16, 8, 4, 2, 1: s[r] = s[r] + s[r + w]
//   for r < w. kL2 returns s[0] (the squared distance, >= 0); kInnerProduct returns -s[0]
//   ("smaller is nearer", as the block kernels).
// Rounding differs from the block kernels' (|q|^2 + |x|^2 - 2 <q, x>): the two agree to a few
// ulps of the norms, not bit for bit.
//
// Thread-safety: pure functions of their arguments.
#pragma once

#include <cstdint>

#include "kernels/cpu/simd_level.h"
#include "megatax/dtype.h"
#include "megatax/metric.h"

namespace megatax::kernels {

inline constexpr std::int64_t kPairLanes = 64;  // running sums of the contract above

// x: dim floats; y: dim elements of the dtype the function was chosen for (f32 or f16); any
// alignment; dim >= 1. Reads nothing past x[dim-1], y[dim-1].
using PairDistanceFn = float (*)(const float* x, const void* y, std::int64_t dim);

// The function for `level` (resolved and supported: see resolve_simd_level), `metric` (kL2 or
// kInnerProduct) and y's dtype (kF32 or kF16). Throws Error(kUnimplemented) for a level this
// build lacks, Error(kInvalidArgument) for another dtype.
PairDistanceFn pair_distance_kernel(SimdLevel level, Metric metric, DType y_dtype = DType::kF32);

// Per-level tables (pair_distance_<level>.cc; only those compiled in).
struct PairKernels {
  PairDistanceFn l2_f32, ip_f32, l2_f16, ip_f16;
};
const PairKernels& pair_kernels_scalar();
const PairKernels& pair_kernels_avx2();
const PairKernels& pair_kernels_avx512();
const PairKernels& pair_kernels_neon();

}  // namespace megatax::kernels
