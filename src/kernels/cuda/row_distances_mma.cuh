// kernels/cuda/row_distances_mma.cuh -- row distances of 16-bit rows on tensor cores (for
// row_distances.cu; internal to kernels/cuda).
//
// A warp computes the squared distances of a tile of 8 pool rows to up to 16 candidates as
//   |p|^2 + |c|^2 - 2 p.c, clamped at 0,
// where each of the three terms is a sum of mma.sync m16n8k16 products (f32 accumulation)
// over the same k slots in the same order. Element e of a row, at 32 * s + 8 * q + i (q = the
// lane's place in its group of 4, i < 8), always lands in k step 2 s + i / 4 and slot
// (i % 4 < 2 ? 2 q : 2 q + 8) + i % 2, whichever operand (A or B) the row is: so one 16-byte
// load of a row serves as its A fragment and its B fragment alike, and p.p, c.c and p.c
// for p == c are the same sum of the same products: a row's distance to itself (or to an
// identical row) is exactly 0. The result of a (pool row, candidate) pair depends on those
// two rows only, so the plain and the grouped kernel give the same bits.
//
// Memory: the pool is read once (16-byte loads, several steps in flight per lane); the
// candidates are staged in shared memory as 16-bit values (row stride padded so that the
// 8 rows x 4 lanes of a fragment read hit distinct banks). Each tile also forms the
// candidates' |c|^2 (mma work the loads hide: no serial step per block).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/gemm_core.cuh"

