// Row distances for k-means++ seeding: a few candidate rows of x against a pool of rows of x.
// 16-bit rows (d <= kMmaMaxD): tensor cores (row_distances_mma.cuh: |p|^2 + |c|^2 - 2 p.c,
// every term an mma sum, so a row's distance to itself is exactly 0), one warp per 8 pool
// rows, the candidates staged in shared memory. f32 rows (and wider 16-bit ones): FFMA on
// the differences, one warp per pool row; the plain kernels fetch the candidates' elements
// through L1 in each warp; the grouped one stages them in shared memory per block of pool
// rows (when max_n_a * d floats fit). The pool is read once per call (n_b * d elements).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/element.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/row_distances_mma.cuh"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;
constexpr int kMaxCand = static_cast<int>(kMaxRowDistanceCandidates);

// The group of pool entry i: the last g with b_begin[g] <= i (b_begin ascending, b_begin[0] = 0).
__device__ __forceinline__ std::int64_t group_of(const std::int64_t* b_begin, std::int64_t groups, std::int64_t i) {
  std::int64_t lo = 0, hi = groups;
  while (hi - lo > 1) {
    const std::int64_t mid = (lo + hi) / 2;
    if (b_begin[mid] <= i) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Pool entries [r0, r1) of a block, cut where groups change: fn(g, g_begin, g_end, s0, s1,
// na) for each piece [s0, s1) of group g (its entries [g_begin, g_end)) with na = n_a[g] > 0
// candidates, after a barrier (the previous piece's warps are done with the staged
// candidates). Every thread of the block calls it.
template <class Fn>
__device__ __forceinline__ void for_each_group_piece(const std::int64_t* b_begin, std::int64_t groups,
                                                     const std::int32_t* n_a, std::int64_t r0, std::int64_t r1,
                                                     Fn&& fn) {
  std::int64_t g = group_of(b_begin, groups, r0);
  for (std::int64_t s0 = r0; s0 < r1;) {
    while (b_begin[g + 1] <= s0) ++g;  // empty groups
    const std::int64_t g_begin = b_begin[g], g_end = b_begin[g + 1];
    const std::int64_t s1 = g_end < r1 ? g_end : r1;
    const int na = n_a[g];
    if (na > 0) {
      __syncthreads();
      fn(g, g_begin, g_end, s0, s1, na);
    }
    s0 = s1;
  }
}

// One warp: the distances from `row` to the n_a candidate rows, written to out[t * ld_out]
// by lane t. Each lane sums its elements for every candidate (with `vec`, 16-byte pieces
// of consecutive elements, 32 pieces apart; else single elements, 32 apart), then the warp
// folds the lanes (butterfly): a fixed order for given (d, n_a, vec), whichever kernel calls
// it. `vec` requires 16-byte aligned rows and d a multiple of 16 / sizeof(T).
template <class T>
__device__ __forceinline__ void warp_row_distances(const T* row, const T* const (&cand)[kMaxCand],
                                                   int n_a, std::int64_t d, bool vec, int lane,
                                                   float* out, std::int64_t ld_out) {
  constexpr int kVec = 16 / sizeof(T);
  float acc[kMaxCand];
#pragma unroll
  for (int t = 0; t < kMaxCand; ++t) acc[t] = 0.f;
  if (vec) {
    union Piece {
      uint4 u;
      T e[kVec];
    };
    for (std::int64_t j = static_cast<std::int64_t>(lane) * kVec; j < d; j += 32 * kVec) {
      Piece r;
      r.u = *reinterpret_cast<const uint4*>(row + j);
      float v[kVec];
#pragma unroll
      for (int e = 0; e < kVec; ++e) v[e] = to_f32(r.e[e]);
#pragma unroll
      for (int t = 0; t < kMaxCand; ++t) {
        if (t < n_a) {
          Piece c;
          c.u = __ldg(reinterpret_cast<const uint4*>(cand[t] + j));
#pragma unroll
          for (int e = 0; e < kVec; ++e) {
            const float diff = v[e] - to_f32(c.e[e]);
            acc[t] = fmaf(diff, diff, acc[t]);
          }
        }
      }
    }
  } else {
    for (std::int64_t j = lane; j < d; j += 32) {
      const float v = to_f32(row[j]);
#pragma unroll
      for (int t = 0; t < kMaxCand; ++t) {
        if (t < n_a) {
          const float diff = v - to_f32(__ldg(cand[t] + j));
          acc[t] = fmaf(diff, diff, acc[t]);
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kMaxCand; ++t) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
  }
  if (lane < n_a) {
    float v = acc[0];
#pragma unroll
    for (int t = 1; t < kMaxCand; ++t)
      if (lane == t) v = acc[t];
    out[static_cast<std::int64_t>(lane) * ld_out] = v;
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    row_distances_kernel(const T* x, std::int64_t ld, std::int64_t d, bool vec, const std::int64_t* a,
                         int n_a, const std::int64_t* b, std::int64_t n_b, float* out) {
  const int lane = threadIdx.x % 32;
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (i >= n_b) return;
  const T* row = x + (b != nullptr ? b[i] : i) * ld;
  const T* cand[kMaxCand];
#pragma unroll
  for (int t = 0; t < kMaxCand; ++t) cand[t] = t < n_a ? x + a[t] * ld : row;
  warp_row_distances(row, cand, n_a, d, vec, lane, out + i, n_b);
}

// Grouped: warp i serves pool entry b[i] of group g (found by binary search in b_begin).
template <class T>
__global__ void __launch_bounds__(kThreads)
    grouped_row_distances_kernel(const T* x, std::int64_t ld, std::int64_t d, bool vec, std::int64_t groups,
                                 const std::int64_t* b, const std::int64_t* b_begin, std::int64_t n_b,
                                 const std::int64_t* a, const std::int32_t* n_a,
                                 const std::int64_t* out_begin, float* out) {
  const int lane = threadIdx.x % 32;
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (i >= n_b) return;
  const std::int64_t g = group_of(b_begin, groups, i);
  const int na = n_a[g];
  if (na == 0) return;
  const std::int64_t m = b_begin[g + 1] - b_begin[g];
  const T* row = x + b[i] * ld;
  const T* cand[kMaxCand];
#pragma unroll
  for (int t = 0; t < kMaxCand; ++t) cand[t] = t < na ? x + a[g * kMaxCand + t] * ld : row;
  warp_row_distances(row, cand, na, d, vec, lane, out + out_begin[g] + (i - b_begin[g]), m);
}

// ---- grouped, candidates staged in shared memory ------------------------------------------
// Block blk serves pool entries [blk * kStagedRows, +kStagedRows), group segment by group
// segment; per segment the group's candidates are converted to f32 into shared memory once,
// and each warp computes kStagedRowsPerWarp pool rows at a time, so that every candidate
// value read from shared memory serves that many rows (one row at a time, shared-memory
// bandwidth bounded the kernel). Each (row, candidate) sum is formed exactly as in
// warp_row_distances (the same lanes, elements, order and butterfly): the same bits.
constexpr int kStagedRows = 128;
constexpr int kStagedRowsPerWarp = 4;

// Where element j of a staged candidate sits. 16-bit rows with `vec`: a lane's 8 elements
// j = 256 p + 8 lane + 4 q + e are stored at 256 p + 128 q + 4 lane + e, so that a warp's
// 16-byte reads of one q are consecutive (no bank conflicts); the row stride is d rounded up
// to 256. Otherwise in place.
template <class T>
__device__ __forceinline__ std::int64_t staged_pos(std::int64_t j, bool vec) {
  if (sizeof(T) == 2 && vec) return (j & ~std::int64_t{255}) | ((j & 4) << 5) | ((j & 248) >> 1) | (j & 3);
  return j;
}
template <class T>
__host__ __device__ std::int64_t staged_stride(std::int64_t d, bool vec) {
  return sizeof(T) == 2 && vec ? (d + 255) / 256 * 256 : d;
}

// Up to kR pool rows (nr of them) against the n_a staged candidates (cand[t * ldc + pos]).
template <class T, int kA, int kR>
__device__ __forceinline__ void warp_rows_staged(const T* const (&rows)[kR], int nr, const float* cand,
                                                 std::int64_t ldc, int n_a, std::int64_t d, bool vec, int lane,
                                                 float* const (&out)[kR], std::int64_t ld_out) {
  constexpr int kVec = 16 / sizeof(T);
  float acc[kR][kA];
#pragma unroll
  for (int r = 0; r < kR; ++r)
#pragma unroll
    for (int t = 0; t < kA; ++t) acc[r][t] = 0.f;
  if (vec) {
    union Piece {
      uint4 u;
      T e[kVec];
    };
    for (std::int64_t j = static_cast<std::int64_t>(lane) * kVec; j < d; j += 32 * kVec) {
      float v[kR][kVec];
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        Piece p;
        p.u = r < nr ? *reinterpret_cast<const uint4*>(rows[r] + j) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int e = 0; e < kVec; ++e) v[r][e] = to_f32(p.e[e]);
      }
      // This lane's kVec candidate elements: kVec / 4 aligned float4s (staged_pos).
      const std::int64_t base = staged_pos<T>(j, true);
#pragma unroll
      for (int t = 0; t < kA; ++t) {
        if (t < n_a) {
#pragma unroll
          for (int q = 0; q < kVec / 4; ++q) {
            const float4 c = *reinterpret_cast<const float4*>(cand + t * ldc + base + q * 128);
            const float cv[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
            for (int r = 0; r < kR; ++r)
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const float diff = v[r][q * 4 + e] - cv[e];
                acc[r][t] = fmaf(diff, diff, acc[r][t]);
              }
          }
        }
      }
    }
  } else {
    for (std::int64_t j = lane; j < d; j += 32) {
      float v[kR];
#pragma unroll
      for (int r = 0; r < kR; ++r) v[r] = r < nr ? to_f32(rows[r][j]) : 0.f;
#pragma unroll
      for (int t = 0; t < kA; ++t) {
        if (t < n_a) {
          const float c = cand[t * ldc + j];
#pragma unroll
          for (int r = 0; r < kR; ++r) {
            const float diff = v[r] - c;
            acc[r][t] = fmaf(diff, diff, acc[r][t]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kR; ++r) {
#pragma unroll
    for (int t = 0; t < kA; ++t) {
#pragma unroll
      for (int o = 16; o > 0; o /= 2) acc[r][t] += __shfl_xor_sync(0xffffffffu, acc[r][t], o);
    }
    if (r < nr && lane < n_a) {
      float v = acc[r][0];
#pragma unroll
      for (int t = 1; t < kA; ++t)
        if (lane == t) v = acc[r][t];
      out[r][static_cast<std::int64_t>(lane) * ld_out] = v;
    }
  }
}

template <class T, int kA>
__global__ void __launch_bounds__(kThreads)
    grouped_row_distances_staged_kernel(const T* x, std::int64_t ld, std::int64_t d, bool vec,
                                        std::int64_t groups, const std::int64_t* b,
                                        const std::int64_t* b_begin, std::int64_t n_b, const std::int64_t* a,
                                        const std::int32_t* n_a, const std::int64_t* out_begin, float* out) {
  extern __shared__ float4 s_cand4[];
  auto* s_cand = reinterpret_cast<float*>(s_cand4);
  constexpr int kR = kStagedRowsPerWarp;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const std::int64_t ldc = staged_stride<T>(d, vec);
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.x) * kStagedRows;
  const std::int64_t r1 = r0 + kStagedRows < n_b ? r0 + kStagedRows : n_b;
  for_each_group_piece(b_begin, groups, n_a, r0, r1, [&](std::int64_t g, std::int64_t g_begin, std::int64_t g_end,
                                                          std::int64_t s0, std::int64_t s1, int na) {
    for (int t = 0; t < na; ++t) {
      const T* c = x + a[g * kMaxCand + t] * ld;
      for (std::int64_t j = threadIdx.x; j < d; j += kThreads) s_cand[t * ldc + staged_pos<T>(j, vec)] = to_f32(c[j]);
    }
    __syncthreads();
    for (std::int64_t i = s0 + static_cast<std::int64_t>(warp) * kR; i < s1; i += kRowsPerBlock * kR) {
      const int nr = static_cast<int>(s1 - i < kR ? s1 - i : kR);
      const T* rows[kR];
      float* outs[kR];
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const std::int64_t ir = r < nr ? i + r : i;
        rows[r] = x + b[ir] * ld;
        outs[r] = out + out_begin[g] + (ir - g_begin);
      }
      warp_rows_staged<T, kA, kR>(rows, nr, s_cand, ldc, na, d, vec, lane, outs, g_end - g_begin);
    }
  });
}

// ---- 16-bit rows on tensor cores ----------------------------------------------------------
constexpr int kMmaBlockRows = 256;  // pool rows per block (32 warp tiles of 8)

// Plain: block blk serves pool entries [blk * kMmaBlockRows, +kMmaBlockRows) against the n_a
// candidates a[t].
template <class T, bool kTwo>
__global__ void __launch_bounds__(kThreads)
    row_distances_mma_kernel(const T* x, std::int64_t ld, std::int64_t d, bool vec, const std::int64_t* a,
                             int n_a, const std::int64_t* b, std::int64_t n_b, float* out) {
  extern __shared__ uint4 s_mem[];
  T* s_cand = reinterpret_cast<T*>(s_mem);
  mma_stage_candidates(x, ld, d, vec, a, n_a, s_cand);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.x) * kMmaBlockRows;
  const std::int64_t r1 = r0 + kMmaBlockRows < n_b ? r0 + kMmaBlockRows : n_b;
  for (std::int64_t i = r0 + static_cast<std::int64_t>(warp) * kMmaTileRows; i < r1;
       i += kRowsPerBlock * kMmaTileRows) {
    const int nr = static_cast<int>(r1 - i < kMmaTileRows ? r1 - i : kMmaTileRows);
    const int mine = lane / 4;
    const std::int64_t ir = i + (mine < nr ? mine : 0);
    const T* row = x + (b != nullptr ? b[ir] : ir) * ld;
    mma_tile<T, kTwo>(row, mine < nr, s_cand, n_a, d, vec, lane, out + i, nr, n_b);
  }
}

// Grouped: block blk serves pool entries [blk * kMmaBlockRows, +kMmaBlockRows), group
// segment by group segment (each segment stages its group's candidates).
template <class T, bool kTwo>
__global__ void __launch_bounds__(kThreads)
    grouped_row_distances_mma_kernel(const T* x, std::int64_t ld, std::int64_t d, bool vec, std::int64_t groups,
                                     const std::int64_t* b, const std::int64_t* b_begin, std::int64_t n_b,
                                     const std::int64_t* a, const std::int32_t* n_a,
                                     const std::int64_t* out_begin, float* out) {
  extern __shared__ uint4 s_mem[];
  T* s_cand = reinterpret_cast<T*>(s_mem);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.x) * kMmaBlockRows;
  const std::int64_t r1 = r0 + kMmaBlockRows < n_b ? r0 + kMmaBlockRows : n_b;
  for_each_group_piece(b_begin, groups, n_a, r0, r1, [&](std::int64_t g, std::int64_t g_begin, std::int64_t g_end,
                                                          std::int64_t s0, std::int64_t s1, int na) {
    mma_stage_candidates(x, ld, d, vec, a + g * kMaxCand, na, s_cand);
    float* g_out = out + out_begin[g] - g_begin;  // + pool entry i: its column
    for (std::int64_t i = s0 + static_cast<std::int64_t>(warp) * kMmaTileRows; i < s1;
         i += kRowsPerBlock * kMmaTileRows) {
      const int nr = static_cast<int>(s1 - i < kMmaTileRows ? s1 - i : kMmaTileRows);
      const int mine = lane / 4;
      const T* row = x + b[i + (mine < nr ? mine : 0)] * ld;
      mma_tile<T, kTwo>(row, mine < nr, s_cand, na, d, vec, lane, g_out + i, nr, g_end - g_begin);
    }
  });
}

// Lets `kernel` launch with `smem` bytes of dynamic shared memory (above 48 KiB a kernel
// must opt in).
template <class Kernel>
void allow_dynamic_smem(Kernel kernel, std::size_t smem) {
  if (smem > 48 * 1024)
    MEGATAX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
}

template <class T>
void launch_mma(const RowDistanceArgs& r, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>((r.n_b + kMmaBlockRows - 1) / kMmaBlockRows);
  const std::size_t smem = mma_smem_bytes(r.x.dim, r.n_a);
  auto run = [&](auto kernel) {
    allow_dynamic_smem(kernel, smem);
    kernel<<<blocks, kThreads, smem, stream>>>(static_cast<const T*>(r.x.data), r.x.stride, r.x.dim,
                                               vector_aligned(r.x), r.a, static_cast<int>(r.n_a), r.b, r.n_b,
                                               r.out);
  };
  if (r.n_a > 8) {
    run(row_distances_mma_kernel<T, true>);
  } else {
    run(row_distances_mma_kernel<T, false>);
  }
  MEGATAX_CUDA_CHECK_LAUNCH("row_distances_mma_kernel");
}

template <class T>
void launch_grouped_mma(const GroupedRowDistanceArgs& r, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>((r.n_b + kMmaBlockRows - 1) / kMmaBlockRows);
  const std::size_t smem = mma_smem_bytes(r.x.dim, r.max_n_a);
  auto run = [&](auto kernel) {
    allow_dynamic_smem(kernel, smem);
    kernel<<<blocks, kThreads, smem, stream>>>(static_cast<const T*>(r.x.data), r.x.stride, r.x.dim,
                                               vector_aligned(r.x), r.groups, r.b, r.b_begin, r.n_b, r.a, r.n_a,
                                               r.out_begin, r.out);
  };
  if (r.max_n_a > 8) {
    run(grouped_row_distances_mma_kernel<T, true>);
  } else {
    run(grouped_row_distances_mma_kernel<T, false>);
  }
  MEGATAX_CUDA_CHECK_LAUNCH("grouped_row_distances_mma_kernel");
}

template <class T, int kA>
void launch_staged(const GroupedRowDistanceArgs& r, std::size_t smem, cudaStream_t stream) {
  allow_dynamic_smem(grouped_row_distances_staged_kernel<T, kA>, smem);
  const auto blocks = static_cast<unsigned>((r.n_b + kStagedRows - 1) / kStagedRows);
  grouped_row_distances_staged_kernel<T, kA><<<blocks, kThreads, smem, stream>>>(
      static_cast<const T*>(r.x.data), r.x.stride, r.x.dim, vector_aligned(r.x), r.groups, r.b, r.b_begin, r.n_b,
      r.a, r.n_a, r.out_begin, r.out);
  MEGATAX_CUDA_CHECK_LAUNCH("grouped_row_distances_staged_kernel");
}

template <class T>
void launch(const RowDistanceArgs& r, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>((r.n_b + kRowsPerBlock - 1) / kRowsPerBlock);
  row_distances_kernel<T><<<blocks, kThreads, 0, stream>>>(
      static_cast<const T*>(r.x.data), r.x.stride, r.x.dim, vector_aligned(r.x), r.a, static_cast<int>(r.n_a), r.b,
      r.n_b, r.out);
  MEGATAX_CUDA_CHECK_LAUNCH("row_distances_kernel");
}

template <class T>
void launch_grouped(const GroupedRowDistanceArgs& r, std::size_t max_smem, cudaStream_t stream) {
  const std::size_t smem = static_cast<std::size_t>(r.max_n_a) *
                           static_cast<std::size_t>(staged_stride<T>(r.x.dim, vector_aligned(r.x))) * sizeof(float);
  if (smem <= max_smem) {
    if (r.max_n_a <= 8) {
      launch_staged<T, 8>(r, smem, stream);
    } else {
      launch_staged<T, kMaxCand>(r, smem, stream);
    }
    return;
  }
  const auto blocks = static_cast<unsigned>((r.n_b + kRowsPerBlock - 1) / kRowsPerBlock);
  grouped_row_distances_kernel<T><<<blocks, kThreads, 0, stream>>>(
      static_cast<const T*>(r.x.data), r.x.stride, r.x.dim, vector_aligned(r.x), r.groups, r.b, r.b_begin,
      r.n_b, r.a,
      r.n_a, r.out_begin, r.out);
  MEGATAX_CUDA_CHECK_LAUNCH("grouped_row_distances_kernel");
}

}  // namespace

// The tensor-core kernels serve 16-bit rows up to kMmaMaxD wide where a block's shared
// memory holds 16 staged candidates of that width (both the plain and the grouped form
// decide alike, so their bits agree), unless MEGATAX_CUDA_ROW_DIST=ffma (read per launch:
// benchmarks flip it).
static_assert(kMmaMaxCand == kMaxCand, "the mma tiles hold every candidate of a launch");
bool row_distances_use_mma(const MatrixView& x, std::size_t max_smem) {
  if (x.dtype != DType::kF16 && x.dtype != DType::kBF16) return false;
  if (x.dim > kMmaMaxD || mma_smem_bytes(x.dim, kMmaMaxCand) > max_smem) return false;
  const char* v = std::getenv("MEGATAX_CUDA_ROW_DIST");
  return v == nullptr || std::strcmp(v, "ffma") != 0;
}

}  // namespace detail

void row_distances(Resources& res, const RowDistanceArgs& r) {
  detail::validate_device_view(r.x, "row_distances: x");
  if (r.n_a < 1 || r.n_a > kMaxRowDistanceCandidates)
    throw Error(ErrorCode::kInvalidArgument, "row_distances: n_a = " + std::to_string(r.n_a) +
                                                 ", expected 1.." +
                                                 std::to_string(kMaxRowDistanceCandidates));
  if (r.n_b < 0)
    throw Error(ErrorCode::kInvalidArgument, "row_distances: n_b = " + std::to_string(r.n_b) + " < 0");
  if (r.a == nullptr) throw Error(ErrorCode::kInvalidArgument, "row_distances: a is null");
  if (r.b == nullptr && r.n_b > r.x.rows)
    throw Error(ErrorCode::kInvalidArgument, "row_distances: n_b = " + std::to_string(r.n_b) +
                                                 " rows without b, but x has " + std::to_string(r.x.rows));
  if (r.n_b > 0 && r.out == nullptr) throw Error(ErrorCode::kInvalidArgument, "row_distances: out is null");
  if (r.n_b == 0) return;
  res.activate();
  const auto stream = static_cast<cudaStream_t>(res.stream());
  switch (r.x.dtype) {
    case DType::kF32: detail::launch<float>(r, stream); break;
    case DType::kF16:
      if (detail::row_distances_use_mma(r.x, res.max_smem_per_block())) {
        detail::launch_mma<__half>(r, stream);
      } else {
        detail::launch<__half>(r, stream);
      }
      break;
    case DType::kBF16:
      if (detail::row_distances_use_mma(r.x, res.max_smem_per_block())) {
        detail::launch_mma<__nv_bfloat16>(r, stream);
      } else {
        detail::launch<__nv_bfloat16>(r, stream);
      }
      break;
    default: throw Error(ErrorCode::kInvalidArgument, "row_distances: unsupported dtype");
  }
}

}  // namespace megatax::cuda

namespace megatax::cuda {

void row_distances_grouped(Resources& res, const GroupedRowDistanceArgs& r) {
  detail::validate_device_view(r.x, "row_distances_grouped: x");
  if (r.groups < 1 || r.n_b < 0)
    throw Error(ErrorCode::kInvalidArgument, "row_distances_grouped: groups = " + std::to_string(r.groups) +
                                                 ", n_b = " + std::to_string(r.n_b) +
                                                 " (expected groups >= 1, n_b >= 0)");
  if (r.n_b == 0) return;
  if (r.b == nullptr || r.b_begin == nullptr || r.a == nullptr || r.n_a == nullptr ||
      r.out_begin == nullptr || r.out == nullptr)
    throw Error(ErrorCode::kInvalidArgument, "row_distances_grouped: a device array is null");
  if (r.max_n_a < 1 || r.max_n_a > kMaxRowDistanceCandidates)
    throw Error(ErrorCode::kInvalidArgument, "row_distances_grouped: max_n_a = " + std::to_string(r.max_n_a) +
                                                 ", expected 1.." + std::to_string(kMaxRowDistanceCandidates));
  res.activate();
  const auto stream = static_cast<cudaStream_t>(res.stream());
  const std::size_t smem = res.max_smem_per_block();
  switch (r.x.dtype) {
    case DType::kF32: detail::launch_grouped<float>(r, smem, stream); break;
    case DType::kF16:
      if (detail::row_distances_use_mma(r.x, res.max_smem_per_block())) {
        detail::launch_grouped_mma<__half>(r, stream);
      } else {
        detail::launch_grouped<__half>(r, smem, stream);
      }
      break;
    case DType::kBF16:
      if (detail::row_distances_use_mma(r.x, res.max_smem_per_block())) {
        detail::launch_grouped_mma<__nv_bfloat16>(r, stream);
      } else {
        detail::launch_grouped<__nv_bfloat16>(r, smem, stream);
      }
      break;
    default: throw Error(ErrorCode::kInvalidArgument, "row_distances_grouped: unsupported dtype");
  }
}

}  // namespace megatax::cuda
