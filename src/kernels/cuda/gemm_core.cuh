// kernels/cuda/gemm_core.cuh -- the tiled X * C^T main loop shared by assign and top-k.
//
// A thread block owns kBM rows of X (points / queries) and walks a range of kBN-column tiles
// of C (centroids / database rows). For each tile it accumulates the kBM x kBN dot products
// over d in kBK-wide chunks that a multi-stage cp.async pipeline brings into shared memory;
// when a tile's dot products are complete it hands the accumulators to an epilogue (argmin,
// top-k selection) and starts the next tile. The pipeline runs across tile boundaries, so
// small d (few chunks per tile) keeps the loads in flight too.
//
// Two cores fill the accumulators:
//   MmaCore<Policy, T>  tensor cores, f32 accumulation, operands from shared memory by
//                       ldmatrix (rows padded by 16 bytes, which makes ldmatrix conflict-free):
//                       f16/bf16 by mma.sync m16n8k16 (exact products);
//                       f32 by 3xTF32: each operand split into a tf32 "big" part (rounded to
//                       nearest) and the remainder, and a.b = big.big + big.small + small.big
//                       by three mma.sync m16n8k8 (the dropped small.small term and the
//                       remainders' truncation to tf32 leave ~2^-21 of |a||b| a product:
//                       f32-class accuracy at tensor-core speed). ldmatrix moves 32-bit
//                       elements as pairs of 16-bit ones: an 8 x 8 b16 matrix is an 8 x 4 f32
//                       one, laid out as the tf32 fragments want.
//   SimtCore<Policy>    f32 with FFMA (exact f32 arithmetic, no tf32).
// Both expose the same face to the epilogues: kRowSlots x kColSlots accumulators per thread,
// at(rs, cs), and the block-local row_of(rs) / col_of(cs); col_of is increasing in cs and
// columns 2j, 2j+1 are adjacent (so an epilogue visiting cs in order sees columns in order).
//
// Zero padding: rows past the operand's row count and columns past d are loaded as zeros,
// so padded dot products are 0; the epilogues mask columns past the column count.
//
// Internal header: compiled by nvcc only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/tf32.cuh"

namespace megatax::cuda::detail {

// ---- tile policies: every derived constant named ---------------------------------------

// Tensor-core policy. BM x BN block tile, BK-wide d chunks, WARPS_M x WARPS_N warps each
// owning a (BM / WARPS_M) x (BN / WARPS_N) warp tile of m16n8 fragments, STAGES-deep
// pipeline, MIN_BLOCKS resident blocks per SM asked of the register allocator; ELEM bytes an
// element (2: f16/bf16, k16 steps; 4: f32 as 3xTF32, k8 steps). A k step is 32 bytes of a
// row either way, a copy 16.
template <int BM, int BN, int BK, int WARPS_M, int WARPS_N, int STAGES, int MIN_BLOCKS = 1,
          int ELEM = 2>
struct MmaPolicy {
  static constexpr int kBM = BM;
  static constexpr int kBN = BN;
  static constexpr int kBK = BK;
  static constexpr int kWarpsM = WARPS_M;
  static constexpr int kWarpsN = WARPS_N;
  static constexpr int kStages = STAGES;
  static constexpr int kMinBlocks = MIN_BLOCKS;
  static constexpr int kWarps = kWarpsM * kWarpsN;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kWarpM = kBM / kWarpsM;         // rows per warp tile
  static constexpr int kWarpN = kBN / kWarpsN;         // columns per warp tile
  static constexpr int kElemBytes = ELEM;
  static constexpr int kMmaM = 16, kMmaN = 8, kMmaK = 32 / ELEM;
  static constexpr int kFragsM = kWarpM / kMmaM;       // m16 fragments per warp tile
  static constexpr int kFragsN = kWarpN / kMmaN;       // n8 fragments per warp tile
  static constexpr int kVec = 16 / ELEM;               // elements per 16-byte copy
  static constexpr int kVecsPerRow = kBK / kVec;       // 16-byte copies per tile row
  static constexpr int kLd = kBK + kVec;               // smem row pitch (elements), +16 bytes
  static constexpr int kStageElems = (kBM + kBN) * kLd;
  static constexpr int kSmemBytes = kStages * kStageElems * ELEM;

