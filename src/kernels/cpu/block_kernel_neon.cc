// Block distance kernel for aarch64 Advanced SIMD (contract: block_kernel.h).
//
// GEMM-style register blocking, as the x86 kernels. A micro-tile holds MR queries x NP
// panels x 16 rows of float accumulators (4 q-registers per query and panel). For every
// dimension k it loads the 16 panel values of k once (f32 directly, f16 through fcvtl,
// bf16 by splitting the 32-bit pair lanes), broadcasts q[i][k] (ld1r) and issues one
// fused vfmaq_f32 per accumulator, so each output is exactly the ordered chain
// acc = fma(q[k], x[k], acc), k = 0..dim_padded-1, of the scalar reference: results are
// bit-identical to it for every dtype.
//
// Loop nest: for each dimension slice (one panel's slice stays in L1), for each panel,
// for each query tile; partial sums of earlier slices wait in the distances buffer (exact:
// they are floats); the last slice applies the epilogue. One or two queries take another
// path: tiles over 4 or 2 panels, the dimension unsliced.
#include <arm_neon.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/block_kernel.h"
#include "kernels/cpu/packed_matrix.h"

// GCC's scheduling before register allocation interleaves dims k and k+1 of the 6-query
// tile and then spills accumulators (24 of them + 4 panel vectors + broadcasts fill the 32
// registers); without it the inner loops have no spills. Out-of-order cores reorder anyway.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-schedule-insns")
#endif

namespace megatax::kernels {
namespace {

// ---- Tile policy ---------------------------------------------------------------------
constexpr int kLanes = 4;                           // floats per q-register
constexpr int kVecsPerPanel = kPanelRows / kLanes;  // 4 registers hold one dim of a panel
static_assert(kVecsPerPanel == 4, "the micro-kernel is written for 16-row panels");
constexpr int kMaxTileQueries = 6;  // MR: 6 x 4 = 24 accumulators of 32
constexpr int kMaxTilePanels = 4;   // NP, used when nq is tiny
// Bytes of one panel's dimension slice: KC = 256 dims for f32, 512 for f16/bf16.
constexpr std::size_t kSliceBytes = 16 * 1024;

struct Block {
  const DistanceBlockArgs* a;
  std::size_t panel_bytes;
};

// Loads dim k (kOdd: k+1, k even) of a panel as 4 x 4 floats (rows 0-3, ..., 12-15).
template <DType T>
struct PanelLoader;

template <>
struct PanelLoader<DType::kF32> {
  template <bool kOdd>
  static inline void load(const std::uint8_t* panel, std::int64_t k, float32x4_t x[4]) {
    const float* p = reinterpret_cast<const float*>(panel) + (k + kOdd) * kPanelRows;
    x[0] = vld1q_f32(p);
    x[1] = vld1q_f32(p + 4);
    x[2] = vld1q_f32(p + 8);
    x[3] = vld1q_f32(p + 12);
  }
};

template <>
struct PanelLoader<DType::kF16> {
  template <bool kOdd>
  static inline void load(const std::uint8_t* panel, std::int64_t k, float32x4_t x[4]) {
    const auto* p = reinterpret_cast<const std::uint16_t*>(panel) + (k + kOdd) * kPanelRows;
    const float16x8_t h0 = vreinterpretq_f16_u16(vld1q_u16(p));
    const float16x8_t h1 = vreinterpretq_f16_u16(vld1q_u16(p + 8));
    x[0] = vcvt_f32_f16(vget_low_f16(h0));  // exact widening
    x[1] = vcvt_high_f32_f16(h0);
    x[2] = vcvt_f32_f16(vget_low_f16(h1));
    x[3] = vcvt_high_f32_f16(h1);
  }
};

template <>
struct PanelLoader<DType::kBF16> {
  // One 32-bit lane per row holds dims (k, k+1) of that row (k even): `lane << 16` is the
  // float of dim k, `lane & 0xFFFF0000` the float of dim k+1. The odd dim reloads the
  // lanes (from L1) rather than keeping 4 more registers alive through the even dim's
  // FMAs; the empty asm hides the address from common-subexpression elimination.
  template <bool kOdd>
  static inline void load(const std::uint8_t* panel, std::int64_t k, float32x4_t x[4]) {
    const std::uint8_t* pair = panel + (k >> 1) * kPanelRows * 4;
    if constexpr (kOdd) __asm__("" : "+r"(pair));
    const auto* p = reinterpret_cast<const std::uint32_t*>(pair);
#pragma GCC unroll 4
    for (int h = 0; h < kVecsPerPanel; ++h) {
      const uint32x4_t v = vld1q_u32(p + h * kLanes);
      x[h] = kOdd ? vreinterpretq_f32_u32(vandq_u32(v, vdupq_n_u32(0xFFFF0000u)))
                  : vreinterpretq_f32_u32(vshlq_n_u32(v, 16));
    }
  }
};

// One micro-tile: queries [q0, q0 + MR) x panels [p0, p0 + NP), dims [k0, k1) (even
// bounds). `first`: start from zero, else from the partial sums in distances. `last`:
// write the final distances and masks, else store the partial sums.
template <DType T, int MR, int NP>
void micro_tile(const Block& b, std::int64_t q0, std::int64_t p0, std::int64_t k0, std::int64_t k1,
                bool first, bool last) {
  const DistanceBlockArgs& a = *b.a;
  const float* q[MR];
  float* out[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    q[i] = a.queries + (q0 + i) * a.ld_queries;
    out[i] = a.distances + (q0 + i) * a.ld_distances + p0 * kPanelRows;
  }
  const std::uint8_t* panel[NP];
#pragma GCC unroll 8
  for (int j = 0; j < NP; ++j)
    panel[j] = static_cast<const std::uint8_t*>(a.panels) + (p0 + j) * b.panel_bytes;

  float32x4_t acc[MR][NP][kVecsPerPanel];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j)
#pragma GCC unroll 4
      for (int h = 0; h < kVecsPerPanel; ++h)
        acc[i][j][h] = first ? vdupq_n_f32(0.f) : vld1q_f32(out[i] + j * kPanelRows + h * kLanes);

