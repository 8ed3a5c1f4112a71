// AVX-512 distance kernel (compiled with -mavx512f/bw/dq/vl/bf16 -mfma -mf16c; only called
// when the CPU has them). GEMM-style blocking, see block_kernel.h for the contract:
//   for each slice of kSliceDims dimensions          (a panel pair's slice stays in L1)
//     for each pair of panels (32 rows)               (two zmm per query)
//       for each micro-tile of up to kMaxRows queries (2 * kMaxRows accumulators)
//         acc[i][p] += broadcast(q[i][k]) * panel_p[k]   for k in the slice, in order
// Partial sums go through the distance buffer between slices (exact); the last slice
// applies the epilogue (norms, clamp, negate) and builds the masks.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/block_kernel.h"
#include "kernels/cpu/packed_matrix.h"
#include "kernels/cpu/simd_level.h"

namespace megatax::kernels {
namespace {

constexpr int kMaxRows = 12;            // queries per micro-tile: 24 accumulators of 32 zmm
constexpr std::int64_t kSliceDims = 128;  // dims per slice (even): 2 panels x 16 x 128 f32 = 16 KiB

enum class Elem { kF32, kF16, kBF16, kBF16Dot };

struct Ctx {
  const DistanceBlockArgs* a;
  std::size_t panel_bytes;
};

template <Elem E>
inline const std::uint8_t* panel_slice(const Ctx& c, std::int64_t p, std::int64_t k0) {
  const auto* base = static_cast<const std::uint8_t*>(c.a->panels) + p * c.panel_bytes;
  if constexpr (E == Elem::kF32) return base + k0 * 16 * 4;
  return base + k0 * 16 * 2;  // f16: [k][16] halves; bf16: [k/2][16][2] = same byte offset
}

// Loads dimension k of 16 rows (f32 / f16 layouts).
template <Elem E>
inline __m512 load_dim(const std::uint8_t* slice, std::int64_t k) {
  if constexpr (E == Elem::kF32) {
    return _mm512_load_ps(reinterpret_cast<const float*>(slice) + k * 16);
  } else {
    return _mm512_cvtph_ps(
        _mm256_load_si256(reinterpret_cast<const __m256i*>(slice + k * 32)));
  }
}

template <Elem E, int MR, int NP>
void micro_tile(const Ctx& c, std::int64_t i0, std::int64_t p0, std::int64_t k0,
                std::int64_t kc, bool first, bool last) {
  const DistanceBlockArgs& a = *c.a;
  __m512 acc[MR][NP];
  float* out = a.distances + i0 * a.ld_distances + p0 * 16;
  if (first) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) acc[i][p] = _mm512_setzero_ps();
  } else {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) acc[i][p] = _mm512_loadu_ps(out + i * a.ld_distances + p * 16);
  }
  const std::uint8_t* xs[NP];
#pragma GCC unroll 4
  for (int p = 0; p < NP; ++p) xs[p] = panel_slice<E>(c, p0 + p, k0);

  if constexpr (E == Elem::kF32 || E == Elem::kF16) {
    const float* q = a.queries + i0 * a.ld_queries + k0;
    const std::int64_t ldq = a.ld_queries;
    for (std::int64_t k = 0; k < kc; ++k) {
      __m512 x[NP];
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) x[p] = load_dim<E>(xs[p], k);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const __m512 qb = _mm512_set1_ps(q[i * ldq + k]);
#pragma GCC unroll 4
        for (int p = 0; p < NP; ++p) acc[i][p] = _mm512_fmadd_ps(qb, x[p], acc[i][p]);
      }
    }
  } else if constexpr (E == Elem::kBF16) {
    // Widen each 32-bit lane (dims 2m, 2m+1 of a row): even dim = lane << 16,
    // odd dim = lane & 0xFFFF0000. FMA order: even dim, then odd dim (as the scalar path).
    const float* q = a.queries + i0 * a.ld_queries + k0;
    const std::int64_t ldq = a.ld_queries;
    const __m512i hi_mask = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
    for (std::int64_t m = 0; m < kc / 2; ++m) {
      __m512 xe[NP], xo[NP];
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) {
        const __m512i v = _mm512_load_si512(xs[p] + m * 64);
        xe[p] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        xo[p] = _mm512_castsi512_ps(_mm512_and_si512(v, hi_mask));
      }
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const __m512 qe = _mm512_set1_ps(q[i * ldq + 2 * m]);
        const __m512 qo = _mm512_set1_ps(q[i * ldq + 2 * m + 1]);
#pragma GCC unroll 4
        for (int p = 0; p < NP; ++p) {
          acc[i][p] = _mm512_fmadd_ps(qe, xe[p], acc[i][p]);
          acc[i][p] = _mm512_fmadd_ps(qo, xo[p], acc[i][p]);
        }
      }
    }
  } else {  // kBF16Dot: native pair dot products (vdpbf16ps)
    const std::int64_t ldp = a.dim_padded / 2;  // pairs are nq x (dim_padded / 2)
    const std::uint32_t* q = a.query_bf16_pairs + i0 * ldp + k0 / 2;
    for (std::int64_t m = 0; m < kc / 2; ++m) {
      __m512bh x[NP];
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) x[p] = (__m512bh)_mm512_load_si512(xs[p] + m * 64);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const __m512bh qb = (__m512bh)_mm512_set1_epi32(static_cast<int>(q[i * ldp + m]));
#pragma GCC unroll 4
        for (int p = 0; p < NP; ++p) acc[i][p] = _mm512_dpbf16_ps(acc[i][p], qb, x[p]);
      }
    }
  }

  if (!last) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) _mm512_storeu_ps(out + i * a.ld_distances + p * 16, acc[i][p]);
    return;
  }
  // Epilogue: distances and "may enter" masks.
  const __m512 zero = _mm512_setzero_ps();
  const __m512 two = _mm512_set1_ps(2.f);
  const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  __m512 xn[NP];
  if (a.metric == Metric::kL2) {
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) xn[p] = _mm512_loadu_ps(a.db_norms + (p0 + p) * 16);
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    const __m512 thr = _mm512_set1_ps(a.thresholds[i0 + i]);
    const __m512 qn = a.metric == Metric::kL2 ? _mm512_set1_ps(a.query_norms[i0 + i]) : zero;
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) {
      __m512 d;
      if (a.metric == Metric::kL2) {
        d = _mm512_fnmadd_ps(two, acc[i][p], _mm512_add_ps(qn, xn[p]));  // (qn+xn) - 2 acc
        d = _mm512_max_ps(zero, d);  // keeps NaN (second operand), like the scalar path
      } else {
        d = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(acc[i][p]), sign));
      }
      _mm512_storeu_ps(out + i * a.ld_distances + p * 16, d);
      a.masks[(i0 + i) * a.ld_masks + p0 + p] =
          static_cast<std::uint16_t>(_mm512_cmp_ps_mask(d, thr, _CMP_LT_OQ));
    }
  }
}