  static_assert(ELEM == 2 || ELEM == 4, "16-bit elements or f32");

  static_assert(kBM % (kWarpsM * kMmaM) == 0, "BM must split into m16 fragments per warp");
  static_assert(kBN % (kWarpsN * 16) == 0, "BN must split into pairs of n8 fragments");
  static_assert(kBK % kMmaK == 0, "BK must be a multiple of the k step");
  static_assert((kBM * kVecsPerRow) % kThreads == 0, "A tile copies must split evenly");
  static_assert((kBN * kVecsPerRow) % kThreads == 0, "B tile copies must split evenly");
  static_assert(kStages >= 2, "at least double buffering");
};

// FFMA policy: BM x BN block tile, BK-wide chunks, TY x TX threads each computing a
// (BM / TY) x (BN / TX) micro tile (4 or 8 a side; an 8-wide side is two groups of 4, the
// second half a tile away, so that a warp's float4 reads of a row stay conflict-free);
// operands stored transposed (d-major) in shared memory.
template <int BM, int BN, int BK, int TY, int TX, int STAGES, int MIN_BLOCKS = 2>
struct SimtPolicy {
  static constexpr int kBM = BM;
  static constexpr int kBN = BN;
  static constexpr int kBK = BK;
  static constexpr int kTY = TY;
  static constexpr int kTX = TX;
  static constexpr int kStages = STAGES;
  static constexpr int kMinBlocks = MIN_BLOCKS;
  static constexpr int kThreads = kTY * kTX;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kTM = kBM / kTY;  // rows per thread
  static constexpr int kTN = kBN / kTX;  // columns per thread
  static constexpr int kPad = 4;
  static constexpr int kLdA = kBM + kPad;  // smem pitch of the transposed A tile (floats)
  static constexpr int kLdB = kBN + kPad;
  static constexpr int kStageFloats = kBK * (kLdA + kLdB);
  static constexpr int kSmemBytes = kStages * kStageFloats * 4;

