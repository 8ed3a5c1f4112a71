// Pool Gram matrices for k-means++ seeding (megatax/cuda.h, pool_gram): every pair of a
// pool's rows, p_t . p_i, as the same f32 sum row_distances' tensor-core tile forms for a
// candidate t and a pool row i (row_distances_mma.cuh's mma_tile), so that seeding rounds
// read a few Gram rows instead of the whole pool.
//
// What makes the bits equal: each dot is accumulated by mma.sync m16n8k16 over the same
// k steps in the same order, with every element in the same k slot. mma_tile loads, per
// 32-element step s, 16 bytes of a row at element 32 s + 8 q (q = lane % 4) and issues two
// mmas: the A fragment {row g: x, row g+8: x, row g: y, row g+8: y} against B {x, y}, then
// the same with z, w. Here both operands come from shared memory in the same 16-byte units
// and the same two mmas per step, for every (A row, B row) pair of a 128 x 128 block tile.
// An output element depends only on its own A row, B column and accumulator, so its place
// in the tile does not matter (the kernel test checks the bits against row_distances).
//
// Cost per group of m rows: about m^2 d flops (mma.sync; the tiles on and above the
// diagonal, each block's two 128-row slices of the pool read from L2 once) and 4 m^2 bytes
// written. The mirrored half relies on the mma summing a_k b_k and b_k a_k alike (exact
// products in the same k slots): the kernel test checks the bits against row_distances,
// whose candidates sit in the A operand.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/gemm_core.cuh"
#include "kernels/cuda/launch.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {
namespace {

constexpr int kGramThreads = 256;  // 8 warps: 2 along A (64 rows each) x 4 along B (32 rows)
constexpr int kGramTile = 128;     // pool rows per block side
constexpr int kGramChunk = 64;     // elements per shared-memory stage: two 32-element steps
constexpr int kGramUnits = kGramChunk / 8;  // 16-byte units per staged row
constexpr int kGramStages = 2;
constexpr int kTileUnits = kGramTile * kGramUnits;
constexpr std::size_t kGramSmem = std::size_t{2} * kGramStages * kTileUnits * 16;  // 64 KiB

// Where unit u of staged row r sits: u ^ 4 in odd rows, so that a 16-byte read phase (8
// lanes: two rows, four units each) hits all 32 banks once.
__device__ __forceinline__ int unit_at(int r, int u) { return r * kGramUnits + (u ^ ((r & 1) << 2)); }

// Block (bx, by, g): Gram tile rows [128 by, +128) x columns [128 bx, +128) of group g, and
// its mirror image.
template <class T>
__global__ void __launch_bounds__(kGramThreads, 2)
    pool_gram_kernel(const T* x, std::int64_t ld, std::int64_t d, const std::int64_t* b, const std::int64_t* b_begin,
                     const std::int64_t* gram_begin, float* gram, float* norms) {
  extern __shared__ uint4 smem[];
  uint4* s_a = smem;
  uint4* s_b = smem + kGramStages * kTileUnits;
  const std::int64_t g = blockIdx.z;
  const std::int64_t first = b_begin[g], m = b_begin[g + 1] - first;
  const std::int64_t a0 = static_cast<std::int64_t>(blockIdx.y) * kGramTile;
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.x) * kGramTile;
  // The matrix is symmetric: tiles on and above the diagonal are computed, each off the
  // diagonal written twice (p_i . p_t and p_t . p_i are the same sum of the same products).
  if (a0 >= m || c0 >= m || blockIdx.y > blockIdx.x) return;
  const bool mirror = blockIdx.y < blockIdx.x;
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int gq = lane / 4, q = lane % 4;