namespace megatax::cuda::detail {

constexpr int kMmaTileRows = 8;     // pool rows per warp tile (the mma's n)
constexpr int kMmaMaxCand = 16;     // candidates per launch (the mma's m)
constexpr int kMmaUnroll = 4;       // 32-element steps loaded ahead per lane
constexpr std::int64_t kMmaMaxD = 4096;  // larger d: the FFMA kernels (shared memory)

// Staged candidate row stride in 16-bit elements: d rounded up to 64 (128 bytes: whole
// 32-element steps, zeros past d) plus 32 elements (64 bytes), so that consecutive rows
// start 64 bytes apart modulo 128 and a fragment read (8 lanes of 2 rows x 4 pieces of 16
// bytes per phase) hits distinct banks.
__host__ __device__ constexpr std::int64_t mma_cand_stride(std::int64_t d) { return (d + 63) / 64 * 64 + 32; }
// Shared memory of a block: the candidates' rows.
__host__ __device__ constexpr std::size_t mma_smem_bytes(std::int64_t d, std::int64_t n_cand) {
  return static_cast<std::size_t>(n_cand * mma_cand_stride(d) * 2);
}

// 8 elements of a row at element j (zeros past d): one 16-byte load when `vec` (16-byte
// aligned rows, d a multiple of 8), else element by element.
template <class T>
__device__ __forceinline__ uint4 load8(const T* row, std::int64_t j, std::int64_t d, bool vec) {
  if (j >= d) return make_uint4(0, 0, 0, 0);
  if (vec) return *reinterpret_cast<const uint4*>(row + j);
  union {
    uint4 u;
    T e[8];
  } p;
#pragma unroll
  for (int i = 0; i < 8; ++i) p.e[i] = j + i < d ? row[j + i] : T(0.f);
  return p.u;
}

// Stages candidate rows cand_rows[t] (t < n_a; rows of x) into s_cand (16-bit, stride
// mma_cand_stride(d), zeros up to the stride). All threads of the block call it; it ends
// with a barrier.
template <class T>
__device__ void mma_stage_candidates(const T* x, std::int64_t ld, std::int64_t d, bool vec,
                                     const std::int64_t* cand_rows, int n_a, T* s_cand) {
  const std::int64_t stride = mma_cand_stride(d);
  const std::int64_t pieces = stride / 8;  // 16-byte pieces per staged row
  for (std::int64_t q = threadIdx.x; q < static_cast<std::int64_t>(n_a) * pieces; q += blockDim.x) {
    const std::int64_t t = q / pieces, j = (q - t * pieces) * 8;
    *reinterpret_cast<uint4*>(s_cand + t * stride + j) = load8(x + cand_rows[t] * ld, j, d, vec);
  }
  __syncthreads();
}

// The distance from the three mma sums: |p|^2 + |c|^2 - 2 p.c clamped at 0, rounded step by
// step (no contraction: every caller, e.g. the seeding's pool Gram path, gets the same bits).
__device__ __forceinline__ float pair_distance(float norm_p, float norm_c, float dot) {
  const float dist = __fsub_rn(__fadd_rn(norm_p, norm_c), __fmul_rn(2.f, dot));
  return dist > 0.f ? dist : 0.f;
}

// One warp tile: pool rows rows[0..nr) (nr <= 8; lane group g loads rows[g]) against the
// n_a staged candidates; writes out[t * ld_out + r] for t < n_a, r < nr, where out_row[r]
// is pool row r's output (its position in the pool). kTwo: more than 8 candidates.
template <class T, bool kTwo>
__device__ __forceinline__ void mma_tile(const T* row, bool has_row, const T* s_cand, int n_a, std::int64_t d,
                                         bool vec, int lane, float* out, int nr, std::int64_t ld_out) {
  const int g = lane / 4, q = lane % 4;
  const std::int64_t stride = mma_cand_stride(d);
  const std::int64_t steps = (d + 31) / 32;
  // Accumulators (mma C fragments: rows g and g + 8, columns 2q and 2q + 1):
  float dot[4] = {0.f, 0.f, 0.f, 0.f};  // candidates x pool rows
  float pp[4] = {0.f, 0.f, 0.f, 0.f};   // pool rows x pool rows: the diagonal is |p|^2
  float cc[4] = {0.f, 0.f, 0.f, 0.f};   // candidates x candidates 0..7: diagonal |c|^2
  float ch[4] = {0.f, 0.f, 0.f, 0.f};   // candidates x candidates 8..15 (kTwo)
  const T* c_lo = s_cand + g * stride + q * 8;
  const T* c_hi = s_cand + (g + 8) * stride + q * 8;
  const bool lo_real = g < n_a, hi_real = kTwo && g + 8 < n_a;
  for (std::int64_t s0 = 0; s0 < steps; s0 += kMmaUnroll) {
    uint4 p[kMmaUnroll];
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u)
      p[u] = has_row && s0 + u < steps ? load8(row, (s0 + u) * 32 + q * 8, d, vec) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
      if (s0 + u < steps) {
        const std::int64_t j = (s0 + u) * 32;
        // Rows past n_a hold another group's candidates or nothing: zeros instead.
        const uint4 c0 = lo_real ? *reinterpret_cast<const uint4*>(c_lo + j) : make_uint4(0, 0, 0, 0);
        const uint4 c1 = hi_real ? *reinterpret_cast<const uint4*>(c_hi + j) : make_uint4(0, 0, 0, 0);
        const std::uint32_t ca[4] = {c0.x, c1.x, c0.y, c1.y}, cb[4] = {c0.z, c1.z, c0.w, c1.w};
        Half2Traits<T>::mma(dot, ca, p[u].x, p[u].y);
        Half2Traits<T>::mma(dot, cb, p[u].z, p[u].w);
        const std::uint32_t pa[4] = {p[u].x, 0u, p[u].y, 0u}, pb[4] = {p[u].z, 0u, p[u].w, 0u};
        Half2Traits<T>::mma(pp, pa, p[u].x, p[u].y);
        Half2Traits<T>::mma(pp, pb, p[u].z, p[u].w);
        Half2Traits<T>::mma(cc, ca, c0.x, c0.y);
        Half2Traits<T>::mma(cc, cb, c0.z, c0.w);
        if (kTwo) {
          Half2Traits<T>::mma(ch, ca, c1.x, c1.y);
          Half2Traits<T>::mma(ch, cb, c1.z, c1.w);
        }
      }
    }
  }
  // Diagonals: row r's square sits in element r % 2 of lane 4 r + r / 2 (pp: pool row r; cc:
  // candidate r; ch: candidate r + 8 in the second row half, elements 2 + r % 2).
  const bool odd = (g & 1) != 0;
  const int diag = 4 * g + g / 2;
  const float n_c0 = __shfl_sync(0xffffffffu, odd ? cc[1] : cc[0], diag);
  const float n_c1 = __shfl_sync(0xffffffffu, odd ? ch[3] : ch[2], diag);
  const float mine = odd ? pp[1] : pp[0];
  const float n_p0 = __shfl_sync(0xffffffffu, mine, 4 * (2 * q) + q);
  const float n_p1 = __shfl_sync(0xffffffffu, mine, 4 * (2 * q + 1) + q);
  auto put = [&](int t, int r, float norm_c, float norm_p, float v) {
    if (t < n_a && r < nr) out[static_cast<std::int64_t>(t) * ld_out + r] = pair_distance(norm_p, norm_c, v);
  };
  put(g, 2 * q, n_c0, n_p0, dot[0]);
  put(g, 2 * q + 1, n_c0, n_p1, dot[1]);
  if (kTwo) {
    put(g + 8, 2 * q, n_c1, n_p0, dot[2]);
    put(g + 8, 2 * q + 1, n_c1, n_p1, dot[3]);
  }
}

}  // namespace megatax::cuda::detail