  static_assert((kTM == 4 || kTM == 8) && (kTN == 4 || kTN == 8),
                "micro tile sides are 4 or 8 (float4 shared loads)");
  static_assert(32 % kTX == 0 && kTX <= 32, "a row's threads must sit in one warp");
  static_assert((kBM * kBK) % kThreads == 0 && (kBN * kBK) % kThreads == 0, "even copies");
  static_assert(kThreads % kBK == 0, "copy mapping");
};

// The policies in use (instantiated in assign.cu / topk.cu). The MEGATAX_{ASSIGN,TOPK,TF32}_*
// macros exist for tuning runs only (e.g. nvcc -DMEGATAX_ASSIGN_BN=256); one value per macro
// because nvcc splits -D lists at commas.
#ifndef MEGATAX_ASSIGN_BM
#define MEGATAX_ASSIGN_BM 128
#endif
#ifndef MEGATAX_ASSIGN_BN
#define MEGATAX_ASSIGN_BN 128
#endif
#ifndef MEGATAX_ASSIGN_BK
#define MEGATAX_ASSIGN_BK 32
#endif
#ifndef MEGATAX_ASSIGN_WM
#define MEGATAX_ASSIGN_WM 2
#endif
#ifndef MEGATAX_ASSIGN_WN
#define MEGATAX_ASSIGN_WN 4
#endif
#ifndef MEGATAX_ASSIGN_STAGES
#define MEGATAX_ASSIGN_STAGES 4
#endif
#ifndef MEGATAX_ASSIGN_MINB
#define MEGATAX_ASSIGN_MINB 2
#endif
#ifndef MEGATAX_TOPK_BK
#define MEGATAX_TOPK_BK 32
#endif
#ifndef MEGATAX_TOPK_STAGES
#define MEGATAX_TOPK_STAGES 3
#endif
//   assign, f16/bf16: 128 x 128 x 32, 8 warps of 64 x 32, 4 stages (80 KiB smem, 2 blocks/SM)
using AssignMmaPolicy =
    MmaPolicy<MEGATAX_ASSIGN_BM, MEGATAX_ASSIGN_BN, MEGATAX_ASSIGN_BK, MEGATAX_ASSIGN_WM,
              MEGATAX_ASSIGN_WN, MEGATAX_ASSIGN_STAGES, MEGATAX_ASSIGN_MINB>;
//   top-k, f16/bf16: 64 x 128 x 32, 8 warps of 32 x 32, 3 stages (45 KiB + selection state)
using TopkMmaPolicy = MmaPolicy<64, 128, MEGATAX_TOPK_BK, 2, 4, MEGATAX_TOPK_STAGES, 1>;
//   f32 (assign and top-k): 64 x 64 x 16, 16 x 16 threads of 4 x 4, 3 stages (26 KiB)
using F32SimtPolicy = SimtPolicy<64, 64, 16, 16, 16, 3>;
//   f32 flat assign and top-k of many queries: 128 x 128 x 16, 16 x 16 threads of 8 x 8,
//   4 stages (66 KiB): 64 FFMA per 64 bytes of shared-memory reads a thread (4 x 4: 16 per
//   32). BK 16 / 4 stages measured 4-13% faster than 8 / 3 (bench_cuda, H100).
#ifndef MEGATAX_F32_WIDE_BK
#define MEGATAX_F32_WIDE_BK 16
#endif
#ifndef MEGATAX_F32_WIDE_STAGES
#define MEGATAX_F32_WIDE_STAGES 4
#endif
using F32SimtWidePolicy =
    SimtPolicy<128, 128, MEGATAX_F32_WIDE_BK, 16, 16, MEGATAX_F32_WIDE_STAGES, 2>;
//   f32 as 3xTF32 (MmaCore<..., float>), tiles of the 16-bit ones' bytes (BK 16 floats = 64
//   bytes a row): top-k 64 x 128 x 16, 8 warps of 32 x 32, 3 stages, two blocks an SM; for
//   d >= kTopkTf32WideD 128 x 128 x 16, 8 warps of 64 x 32 (fewer splits an MMA; one block an
//   SM: at d = 128 the selection, not the MMAs, limits, and two blocks win); assign
//   128 x 128 x 16, 4 stages, two blocks an SM. Measured on an H100 (session 28): 4 top-k
//   stages (one block an SM at d = 128) 1.8x slower at D=128, the same at D=1024; assign
//   with BK 32 and 3 stages 1.25x slower.
#ifndef MEGATAX_TF32_TOPK_STAGES
#define MEGATAX_TF32_TOPK_STAGES 3
#endif
#ifndef MEGATAX_TF32_ASSIGN_BK
#define MEGATAX_TF32_ASSIGN_BK 16
#endif
#ifndef MEGATAX_TF32_ASSIGN_STAGES
#define MEGATAX_TF32_ASSIGN_STAGES 4
#endif
using TopkTf32Policy = MmaPolicy<64, 128, 16, 2, 4, MEGATAX_TF32_TOPK_STAGES, 1, 4>;
using TopkTf32WidePolicy = MmaPolicy<128, 128, 16, 2, 4, MEGATAX_TF32_TOPK_STAGES, 1, 4>;
#ifndef MEGATAX_TF32_TOPK_WIDE_D
#define MEGATAX_TF32_TOPK_WIDE_D 512
#endif
constexpr std::int64_t kTopkTf32WideD = MEGATAX_TF32_TOPK_WIDE_D;
using AssignTf32Policy = MmaPolicy<128, 128, MEGATAX_TF32_ASSIGN_BK, 2, 4,
                                   MEGATAX_TF32_ASSIGN_STAGES, 2, 4>;
//   top-k of at most 16 queries (memory-bound: the database is read once, and a 64-row query
//   tile would spend 4x the multiply-adds on padding): 16 x 128 tiles.
//   f16/bf16: 16 x 128 x 64, 4 warps of 16 x 32, 3 stages (62 KiB + selection state)
using TopkMmaSmallQPolicy = MmaPolicy<16, 128, 64, 1, 4, 3, 1>;
//   f32: 16 x 128 x 16, 4 x 32 threads of 4 x 4, 3 stages (29 KiB)
using F32SimtSmallQPolicy = SimtPolicy<16, 128, 16, 4, 32, 3>;

// ---- PTX helpers ----------------------------------------------------------------------------

__device__ __forceinline__ std::uint32_t smem_u32(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy global -> shared; copies zeros when !pred (src is not read then).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool pred) {
  const int bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)),
               "l"(gmem), "r"(bytes)
               : "memory");
}

