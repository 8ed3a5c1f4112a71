// Portable reference kernel: the semantics every SIMD level reproduces (block_kernel.h).
// Deliberately simple: one fused multiply-add per (query, row, dimension), in order.
#include <cmath>
#include <cstdint>

#include "kernels/cpu/block_kernel.h"
#include "kernels/cpu/packed_matrix.h"
#include "megatax/dtype.h"

namespace megatax::kernels {
namespace {

// Element (r, k) of a panel as float.
inline float panel_value(const void* panel, DType dtype, std::int64_t r, std::int64_t k) {
  switch (dtype) {
    case DType::kF32: return static_cast<const float*>(panel)[k * kPanelRows + r];
    case DType::kF16:
      return f16_to_f32(static_cast<const std::uint16_t*>(panel)[k * kPanelRows + r]);
    case DType::kBF16:
      return bf16_to_f32(
          static_cast<const std::uint16_t*>(panel)[(k / 2) * 2 * kPanelRows + r * 2 + (k & 1)]);
    case DType::kU8: break;
  }
  return 0.f;
}

}  // namespace

void distance_block_scalar(const DistanceBlockArgs& a) {
  const std::size_t panel_bytes =
      static_cast<std::size_t>(kPanelRows * a.dim_padded) * dtype_size(a.dtype);
  for (std::int64_t i = 0; i < a.nq; ++i) {
    const float* q = a.queries + i * a.ld_queries;
    float* out = a.distances + i * a.ld_distances;
    const float threshold = a.thresholds[i];
    for (std::int64_t p = 0; p < a.npanels; ++p) {
      const void* panel = static_cast<const std::uint8_t*>(a.panels) + p * panel_bytes;
      std::uint16_t mask = 0;
      for (std::int64_t r = 0; r < kPanelRows; ++r) {
        float acc = 0.f;
        for (std::int64_t k = 0; k < a.dim_padded; ++k)
          acc = std::fma(q[k], panel_value(panel, a.dtype, r, k), acc);
        float d;
        if (a.metric == Metric::kL2) {
          d = (a.query_norms[i] + a.db_norms[p * kPanelRows + r]) - 2.f * acc;
          d = 0.f > d ? 0.f : d;  // max(0, d) that keeps NaN, as vmaxps(0, d) does
        } else {
          d = -acc;
        }
        out[p * kPanelRows + r] = d;
        if (d < threshold) mask = static_cast<std::uint16_t>(mask | (1u << r));
      }
      a.masks[i * a.ld_masks + p] = mask;
    }
  }
}

}  // namespace megatax::kernels