  // Loads: thread tid copies unit tid % 8 of staged rows tid / 8 + 32 j (j < 4) of both tiles
  // (zeros past the pool or past d).
  const int lu = tid % kGramUnits, lr = tid / kGramUnits;
  const T* a_row[4];
  const T* b_row[4];
  bool a_ok[4], b_ok[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const std::int64_t ra = a0 + lr + 32 * j, rb = c0 + lr + 32 * j;
    a_ok[j] = ra < m;
    b_ok[j] = rb < m;
    a_row[j] = x + (a_ok[j] ? b[first + ra] : b[first]) * ld;
    b_row[j] = x + (b_ok[j] ? b[first + rb] : b[first]) * ld;
  }
  const std::int64_t steps = (d + 31) / 32;
  const std::int64_t chunks = (steps + 1) / 2;
  auto load = [&](std::int64_t c, int stage) {
    const std::int64_t e = c * kGramChunk + lu * 8;
    const bool in_d = e < d;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int r = lr + 32 * j;
      cp_async_16(s_a + stage * kTileUnits + unit_at(r, lu), a_row[j] + (in_d ? e : 0), a_ok[j] && in_d);
      cp_async_16(s_b + stage * kTileUnits + unit_at(r, lu), b_row[j] + (in_d ? e : 0), b_ok[j] && in_d);
    }
    cp_async_commit();
  };

  const int wa = (warp / 4) * 64, wb = (warp % 4) * 32;
  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  load(0, 0);
  for (std::int64_t c = 0; c < chunks; ++c) {
    if (c + 1 < chunks) {
      load(c + 1, static_cast<int>((c + 1) & 1));
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint4* sa = s_a + (c & 1) * kTileUnits;
    const uint4* sb = s_b + (c & 1) * kTileUnits;
#pragma unroll
    for (int s2 = 0; s2 < 2; ++s2) {
      if (2 * c + s2 < steps) {  // mma_tile issues no mma past the last step
        const int u = 4 * s2 + q;
        uint4 fb[4];
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) fb[ni] = sb[unit_at(wb + 8 * ni + gq, u)];
        // A fragments one 16-row slice at a time (registers: two blocks fit an SM).
#pragma unroll
        for (int mi = 0; mi < 4; ++mi) {
          const uint4 lo = sa[unit_at(wa + 16 * mi + gq, u)], hi = sa[unit_at(wa + 16 * mi + 8 + gq, u)];
          const std::uint32_t ca[4] = {lo.x, hi.x, lo.y, hi.y}, cb[4] = {lo.z, hi.z, lo.w, hi.w};
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) Half2Traits<T>::mma(acc[mi][ni], ca, fb[ni].x, fb[ni].y);
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) Half2Traits<T>::mma(acc[mi][ni], cb, fb[ni].z, fb[ni].w);
        }
      }
    }
    __syncthreads();  // the stage is refilled next
  }

  // C fragment: elements 0, 1 at (A row gq, B rows 2q, 2q + 1); 2, 3 at A row gq + 8.
  float* out = gram + gram_begin[g];
#pragma unroll
  for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const std::int64_t t = a0 + wa + 16 * mi + 8 * h + gq;
      if (t >= m) continue;
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const std::int64_t i = c0 + wb + 8 * ni + 2 * q + e;
          if (i >= m) continue;
          const float v = acc[mi][ni][2 * h + e];
          out[t * m + i] = v;
          if (mirror) out[i * m + t] = v;  // 8 lanes: 32 consecutive bytes of a row
          if (t == i) norms[first + i] = v;
        }
      }
    }
  }
}

template <class T>
void launch_gram(const PoolGramArgs& a, cudaStream_t stream) {
  MEGATAX_CUDA_CHECK(cudaFuncSetAttribute(pool_gram_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(kGramSmem)));
  const auto tiles = static_cast<unsigned>((a.max_m + kGramTile - 1) / kGramTile);
  const dim3 grid(tiles, tiles, static_cast<unsigned>(a.groups));
  pool_gram_kernel<T><<<grid, kGramThreads, kGramSmem, stream>>>(static_cast<const T*>(a.x.data), a.x.stride,
                                                                    a.x.dim, a.b, a.b_begin, a.gram_begin, a.gram,
                                                                    a.norms);
  MEGATAX_CUDA_CHECK_LAUNCH("pool_gram_kernel");
}

}  // namespace
}  // namespace detail

bool pool_gram_supported(const Resources& res, const MatrixView& x) {
  return (x.dtype == DType::kF16 || x.dtype == DType::kBF16) && x.dim >= 1 && detail::vector_aligned(x) &&
         detail::row_distances_use_mma(x, res.max_smem_per_block()) && res.max_smem_per_block() >= detail::kGramSmem;
}

void pool_gram(Resources& res, const PoolGramArgs& a) {
  detail::validate_device_view(a.x, "pool_gram: x");
  if (!pool_gram_supported(res, a.x))
    throw Error(ErrorCode::kInvalidArgument, std::string("pool_gram: ") + detail::dtype_label(a.x.dtype) + " x " +
                                                 std::to_string(a.x.dim) +
                                                 " rows are not served (16-bit rows on tensor cores, 16-byte aligned)");
  if (a.groups < 1 || a.groups > 65535 || a.max_m < 0)
    throw Error(ErrorCode::kInvalidArgument, "pool_gram: groups = " + std::to_string(a.groups) + ", max_m = " +
                                                 std::to_string(a.max_m) + " (expected 1..65535 groups, max_m >= 0)");
  if (a.max_m == 0) return;
  if (a.b == nullptr || a.b_begin == nullptr || a.gram_begin == nullptr || a.gram == nullptr || a.norms == nullptr)
    throw Error(ErrorCode::kInvalidArgument, "pool_gram: a device array is null");
  res.activate();
  const auto stream = static_cast<cudaStream_t>(res.stream());
  if (a.x.dtype == DType::kF16) {
    detail::launch_gram<__half>(a, stream);
  } else {
    detail::launch_gram<__nv_bfloat16>(a, stream);
  }
}

}  // namespace megatax::cuda