  // One dim: the panel values once per panel, then one fused multiply-add per
  // accumulator (vfmaq_f32(acc, x, q) = acc + x * q rounded once, as std::fma).
  auto step = [&]<bool kOdd>(std::int64_t k) {
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j) {
      float32x4_t x[kVecsPerPanel];
      PanelLoader<T>::template load<kOdd>(panel[j], k, x);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const float32x4_t qk = vld1q_dup_f32(q[i] + k + kOdd);
#pragma GCC unroll 4
        for (int h = 0; h < kVecsPerPanel; ++h) acc[i][j][h] = vfmaq_f32(acc[i][j][h], x[h], qk);
      }
    }
  };
  for (std::int64_t k = k0; k < k1; k += 2) {
    step.template operator()<false>(k);
    step.template operator()<true>(k);
  }

  if (!last) {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NP; ++j)
#pragma GCC unroll 4
        for (int h = 0; h < kVecsPerPanel; ++h)
          vst1q_f32(out[i] + j * kPanelRows + h * kLanes, acc[i][j][h]);
    return;
  }

  // Epilogue. L2: d = (qn + xn) - 2 acc with 2 acc computed as acc + acc (exact, and it
  // cannot be contracted into an FMA); then the reference's `0 > d ? 0 : d` as a select
  // (fmax would turn NaN and -0 differently). IP: d = -acc. Masks: lane r of the
  // comparison contributes bit r through the weights 1, 2, 4, ... 2^15.
  const float32x4_t zero = vdupq_n_f32(0.f);
  static constexpr std::uint32_t kWeights[kPanelRows] = {
      1u << 0, 1u << 1, 1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,  1u << 7,
      1u << 8, 1u << 9, 1u << 10, 1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15};
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const float32x4_t threshold = vld1q_dup_f32(a.thresholds + q0 + i);
    std::uint16_t* mask = a.masks + (q0 + i) * a.ld_masks + p0;
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j) {
      uint32x4_t bits = vdupq_n_u32(0);
#pragma GCC unroll 4
      for (int h = 0; h < kVecsPerPanel; ++h) {
        float32x4_t d;
        if (a.metric == Metric::kL2) {
          const float32x4_t qn = vld1q_dup_f32(a.query_norms + q0 + i);
          const float32x4_t xn = vld1q_f32(a.db_norms + (p0 + j) * kPanelRows + h * kLanes);
          d = vsubq_f32(vaddq_f32(qn, xn), vaddq_f32(acc[i][j][h], acc[i][j][h]));
          d = vbslq_f32(vcgtq_f32(zero, d), zero, d);
        } else {
          d = vnegq_f32(acc[i][j][h]);
        }
        vst1q_f32(out[i] + j * kPanelRows + h * kLanes, d);
        bits =
            vorrq_u32(bits, vandq_u32(vcltq_f32(d, threshold), vld1q_u32(kWeights + h * kLanes)));
      }
      mask[j] = static_cast<std::uint16_t>(vaddvq_u32(bits));
    }
  }
}