template <Elem E, int NP>
void run_rows(const Ctx& c, std::int64_t i0, std::int64_t rows, std::int64_t p0,
              std::int64_t k0, std::int64_t kc, bool first, bool last) {
  if constexpr (NP == 4) {  // few queries: 4 panels per tile keep 4..12 FMA chains busy
    switch (rows) {
      case 1: micro_tile<E, 1, 4>(c, i0, p0, k0, kc, first, last); break;
      case 2: micro_tile<E, 2, 4>(c, i0, p0, k0, kc, first, last); break;
      case 3: micro_tile<E, 3, 4>(c, i0, p0, k0, kc, first, last); break;
      default: break;
    }
    return;
  }
  switch (rows) {
#define MEGATAX_CASE(R) \
  case R: micro_tile<E, R, NP>(c, i0, p0, k0, kc, first, last); break;
    MEGATAX_CASE(1) MEGATAX_CASE(2) MEGATAX_CASE(3) MEGATAX_CASE(4) MEGATAX_CASE(5)
    MEGATAX_CASE(6) MEGATAX_CASE(7) MEGATAX_CASE(8) MEGATAX_CASE(9) MEGATAX_CASE(10)
    MEGATAX_CASE(11) MEGATAX_CASE(12)
#undef MEGATAX_CASE
    default: break;
  }
}

template <Elem E>
void run(const DistanceBlockArgs& a) {
  Ctx c{&a, static_cast<std::size_t>(kPanelRows * a.dim_padded) *
                (E == Elem::kF32 ? 4u : 2u)};
  for (std::int64_t k0 = 0; k0 < a.dim_padded; k0 += kSliceDims) {
    const std::int64_t kc = a.dim_padded - k0 < kSliceDims ? a.dim_padded - k0 : kSliceDims;
    const bool first = k0 == 0, last = k0 + kc == a.dim_padded;
    // With at most 3 queries a pair of panels leaves the FMA pipes waiting on latency
    // (2 chains per query): take 4 panels per tile then.
    const bool few = a.nq <= 3;
    for (std::int64_t p0 = 0; p0 < a.npanels;) {
      const std::int64_t left = a.npanels - p0;
      const int np = few && left >= 4 ? 4 : left >= 2 ? 2 : 1;
      // Balanced query tiles (16 = 8 + 8, not 12 + 4): every tile keeps enough FMA chains.
      const std::int64_t n_tiles = (a.nq + kMaxRows - 1) / kMaxRows;
      for (std::int64_t t = 0, i0 = 0; t < n_tiles; ++t) {
        const std::int64_t rows = (a.nq - i0) / (n_tiles - t) + ((a.nq - i0) % (n_tiles - t) != 0 ? 1 : 0);
        if (np == 4) {
          run_rows<E, 4>(c, i0, rows, p0, k0, kc, first, last);
        } else if (np == 2) {
          run_rows<E, 2>(c, i0, rows, p0, k0, kc, first, last);
        } else {
          run_rows<E, 1>(c, i0, rows, p0, k0, kc, first, last);
        }
        i0 += rows;
      }
      p0 += np;
    }
  }
}

}  // namespace

void distance_block_avx512(const DistanceBlockArgs& a) {
  switch (a.dtype) {
    case DType::kF32: run<Elem::kF32>(a); return;
    case DType::kF16: run<Elem::kF16>(a); return;
    case DType::kBF16:
      if (cpu_has_avx512_bf16() && a.query_bf16_pairs != nullptr) {
        run<Elem::kBF16Dot>(a);
      } else {
        run<Elem::kBF16>(a);
      }
      return;
    case DType::kU8: return;
  }
}

}  // namespace megatax::kernels