// 4-byte async copy global -> shared; zeros when !pred.
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool pred) {
  const int bytes = pred ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(smem)),
               "l"(gmem), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem))
               : "memory");
}

// 16-bit element traits: the mma instruction and the conversion of a packed pair to floats.
template <class T>
struct Half2Traits;

template <>
struct Half2Traits<__nv_bfloat16> {
  __device__ __forceinline__ static void mma(float (&d)[4], const std::uint32_t (&a)[4],
                                             std::uint32_t b0, std::uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ __forceinline__ static float2 to_float2(std::uint32_t v) {
    __nv_bfloat162 h;
    memcpy(&h, &v, 4);
    return __bfloat1622float2(h);
  }
};

template <>
struct Half2Traits<__half> {
  __device__ __forceinline__ static void mma(float (&d)[4], const std::uint32_t (&a)[4],
                                             std::uint32_t b0, std::uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ __forceinline__ static float2 to_float2(std::uint32_t v) {
    __half2 h;
    memcpy(&h, &v, 4);
    return __half22float2(h);
  }
};

// One operand of the product: `rows` rows of `d` elements, row i at ptr + i * ld.
struct Operand {
  const void* ptr = nullptr;
  std::int64_t rows = 0;
  std::int64_t ld = 0;
};

// ---- tensor-core core -------------------------------------------------------------------------

template <class P, class T>
struct MmaCore {
  using Policy = P;
  static constexpr bool kTf32x3 = std::is_same_v<T, float>;  // f32 as 3xTF32
  static_assert(static_cast<int>(sizeof(T)) == P::kElemBytes, "policy made for this dtype");
  // Elements as raw bits in shared memory.
  using Elem = std::conditional_t<kTf32x3, std::uint32_t, std::uint16_t>;
  static constexpr int kBM = P::kBM;
  static constexpr int kBN = P::kBN;
  static constexpr int kBK = P::kBK;
  static constexpr int kStages = P::kStages;
  static constexpr int kThreads = P::kThreads;
  static constexpr int kSmemBytes = P::kSmemBytes;
  static constexpr int kRowSlots = P::kFragsM * 2;  // (fragment, upper/lower 8 rows)
  static constexpr int kColSlots = P::kFragsN * 2;  // (fragment, even/odd column)
  static constexpr int kLanesPerRow = 4;            // a quad holds a row's columns
  static constexpr int kWarpsPerRow = P::kWarpsN;   // warps side by side along a row
  float acc[P::kFragsM][P::kFragsN][4];
  Elem* smem;
  int lane, warp_m, warp_n;
  bool aligned;          // 16-byte copies allowed (pointers, strides and d multiples of 16 bytes)

  __device__ MmaCore(void* smem_base, bool aligned_) : aligned(aligned_) {
    smem = static_cast<Elem*>(smem_base);
    const int warp = threadIdx.x / 32;
    lane = threadIdx.x % 32;
    warp_m = warp / P::kWarpsN;
    warp_n = warp % P::kWarpsN;
  }

  __device__ int row_of(int rs) const {
    return warp_m * P::kWarpM + (rs / 2) * 16 + (rs % 2) * 8 + lane / 4;
  }
  __device__ int col_of(int cs) const {
    return warp_n * P::kWarpN + (cs / 2) * 8 + (lane % 4) * 2 + (cs % 2);
  }
  __device__ int row_warp_index() const { return warp_n; }
  __device__ float& at(int rs, int cs) { return acc[rs / 2][cs / 2][(rs % 2) * 2 + (cs % 2)]; }

  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < P::kFragsM; ++i)
#pragma unroll
      for (int j = 0; j < P::kFragsN; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
  }