using TileFn = void (*)(const Block&, std::int64_t, std::int64_t, std::int64_t, std::int64_t, bool,
                        bool);

// The micro-tile for MR queries x NP panels. Instantiated shapes: MR 1..6 with NP = 1,
// MR 1..2 with NP = 2 and MR 1 with NP = 4: <= 24 accumulators; one or two queries get 16
// independent FMA chains from several panels (a 3 x 2 tile spills, 3 x 1 has 12 chains).
template <DType T>
TileFn tile_fn(int mr, int np) {
  if (np == 4 && mr == 1) return &micro_tile<T, 1, 4>;
  if (np == 2) {
    switch (mr) {
      case 1: return &micro_tile<T, 1, 2>;
      case 2: return &micro_tile<T, 2, 2>;
      default: break;
    }
  }
  switch (mr) {
    case 1: return &micro_tile<T, 1, 1>;
    case 2: return &micro_tile<T, 2, 1>;
    case 3: return &micro_tile<T, 3, 1>;
    case 4: return &micro_tile<T, 4, 1>;
    case 5: return &micro_tile<T, 5, 1>;
    default: return &micro_tile<T, 6, 1>;
  }
}

template <DType T>
void run_block(const DistanceBlockArgs& a) {
  const Block b{&a, static_cast<std::size_t>(kPanelRows * a.dim_padded) * dtype_size(T)};
  if (a.nq <= 0 || a.npanels <= 0) return;

  // Few queries: one tile over several panels at a time (enough FMA chains in flight);
  // the panel data is used once, so the dimension is not sliced.
  if (a.nq <= 2) {
    const int mr = static_cast<int>(a.nq);
    const int np = mr == 1 ? kMaxTilePanels : 2;
    std::int64_t p = 0;
    for (int width = np; width >= 1; width /= 2) {
      const TileFn fn = tile_fn<T>(mr, width);
      for (; p + width <= a.npanels; p += width) fn(b, 0, p, 0, a.dim_padded, true, true);
    }
    return;
  }

  // Query tiles of balanced sizes (<= 6, differing by at most 1: 7 = 4 + 3, 13 = 5+4+4).
  const std::int64_t ntiles = (a.nq + kMaxTileQueries - 1) / kMaxTileQueries;
  const std::int64_t base = a.nq / ntiles, extra = a.nq % ntiles;
  const TileFn fn_big = tile_fn<T>(static_cast<int>(base + 1), 1);
  const TileFn fn_small = tile_fn<T>(static_cast<int>(base), 1);

  // Dimension slices of near-equal even sizes <= KC.
  const std::int64_t kc_max = static_cast<std::int64_t>(kSliceBytes / (kPanelRows * dtype_size(T)));
  const std::int64_t nslices = (a.dim_padded + kc_max - 1) / kc_max;
  const std::int64_t kc = ((a.dim_padded + nslices - 1) / nslices + 1) & ~std::int64_t{1};

  for (std::int64_t k0 = 0; k0 < a.dim_padded; k0 += kc) {
    const std::int64_t k1 = std::min(a.dim_padded, k0 + kc);
    const bool first = k0 == 0, last = k1 == a.dim_padded;
    for (std::int64_t p = 0; p < a.npanels; ++p) {
      std::int64_t q0 = 0;
      for (std::int64_t t = 0; t < ntiles; ++t) {
        const bool big = t < extra;
        (big ? fn_big : fn_small)(b, q0, p, k0, k1, first, last);
        q0 += big ? base + 1 : base;
      }
    }
  }
}

}  // namespace

void distance_block_neon(const DistanceBlockArgs& a) {
  switch (a.dtype) {
    case DType::kF32: run_block<DType::kF32>(a); return;
    case DType::kF16: run_block<DType::kF16>(a); return;
    case DType::kBF16: run_block<DType::kBF16>(a); return;
    case DType::kU8: break;  // PackedMatrix never holds u8
  }
}

}  // namespace megatax::kernels
