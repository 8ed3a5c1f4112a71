// Block distance kernel for x86-64 AVX2 + FMA + F16C (contract: block_kernel.h).
//
// GEMM-style register blocking. A micro-tile holds MR queries x NP panels x 16 rows of
// float accumulators (2 ymm per query and panel). For every dimension k it loads the 16
// panel values of k once (f32 directly, f16 through vcvtph2ps, bf16 by splitting the
// 32-bit pair lanes), broadcasts q[i][k] and issues one vfmadd per accumulator, so each
// output is exactly the ordered chain acc = fma(q[k], x[k], acc), k = 0..dim_padded-1, of
// the scalar reference: the results are bit-identical to it for every dtype.
//
// Loop nest (block_kernel.h): for each dimension slice (sized so that one panel's slice
// stays in L1), for each panel, for each query tile. Partial sums of earlier slices wait
// in the distances buffer (exact: they are floats); the last slice applies the epilogue.
// One or two queries take another path: tiles over 4 or 2 panels, the dimension unsliced.
//
// Compiled with -mavx2 -mfma -mf16c (src/CMakeLists.txt); only called when the CPU has
// them. No -ffast-math: nothing here may be reassociated.
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/block_kernel.h"
#include "kernels/cpu/packed_matrix.h"

namespace megatax::kernels {
namespace {

// ---- Tile policy ---------------------------------------------------------------------
constexpr int kLanes = 8;                           // floats per ymm
constexpr int kVecsPerPanel = kPanelRows / kLanes;  // 2 ymm hold one dim of a panel
static_assert(kVecsPerPanel == 2, "the micro-kernel is written for 16-row panels");
constexpr int kMaxTileQueries = 6;  // MR: 6 x 2 = 12 accumulators
constexpr int kMaxTilePanels = 4;   // NP, used when nq is tiny
// Bytes of one panel's dimension slice: KC = kSliceBytes / (16 * dtype size), i.e.
// KC = 256 dims for f32 and 512 for f16/bf16; the slice is reused by every query tile
// from L1 while the queries' slice (nq x KC floats) streams from L2.
constexpr std::size_t kSliceBytes = 16 * 1024;

// The arguments every micro-tile shares.
struct Block {
  const DistanceBlockArgs* a;
  std::size_t panel_bytes;
};

// Loads dims of a panel as 2 x 8 floats (rows 0-7, rows 8-15). kOdd selects dim k+1 of
// the pair (k even); for f32/f16 it is just the next dim.
template <DType T>
struct PanelLoader;

template <>
struct PanelLoader<DType::kF32> {
  template <bool kOdd>
  static inline void load(const std::uint8_t* panel, std::int64_t k, __m256& x0, __m256& x1) {
    const float* p = reinterpret_cast<const float*>(panel) + (k + kOdd) * kPanelRows;
    x0 = _mm256_loadu_ps(p);
    x1 = _mm256_loadu_ps(p + kLanes);
  }
};

template <>
struct PanelLoader<DType::kF16> {
  template <bool kOdd>
  static inline void load(const std::uint8_t* panel, std::int64_t k, __m256& x0, __m256& x1) {
    const auto* p = reinterpret_cast<const std::uint16_t*>(panel) + (k + kOdd) * kPanelRows;
    x0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    x1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + kLanes)));
  }
};