  // Copies chunk [k0, k0 + kBK) of rows [r0, r0 + rows) of `op` into `dst` (rows x kLd).
  template <int kRows>
  __device__ void load_tile(Elem* dst, const Operand& op, std::int64_t r0, std::int64_t k0,
                            std::int64_t d) {
    const auto* base = static_cast<const Elem*>(op.ptr);
    constexpr int kCopies = kRows * P::kVecsPerRow / kThreads;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int c = static_cast<int>(threadIdx.x) + i * kThreads;
      const int r = c / P::kVecsPerRow;
      const int v = c % P::kVecsPerRow;
      const std::int64_t grow = r0 + r;
      const std::int64_t gk = k0 + v * P::kVec;
      Elem* s = dst + r * P::kLd + v * P::kVec;
      if (aligned) {
        const bool ok = grow < op.rows && gk < d;
        const Elem* g = ok ? base + grow * op.ld + gk : base;
        cp_async_16(s, g, ok);
      } else {
        union {
          uint4 v4;
          Elem e[P::kVec];
        } u;
        const bool row_ok = grow < op.rows;
        const Elem* g = base + (row_ok ? grow : 0) * op.ld;
#pragma unroll
        for (int e = 0; e < P::kVec; ++e) u.e[e] = (row_ok && gk + e < d) ? g[gk + e] : 0;
        *reinterpret_cast<uint4*>(s) = u.v4;
      }
    }
  }

  __device__ void load(int stage, const Operand& a, const Operand& b, std::int64_t row0,
                       std::int64_t col0, std::int64_t k0, std::int64_t d) {
    Elem* sa = smem + stage * P::kStageElems;
    Elem* sb = sa + kBM * P::kLd;
    load_tile<kBM>(sa, a, row0, k0, d);
    load_tile<kBN>(sb, b, col0, k0, d);
  }

  // s += the squares of the 16 bytes in u (kVec elements), in element order.
  __device__ static void add_squares(const uint4& u, float& s) {
    const std::uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if constexpr (kTf32x3) {
        const float f = __uint_as_float(w[e]);
        s = fmaf(f, f, s);
      } else {
        const float2 f = Half2Traits<T>::to_float2(w[e]);
        s = fmaf(f.x, f.x, s);
        s = fmaf(f.y, f.y, s);
      }
    }
  }

  // Adds the squares of the A tile of `stage` to xn[row] (kBM floats in shared memory). Each
  // row belongs to one pair of adjacent lanes, the same pair for every chunk, so the
  // read-modify-write needs no atomics; the caller calls it between the barriers that guard
  // the stage.
  __device__ void accumulate_row_norms(int stage, float* xn) const {
    static_assert(kThreads % kBM == 0 || kBM % kThreads == 0, "row mapping");
    constexpr int kThreadsPerRow = kThreads / kBM;  // 2 for 256 threads x 128 rows
    static_assert(kThreadsPerRow >= 1 && P::kVecsPerRow % kThreadsPerRow == 0, "row split");
    constexpr int kVecsPerThread = P::kVecsPerRow / kThreadsPerRow;
    const Elem* sa = smem + stage * P::kStageElems;
    const int r = threadIdx.x / kThreadsPerRow;
    const int part = threadIdx.x % kThreadsPerRow;
    float s = 0.f;
#pragma unroll
    for (int v = 0; v < kVecsPerThread; ++v) {
      add_squares(*reinterpret_cast<const uint4*>(sa + r * P::kLd +
                                                  (part * kVecsPerThread + v) * P::kVec),
                  s);
    }
#pragma unroll
    for (int o = 1; o < kThreadsPerRow; o *= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (part == 0) xn[r] += s;
  }

  // Multiplies the tiles of `stage` into the accumulators. A k step reads 32 bytes of each
  // row: ldmatrix's 8 x 8 b16 matrices are 16 bytes wide, whatever the element.
  __device__ void compute(int stage) {
    const Elem* sa = smem + stage * P::kStageElems;
    const Elem* sb = sa + kBM * P::kLd;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += P::kMmaK) {
      std::uint32_t a[P::kFragsM][4];
      std::uint32_t b[P::kFragsN][2];
#pragma unroll
      for (int i = 0; i < P::kFragsM; ++i) {
        const int r = warp_m * P::kWarpM + i * 16 + (lane % 16);
        ldmatrix_x4(a[i], sa + r * P::kLd + kk + (lane / 16) * P::kVec);
      }
#pragma unroll
      for (int j = 0; j < P::kFragsN / 2; ++j) {
        const int r = warp_n * P::kWarpN + j * 16 + (lane % 8) + (lane / 16) * 8;
        std::uint32_t t[4];
        ldmatrix_x4(t, sb + r * P::kLd + kk + ((lane / 8) % 2) * P::kVec);
        b[2 * j][0] = t[0];
        b[2 * j][1] = t[1];
        b[2 * j + 1][0] = t[2];
        b[2 * j + 1][1] = t[3];
      }
      if constexpr (kTf32x3) {
        std::uint32_t a_small[P::kFragsM][4], b_small[P::kFragsN][2];
#pragma unroll
        for (int i = 0; i < P::kFragsM; ++i)
#pragma unroll
          for (int e = 0; e < 4; ++e) split_tf32(a[i][e], a[i][e], a_small[i][e]);
#pragma unroll
        for (int j = 0; j < P::kFragsN; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) split_tf32(b[j][e], b[j][e], b_small[j][e]);
        // A fixed order (the same bits every run): the small products, then the big one.
#pragma unroll
        for (int i = 0; i < P::kFragsM; ++i)
#pragma unroll
          for (int j = 0; j < P::kFragsN; ++j) {
            mma_tf32(acc[i][j], a_small[i], b[j][0], b[j][1]);
            mma_tf32(acc[i][j], a[i], b_small[j][0], b_small[j][1]);
            mma_tf32(acc[i][j], a[i], b[j][0], b[j][1]);
          }
      } else {
#pragma unroll
        for (int i = 0; i < P::kFragsM; ++i)
#pragma unroll
          for (int j = 0; j < P::kFragsN; ++j)
            Half2Traits<T>::mma(acc[i][j], a[i], b[j][0], b[j][1]);
      }
    }
  }
};

