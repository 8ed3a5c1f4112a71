// kernels/cpu/block_kernel.h -- the fused distance micro-kernels, one table per SIMD level.
//
// A block kernel computes the distances between a block of prepared queries and a run of
// consecutive panels of a PackedMatrix, register-blocked (several queries x 16 or 32 rows
// per micro-tile, FMA, the dimension loop split in cache-sized slices), and writes:
//   distances[i * ld_distances + j]  for i < nq, j < 16 * npanels
//     kL2: max(0, query_norms[i] + db_norms[j] - 2 <q_i, x_j>)
//     kInnerProduct: -<q_i, x_j>          ("smaller is nearer" for both metrics)
//   masks[i * ld_masks + p]  bit r set iff distances[i][16p + r] < thresholds[i]
// The masks let a result handler skip the rows that cannot enter its top-k; the kernel
// knows nothing else about selection (STYLE: distance code never knows top-k).
//
// Numerics contract: every level computes each dot product as the same sequence of fused
// multiply-adds over k = 0..dim_padded-1 in order, so all levels give bit-identical
// results for f32, f16 and bf16 -- with one exception: for bf16 on AVX512-BF16 hardware,
// when the caller passes query_bf16_pairs, the avx512 level uses vdpbf16ps (pairs of
// products, denormals flushed) and differs from the others by rounding only. Callers that
// need the bit-identical bf16 path pass query_bf16_pairs = nullptr.
//
// Thread-safety: kernels are pure functions of their arguments.
#pragma once

#include <cstdint>

#include "kernels/cpu/simd_level.h"
#include "megatax/dtype.h"
#include "megatax/metric.h"

namespace megatax::kernels {

// Queries prepared for a kernel: values already rounded to the database dtype and widened
// to float, zero-padded to dim_padded columns.
struct DistanceBlockArgs {
  const float* queries = nullptr;  // nq x ld_queries floats (ld_queries >= dim_padded)
  std::int64_t ld_queries = 0;
  // bf16 databases only: the same queries as bf16 pairs, nq x (dim_padded / 2) uint32
  // (low half = even dim); used by kernels with native bf16 dot products.
  const std::uint32_t* query_bf16_pairs = nullptr;
  const float* query_norms = nullptr;  // nq squared norms (kL2)
  std::int64_t nq = 0;

  const void* panels = nullptr;       // first panel of the run
  std::int64_t npanels = 0;           // >= 1
  const float* db_norms = nullptr;    // 16 * npanels squared norms of the run's rows (kL2)
  std::int64_t dim_padded = 0;        // even, >= 2
  DType dtype = DType::kF32;          // f32, f16 or bf16
  Metric metric = Metric::kL2;

  const float* thresholds = nullptr;  // nq; masks compare with '<'
  float* distances = nullptr;         // nq x ld_distances (>= 16 * npanels)
  std::int64_t ld_distances = 0;
  std::uint16_t* masks = nullptr;     // nq x ld_masks (>= npanels)
  std::int64_t ld_masks = 0;
};

using DistanceBlockFn = void (*)(const DistanceBlockArgs& args);

// The kernel for `level` (must be resolved and supported: see resolve_simd_level). Each
// kernel handles every database dtype.
DistanceBlockFn distance_block_kernel(SimdLevel level);

// Per-level entry points (defined in block_kernel_<level>.cc; only those compiled in).
void distance_block_scalar(const DistanceBlockArgs& args);
void distance_block_avx2(const DistanceBlockArgs& args);
void distance_block_avx512(const DistanceBlockArgs& args);
void distance_block_neon(const DistanceBlockArgs& args);

}  // namespace megatax::kernels