template <>
struct PanelLoader<DType::kBF16> {
  // One 32-bit lane per row holds dims (k, k+1) of that row (k even): the low half is dim
  // k, so `lane << 16` is its float; the high half is dim k+1, and clearing the low half
  // (here >> 16 then << 16, which needs no mask register) gives its float.
  // Register budget of the 6-query tile: 12 accumulators + 2 panel vectors + 1 broadcast.
  // Keeping the loaded lanes alive from dim k to dim k+1 would take 2 more ymm and makes
  // GCC spill accumulators (the 1 x 4 tile too, which hoists the loads of 4 panels), so the
  // odd dim reloads them from L1: the empty asm hides the address from common-subexpression
  // elimination.
  template <bool kOdd>
  static inline void load(const std::uint8_t* panel, std::int64_t k, __m256& x0, __m256& x1) {
    const std::uint8_t* pair = panel + (k >> 1) * kPanelRows * 4;
    if constexpr (kOdd) __asm__("" : "+r"(pair));
    const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pair));
    const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pair) + 1);
    if constexpr (kOdd) {
      x0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_srli_epi32(v0, 16), 16));
      x1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_srli_epi32(v1, 16), 16));
    } else {
      x0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16));
      x1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16));
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

  __m256 acc[MR][NP][kVecsPerPanel];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j) {
      if (first) {
        acc[i][j][0] = _mm256_setzero_ps();
        acc[i][j][1] = _mm256_setzero_ps();
      } else {
        acc[i][j][0] = _mm256_loadu_ps(out[i] + j * kPanelRows);
        acc[i][j][1] = _mm256_loadu_ps(out[i] + j * kPanelRows + kLanes);
      }
    }
  }

  // One dim: load the panel values once per panel, then one FMA per accumulator. The
  // operands of fma(q, x, acc) commute in the product, which is exact before rounding.
  auto step = [&]<bool kOdd>(std::int64_t k) {
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j) {
      __m256 x0, x1;
      PanelLoader<T>::template load<kOdd>(panel[j], k, x0, x1);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m256 qk = _mm256_broadcast_ss(q[i] + k + kOdd);
        acc[i][j][0] = _mm256_fmadd_ps(qk, x0, acc[i][j][0]);
        acc[i][j][1] = _mm256_fmadd_ps(qk, x1, acc[i][j][1]);
      }
    }
  };
  for (std::int64_t k = k0; k < k1; k += 2) {
    step.template operator()<false>(k);
    step.template operator()<true>(k);
  }

  if (!last) {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
      for (int j = 0; j < NP; ++j) {
        _mm256_storeu_ps(out[i] + j * kPanelRows, acc[i][j][0]);
        _mm256_storeu_ps(out[i] + j * kPanelRows + kLanes, acc[i][j][1]);
      }
    }
    return;
  }

  // Epilogue. L2: d = (qn + xn) - 2 acc with 2 acc computed as acc + acc (exact, and it
  // cannot be contracted into an FMA), then max(0, d): vmaxps(0, d) returns d when d is
  // NaN, as the reference's `0 > d ? 0 : d`. IP: d = -acc.
  const __m256 zero = _mm256_setzero_ps();
  const __m256 sign = _mm256_set1_ps(-0.0f);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const __m256 threshold = _mm256_broadcast_ss(a.thresholds + q0 + i);
    std::uint16_t* mask = a.masks + (q0 + i) * a.ld_masks + p0;
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j) {
      __m256 d[kVecsPerPanel];
#pragma GCC unroll 2
      for (int h = 0; h < kVecsPerPanel; ++h) {
        if (a.metric == Metric::kL2) {
          const __m256 qn = _mm256_broadcast_ss(a.query_norms + q0 + i);
          const __m256 xn = _mm256_loadu_ps(a.db_norms + (p0 + j) * kPanelRows + h * kLanes);
          const __m256 two_acc = _mm256_add_ps(acc[i][j][h], acc[i][j][h]);
          d[h] = _mm256_max_ps(zero, _mm256_sub_ps(_mm256_add_ps(qn, xn), two_acc));
        } else {
          d[h] = _mm256_xor_ps(acc[i][j][h], sign);
        }
        _mm256_storeu_ps(out[i] + j * kPanelRows + h * kLanes, d[h]);
      }
      const unsigned lo =
          static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(d[0], threshold, _CMP_LT_OQ)));
      const unsigned hi =
          static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(d[1], threshold, _CMP_LT_OQ)));
      mask[j] = static_cast<std::uint16_t>(lo | (hi << kLanes));
    }
  }
}

using TileFn = void (*)(const Block&, std::int64_t, std::int64_t, std::int64_t, std::int64_t, bool,
                        bool);

// The micro-tile for MR queries x NP panels. Instantiated shapes: MR 1..6 with NP = 1,
// MR 1..2 with NP = 2 and MR 1 with NP = 4: <= 12 accumulators; one or two queries get the
// 8 independent FMA chains that two FMA pipes x 4 cycles of latency need from several
// panels (a 3 x 2 tile needs 17 ymm and spills; 3 x 1 keeps 6 chains, ~75% of peak).
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

  // Few queries: one tile, several panels at a time so that enough FMA chains are in
  // flight; the panel data is used once, so the dimension is not sliced.
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

  // Dimension slices of near-equal even sizes <= KC; one slice when nothing is reused.
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

void distance_block_avx2(const DistanceBlockArgs& a) {
  switch (a.dtype) {
    case DType::kF32: run_block<DType::kF32>(a); return;
    case DType::kF16: run_block<DType::kF16>(a); return;
    case DType::kBF16: run_block<DType::kBF16>(a); return;
    case DType::kU8: break;  // PackedMatrix never holds u8
  }
}

}  // namespace megatax::kernels