// ---- FFMA core (f32) ----------------------------------------------------------------------------

template <class P>
struct SimtCore {
  using Policy = P;
  static constexpr int kBM = P::kBM;
  static constexpr int kBN = P::kBN;
  static constexpr int kBK = P::kBK;
  static constexpr int kStages = P::kStages;
  static constexpr int kThreads = P::kThreads;
  static constexpr int kSmemBytes = P::kSmemBytes;
  static constexpr int kRowSlots = P::kTM;
  static constexpr int kColSlots = P::kTN;
  static constexpr int kLanesPerRow = P::kTX;
  static constexpr int kWarpsPerRow = 1;

  float acc[P::kTM][P::kTN];
  float* smem;
  int ty, tx;

  __device__ SimtCore(void* smem_base, bool /*aligned*/) {
    smem = static_cast<float*>(smem_base);
    ty = threadIdx.x / P::kTX;
    tx = threadIdx.x % P::kTX;
  }

  // A side of 8 is two groups of 4, the second half a tile away.
  __device__ int row_of(int rs) const { return (rs & 4) * (kBM / 8) + ty * 4 + (rs & 3); }
  __device__ int col_of(int cs) const { return (cs & 4) * (kBN / 8) + tx * 4 + (cs & 3); }
  __device__ int row_warp_index() const { return 0; }
  __device__ float& at(int rs, int cs) { return acc[rs][cs]; }

  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < P::kTM; ++i)
#pragma unroll
      for (int j = 0; j < P::kTN; ++j) acc[i][j] = 0.f;
  }

  // Copies chunk [k0, k0 + kBK) of rows [r0, r0 + kRows) transposed into dst[k][row].
  template <int kRows, int kLd>
  __device__ void load_tile(float* dst, const Operand& op, std::int64_t r0, std::int64_t k0,
                            std::int64_t d) {
    const auto* base = static_cast<const float*>(op.ptr);
    constexpr int kCopies = kRows * kBK / kThreads;
    constexpr int kRowsPerPass = kThreads / kBK;
    const int kk = threadIdx.x % kBK;
    const int r_first = threadIdx.x / kBK;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int r = r_first + i * kRowsPerPass;
      const std::int64_t grow = r0 + r;
      const std::int64_t gk = k0 + kk;
      const bool ok = grow < op.rows && gk < d;
      cp_async_4(dst + kk * kLd + r, ok ? base + grow * op.ld + gk : base, ok);
    }
  }

  __device__ void load(int stage, const Operand& a, const Operand& b, std::int64_t row0,
                       std::int64_t col0, std::int64_t k0, std::int64_t d) {
    float* sa = smem + stage * P::kStageFloats;
    float* sb = sa + kBK * P::kLdA;
    load_tile<kBM, P::kLdA>(sa, a, row0, k0, d);
    load_tile<kBN, P::kLdB>(sb, b, col0, k0, d);
  }

  // Adds the squares of the A tile of `stage` to xn[row] (see MmaCore): thread r < kBM owns
  // row r.
  __device__ void accumulate_row_norms(int stage, float* xn) const {
    static_assert(kBM <= kThreads, "one thread per row");
    if (threadIdx.x >= kBM) return;
    const float* sa = smem + stage * P::kStageFloats;
    float s = 0.f;
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      const float f = sa[kk * P::kLdA + threadIdx.x];
      s = fmaf(f, f, s);
    }
    xn[threadIdx.x] += s;
  }

  __device__ void compute(int stage) {
    const float* sa = smem + stage * P::kStageFloats;
    const float* sb = sa + kBK * P::kLdA;
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float av[P::kTM], bv[P::kTN];
#pragma unroll
      for (int g = 0; g < P::kTM / 4; ++g) {
        const float* src = sa + kk * P::kLdA + g * (kBM / 2) + ty * 4;
        const float4 a = *reinterpret_cast<const float4*>(src);
        av[4 * g] = a.x, av[4 * g + 1] = a.y, av[4 * g + 2] = a.z, av[4 * g + 3] = a.w;
      }
#pragma unroll
      for (int g = 0; g < P::kTN / 4; ++g) {
        const float* src = sb + kk * P::kLdB + g * (kBN / 2) + tx * 4;
        const float4 b = *reinterpret_cast<const float4*>(src);
        bv[4 * g] = b.x, bv[4 * g + 1] = b.y, bv[4 * g + 2] = b.z, bv[4 * g + 3] = b.w;
      }
#pragma unroll
      for (int i = 0; i < P::kTM; ++i)
#pragma unroll
        for (int j = 0; j < P::kTN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
  }
};

// ---- the pipelined tile loop -------------------------------------------------------------------

// Runs tiles [tile_begin, tile_end) of kBN columns of `b` against rows [row0, row0 + kBM) of
// `a`. Calls epi.prefetch(core, t) when tile t starts and epi.on_tile(core, t) when its dot
// products are complete (all threads, uniformly; on_tile may use __syncthreads). When
// `row_norms` (kBM floats of shared memory outside the pipeline) is not null, the A tiles of
// the first tile are also summed into row_norms[r] = ||a_row||^2 (zeroed here; complete
// after the call), so the caller needs no separate pass over `a`.
// Precondition: blockDim.x == Core::kThreads; the core's smem holds kStages stages.
template <class Core, class Epilogue>
__device__ void run_tiles(Core& core, Epilogue& epi, const Operand& a, const Operand& b,
                          std::int64_t d, std::int64_t row0, std::int64_t tile_begin,
                          std::int64_t tile_end, float* row_norms) {
  constexpr int kStages = Core::kStages;
  const std::int64_t chunks = (d + Core::kBK - 1) / Core::kBK;
  const std::int64_t total = (tile_end - tile_begin) * chunks;

  // Producer position (iteration `load_it` = tile load_t, chunk load_c).
  std::int64_t load_it = 0, load_t = tile_begin, load_c = 0;
  auto issue = [&]() {
    if (load_it < total) {
      core.load(static_cast<int>(load_it % kStages), a, b, row0, load_t * Core::kBN,
                load_c * Core::kBK, d);
      if (++load_c == chunks) {
        load_c = 0;
        ++load_t;
      }
    }
    ++load_it;
    cp_async_commit();
  };

#pragma unroll 1
  for (int s = 0; s < kStages - 1; ++s) issue();
  core.zero();
  if (row_norms != nullptr) {
    for (int r = threadIdx.x; r < Core::kBM; r += Core::kThreads) row_norms[r] = 0.f;
  }

  std::int64_t t = tile_begin, c = 0;
  int stage = 0;
#pragma unroll 1
  for (std::int64_t it = 0; it < total; ++it) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    issue();  // refills the stage consumed in the previous iteration
    if (c == 0) epi.prefetch(core, t);
    if (row_norms != nullptr && t == tile_begin) core.accumulate_row_norms(stage, row_norms);
    core.compute(stage);
    if (++stage == kStages) stage = 0;
    if (++c == chunks) {
      epi.on_tile(core, t);
      core.zero();
      c = 0;
      ++t;
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the pipeline's shared memory may be reused after this
}

}  // namespace megatax::cuda::detail
