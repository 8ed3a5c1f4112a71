// Fused top-k on Hopper for a few queries, phase 1: at most 16 queries, where a search is bound
// by reading the database once (16 queries do 16 multiply-adds per 2-byte element, far below
// the tensor cores' rate), so this kernel is built to stream the database at HBM speed:
//
//   roles    the database is the A side: TMA tiles of 256 rows x 128 bytes of d in the ring of
//            sm90_pipeline.cuh (4 stages, 128 KiB of database in flight an SM); the queries
//            are one 16-row B tile (re-read from L2 each stage: 2 KiB against 32 KiB). Each
//            consumer warpgroup runs m64n16k16 wgmmas for its 128 rows of the tile, so a
//            thread holds 2 x 8 dot products: 4 database rows x 4 queries (wgmma's layout:
//            rows 16 w + lane / 4 (+ 8) of each 64-row block, queries 8 j + 2 (lane % 4) (+ 1)).
//            f32: the same pairs as 3xTF32 on mma.sync m16n8k8 (tf32.cuh; whose accumulators
//            are the wgmma layout's) from the same swizzled stages (a d chunk is 32 floats);
//            MEGATAX_CUDA_F32=ffma: exact f32 products on the FFMA units, summed in d order.
//   filter   scores in place (||c||^2 - 2 <q, c>; the database norms and the shared
//            thresholds are loaded a tile ahead; tiles of 8 or more d chunks read the thresholds
//            again after a merge), each compared with its query's threshold: the
//            smaller of the CTA's own k-th best (+inf until k are known) and the query's shared
//            bound (shared_bound.cuh: the chunks' lists vouch for k scores at or below it).
//            Passing scores are appended to the query's candidate area in shared memory (256
//            entries) at a shared atomic counter.
//   merge    one barrier of the 256 consumer threads a tile, which also tells whether some
//            area holds kMergeAt candidates; only then does warp w merge the areas of queries
//            w and w + 8 into their lists (warp_select.cuh offer / flush; lists of at most 128
//            entries in shared memory until the chunk ends) and a second barrier publishes the
//            new thresholds. Merging every tile that had a candidate cost 2x the read time at
//            128-d (a tile of 128-d rows streams in ~3 us); deferred, a chunk merges a few times
//            at k = 10. A score that finds its area full (thresholds stale, a run of near rows)
//            is kept in registers and appended again after the merge (a third barrier, rare).
//            A chunk's first merge, into empty lists (its first tile passes every row), is one
//            warp sort of the area (warp_select.cuh fill_empty_row) instead of a flush for
//            every 32 candidates; a later merge of more than 32 is one sort and a merge of the
//            two sorted runs (merge_sorted_row; lists of at most 128).
//
// A CTA (one an SM, persistent) takes one database chunk at a time; its lists are the (query,
// chunk) slots of topk.cu's candidate array, merged by topk.cu's phase 2. Candidates are ordered
// by (score, id), ties to the smaller id, so the lists do not depend on the order of appends.
// Measured on an H100 (bench_cuda, Q=16, % of the HBM read floor, bench/RESULTS.md session 18):
// bf16 N=2M D=1024 99% (k=10) / 93% (k=100), N=10M D=128 90% / 79% (the same kernel without
// the selection: 94%); f32 99% / 96% and 98% / 91%. On an H200 (its faster HBM; session 36,
// with phase 2 by block select): bf16 D=1024 97-100% / 91-93%, D=128 83-87% / 75-77%; f32
// D=1024 92-96% / 82-88%, D=128 80-82% / 75-76%; with the first merge by sort (session 37):
// bf16 D=128 87-88% / 78%, D=1024 99-100% / 93-94%. Tried (session 37, H200): the merges in the
// producer warpgroup's three idle warps, each area in two banks (the consumers append to one
// while the mergers merge the other; a full bank merged by the consumers): slower at D=128,
// bf16 k=100 0.80 -> 0.93-0.99 ms, k=10 0.71 -> 0.75-0.79 (three warps merge too slowly, the
// thresholds go stale and more scores pass); without any handoff the banks' bookkeeping and
// the consumers' smaller register share alone cost 2-3% (bf16) and 5% (f32); D=1024 no faster.
// f32 as 3xTF32 instead of FFMA (session 38, H200, same binary): N=10M D=128 1.49 -> 1.27 ms
// (80 -> 94%) at k=10, 1.56-1.58 -> 1.35-1.38 (76-77 -> 87-89%) at k=100; N=2M D=1024
// 2.06 -> 1.90 (93 -> 101%), 2.12 -> 1.95 (90 -> 98-99%). With the later merges by sort, the
// sort's steps in a loop and the thresholds read again at D=1024 (session 38, against the
// session's start built in the same call): bf16 D=128 k=100 0.78-0.79 -> 0.76-0.77 ms (79%),
// D=1024 k=100 1.04-1.06 -> 1.02-1.03 (94%); f32 k=100 1.57-1.59 -> 1.29-1.30 (92-93%),
// D=1024 2.27-2.40 -> 1.95-1.96 (98%); the rest within noise or as above. Phase 2 from the
// candidates below this kernel's shared bound (list_select.cuh, session 39): bf16 D=128 k=100
// 0.78-0.79 -> 0.75-0.76 ms (79-81%). The first and later merges sorting only the k best of
// their candidates (warp_select.cuh keep_smallest, session 40, same runs against the base):
// bf16 D=128 k=10 0.684-0.687 -> 0.672-0.683 ms (88 -> 89-90%), k=100 0.738-0.742 ->
// 0.730-0.743 (81-82 -> 82-83%); the rest within 1%.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/cuda/check.h"
#include "kernels/cuda/distance_ops.cuh"
#include "kernels/cuda/hopper.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/shared_bound.cuh"
#include "kernels/cuda/sm90_pipeline.cuh"
#include "kernels/cuda/tensor_map.h"
#include "kernels/cuda/tf32.cuh"
#include "kernels/cuda/topk_sm90.h"
#include "kernels/cuda/warp_select.cuh"

namespace megatax::cuda::detail {
namespace {

constexpr int kQ = kSm90FewQueries;  // the B tile's rows: wgmma's N
constexpr int kRows = kSm90FewRows;  // database rows a tile
[[maybe_unused]] constexpr int kBlocks = kRows / (2 * 64);  // 64-row blocks a warpgroup computes
[[maybe_unused]] constexpr int kOwners = kSm90ConsumerWarps;  // warp w merges queries w, w + 8
[[maybe_unused]] constexpr int kConsumers = 2 * 128;
constexpr int kChunkBytes = kSm90BK * 2;  // a row's bytes of a d chunk: 64 16-bit or 32 f32
// The areas are merged into the lists once one holds this many candidates (the CTA's own
// thresholds are as old as the last merge: later merges append more, merge less often).
#ifndef MEGATAX_FEW_MERGE_AT
#define MEGATAX_FEW_MERGE_AT 128
#endif
[[maybe_unused]] constexpr int kMergeAt = MEGATAX_FEW_MERGE_AT;
// Tiles of at least this many d chunks (256 KiB: ~8 us an SM at HBM speed) read the shared
// bounds again after a merge, for the next tile.
[[maybe_unused]] constexpr int kFreshBoundChunks = 8;
static_assert(kQ * kBoundBuckets == 32 * 4, "a warp reads all bounds with one uint4 a lane");
static_assert(kRows % 128 == 0 && kRows <= 256, "a TMA box holds at most 256 rows");

// A candidate in a query's area: score and database row (n < 2^31: TMA's limit too).
using Candidate = ScoredRow;

// The selection state of one query (shared memory).
struct QueryState {
  float buf_s[32];
  std::int64_t buf_id[32];
  std::int64_t tau_id;
  float tau_s;
  int m;
  int count;
  int appended;  // candidates in the query's area
};
static_assert(sizeof(QueryState) % 8 == 0, "query states stay 8-byte aligned");

// Lists of at most kShortList entries are kept in shared memory while the chunk runs (a
// flush's reads and writes of the list then wait on shared memory, not on L2) and copied to
// the output slot at its end; longer ones live in the output slot.
constexpr int kSmemListBytes =
    kQ * kShortList * static_cast<int>(sizeof(float) + sizeof(std::int64_t));

#ifndef MEGATAX_FEW_STAGES
#define MEGATAX_FEW_STAGES 4
#endif
using Ring = Sm90Ring<kQ, MEGATAX_FEW_STAGES * (kRows + kQ) * kSm90BK * 2, kRows>;
constexpr int kSmemBytes = Ring::kBytes + kQ * static_cast<int>(sizeof(QueryState)) +
                           kSmemListBytes + kQ * kRows * static_cast<int>(sizeof(Candidate));
static_assert(kSmemBytes <= 227 * 1024, "fits the per-block shared-memory limit");

struct FewParams {
  std::int64_t nq = 0, n = 0, d = 0;
  const float* db_norms = nullptr;
  int k = 0;
  std::int64_t tiles = 0, chunk_tiles = 0;
  int chunks = 0;
  float* list_s = nullptr;  // [nq][chunks][k]
  std::int64_t* list_id = nullptr;
  unsigned* tau_keys = nullptr;  // [kQ][kBoundBuckets]: the shared bounds (shared_bound.cuh)
};

// A consumer thread's dot products (wgmma's layout, also used by the FFMA path): its query i
// (0..3) is query_of(i, lane), and the product of that query with row 8 h (+ 64 b) of its rows
// sits in acc[b][acc_index(h, i)].
__host__ __device__ constexpr int query_of(int i, int lane) {
  return 8 * (i / 2) + 2 * (lane % 4) + i % 2;
}
__host__ __device__ constexpr int acc_index(int h, int i) { return 4 * (i / 2) + 2 * h + i % 2; }

#if defined(MEGATAX_SM90A)
// The CTA's shared memory after the ring.
struct FewSmem {
  QueryState* states;      // [kQ]
  float* list_s;           // [kQ][kShortList] (k <= kShortList)
  std::int64_t* list_id;   // [kQ][kShortList]
  Candidate* areas;        // [kQ][kRows]

  __device__ explicit FewSmem(unsigned char* end)
      : states(reinterpret_cast<QueryState*>(end)),
        list_id(reinterpret_cast<std::int64_t*>(states + kQ)),
        areas(nullptr) {
    list_s = reinterpret_cast<float*>(list_id + kQ * kShortList);
    areas = reinterpret_cast<Candidate*>(list_s + kQ * kShortList);
  }
};

// Query q's list while its chunk runs: in shared memory for short lists, else the output slot.
__device__ __forceinline__ RowSelect query_select(const FewParams& p, const FewSmem& sm,
                                                  std::int64_t chunk, int q) {
  RowSelect st;
  QueryState& qs = sm.states[q];
  if (p.k <= kShortList) {
    st.list_s = sm.list_s + q * kShortList;
    st.list_id = sm.list_id + q * kShortList;
  } else {
    const std::int64_t slot = (q * static_cast<std::int64_t>(p.chunks) + chunk) * p.k;
    st.list_s = p.list_s + slot;
    st.list_id = p.list_id + slot;
  }
  st.buf_s = qs.buf_s;
  st.buf_id = qs.buf_id;
  st.k = p.k;
  st.m = qs.m;
  st.count = qs.count;
  st.tau_s = qs.tau_s;
  st.tau_id = qs.tau_id;
  st.short_merge = true;  // lists in shared memory (k <= 128): as fast as the other flush
  st.bound_j = bound_rank(p.k, kBoundBuckets);
  return st;
}

// select_merge_row of a query's `appended` area entries and its buffered ones (n in all, at
// most 32 R), the area the scratch.
template <int R>
__device__ __forceinline__ void merge_area_sorted(RowSelect& st, Candidate* area, int appended,
                                                  int n, int lane) {
  float s[R];
  std::int32_t id[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = 32 * r + lane;
    Candidate c{kInfScore, INT32_MAX};
    if (i < appended) {
      c = area[i];
    } else if (i < n) {
      c = Candidate{st.buf_s[i - appended], static_cast<std::int32_t>(st.buf_id[i - appended])};
    }
    s[r] = c.s;
    id[r] = c.id;
  }
  __syncwarp();  // every lane has read the area before the merge writes it
  select_merge_row<R>(st, s, id, n, area);
}

// The owner warp merges query q's area (`appended` candidates) into its list and publishes the
// query's shared bound (shared_bound.cuh).
__device__ __forceinline__ void merge_area(const FewParams& p, const FewSmem& sm,
                                           std::int64_t chunk, int q, int lane) {
  QueryState& qs = sm.states[q];
  Candidate* area = sm.areas + q * kRows;
  const int appended = min(qs.appended, kRows);  // the counter runs on past a full area
  RowSelect st = query_select(p, sm, chunk, q);
  if (st.m == 0 && st.count == 0 && appended > 32) {
    // The chunk's first merge (its first tile passes every row): one sort of the area instead
    // of a flush for every 32 offered (Q=16 on an H200, session 37: bf16 N=10M D=128 k=100
    // 0.79-0.81 -> 0.77-0.78 ms, k=10 0.70-0.71 -> 0.68-0.70; f32 within 1%); since session
    // 40 of only the k best of it (select_empty_row; with the later merges' select below,
    // phase 1 at bf16 D=128 k=10 660-670 -> 648-652 us, ncu, H200).
    constexpr int kPerLane = kRows / 32;
    float s[kPerLane];
    std::int32_t id[kPerLane];
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const int i = 32 * r + lane;
      const Candidate c = i < appended ? area[i] : Candidate{kInfScore, INT32_MAX};
      s[r] = c.s;
      id[r] = c.id;
    }
    select_empty_row<kPerLane>(st, s, id, appended, area);
  } else if (st.k <= kShortList && appended + st.count > 32) {
    // A later merge of more than 32 (an area reached kMergeAt, or the chunk ended): one sort
    // and a merge of the two sorted runs, the buffered entries with the area's (Q=16 on an
    // H200, session 38: bf16 N=10M D=128 k=100 0.78-0.79 -> 0.76-0.77 ms, f32 1.33-1.36 ->
    // 1.29-1.30; the rest within noise). Only the k best of them are sorted where that
    // takes fewer registers (select_merge_row: k = 100 sorts 128 of up to 256).
    if (appended + st.count > kRows) flush(st);  // then the rest fits the registers
    const int n = appended + st.count;
    if (n <= 128) {
      merge_area_sorted<4>(st, area, appended, n, lane);
    } else {
      merge_area_sorted<kRows / 32>(st, area, appended, n, lane);
    }
  } else {
    for (int b = 0; b < appended; b += 32) {
      const bool valid = b + lane < appended;
      const Candidate c = valid ? area[b + lane] : Candidate{kInfScore, 0};
      offer(st, c.s, c.id, valid);
    }
  }
  __syncwarp();
  if (lane == 0) {
    qs.m = st.m;
    qs.count = st.count;
    qs.tau_s = st.tau_s;
    qs.tau_id = st.tau_id;
    qs.appended = 0;
    publish_bound(p.tau_keys, kBoundBuckets, q, chunk, st);
  }
  __syncwarp();
}

// The warpgroup's dot products of one tile on the tensor cores (f16 / bf16): per 64-row
// block, m64n16k16 wgmmas over the d chunks, one chunk's in flight while the next is issued;
// on return acc is final and every stage released.
template <class T>
__device__ __forceinline__ void wgmma_tile(float (&acc)[kBlocks][kQ / 2],
                                           const RingView<Ring>& ring, RingCursor& cur, int cw,
                                           int lane, std::int64_t dchunks) {
  int pending = -1;  // the stage whose MMAs are in flight
  for (std::int64_t c = 0; c < dchunks; ++c) {
    sm90::mbarrier_wait(&ring.full[cur.stage], cur.phase);
    const unsigned char* stage = ring.stages + cur.stage * Ring::kStageBytes;
    sm90::wgmma_fence();
    const std::uint64_t dq = sm90::smem_desc_k_major_sw128(stage + Ring::kABytes);
    std::uint64_t ddb[kBlocks];
#pragma unroll
    for (int b = 0; b < kBlocks; ++b) {
      ddb[b] = sm90::smem_desc_k_major_sw128(stage + (cw * (kRows / 2) + 64 * b) * kChunkBytes);
    }
#pragma unroll
    for (int kk = 0; kk < kSm90BK / 16; ++kk) {
#pragma unroll
      for (int b = 0; b < kBlocks; ++b) {
        Wgmma<T, kQ>::mma(acc[b], ddb[b] + 2 * kk, dq + 2 * kk, (c > 0 || kk > 0) ? 1 : 0);
      }
    }
    sm90::wgmma_commit();
    sm90::wgmma_wait<1>();
    if (pending >= 0 && lane == 0) release_stage<1>(&ring.empty[pending]);
    pending = cur.stage;
    cur.template advance<Ring::kStages>();
  }
  sm90::wgmma_wait<0>();
#pragma unroll
  for (int b = 0; b < kBlocks; ++b) {
#pragma unroll
    for (int i = 0; i < kQ / 2; ++i) sm90::fence_register(acc[b][i]);
  }
  if (lane == 0) release_stage<1>(&ring.empty[pending]);
}

// The same for f32 on the FFMA units (exact float32 dot products, summed in d order): the
// thread computes the very (row, query) pairs the wgmma layout gives it, so the selection
// code is shared. A stage holds 32 floats of d per row in the 128-byte swizzle (the 16-byte
// piece p of row r sits at piece p ^ (r % 8)): per piece, 4 row and 4 query float4 reads
// (rows r % 8 = lane / 4 and distinct query pieces: no bank conflicts) feed 64 FFMAs.
__device__ __forceinline__ void ffma_tile(float (&acc)[kBlocks][kQ / 2], const RingView<Ring>& ring,
                                          RingCursor& cur, int cw, int warp, int lane,
                                          std::int64_t dchunks) {
#pragma unroll
  for (int b = 0; b < kBlocks; ++b) {
#pragma unroll
    for (int i = 0; i < kQ / 2; ++i) acc[b][i] = 0.f;
  }
  const int row_in_tile = cw * (kRows / 2) + warp * 16 + lane / 4;
  const int swz_row = lane / 4;  // (row_in_tile + 8 h + 64 b) % 8
  for (std::int64_t c = 0; c < dchunks; ++c) {
    sm90::mbarrier_wait(&ring.full[cur.stage], cur.phase);
    const unsigned char* stage = ring.stages + cur.stage * Ring::kStageBytes;
    const unsigned char* queries = stage + Ring::kABytes;
    // Fully unrolled, the compiler issues later pieces' reads early (unrolled by 2, the FFMAs
    // waited on them: f32 Q=16 N=10M D=128 76% -> 80-82% of the HBM floor on an H200; the next
    // piece's reads placed ahead by hand were slower, 79-80%; session 36).
#pragma unroll
    for (int piece = 0; piece < kChunkBytes / 16; ++piece) {
      float4 x[kBlocks][2];
#pragma unroll
      for (int b = 0; b < kBlocks; ++b) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = row_in_tile + 64 * b + 8 * h;
          x[b][h] = *reinterpret_cast<const float4*>(stage + r * kChunkBytes +
                                                     ((piece ^ swz_row) << 4));
        }
      }
      float4 qv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int q = query_of(i, lane);
        qv[i] = *reinterpret_cast<const float4*>(queries + q * kChunkBytes +
                                                 ((piece ^ (q % 8)) << 4));
      }
#pragma unroll
      for (int b = 0; b < kBlocks; ++b) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            float& a = acc[b][acc_index(h, i)];
            a = fmaf(x[b][h].x, qv[i].x, a);
            a = fmaf(x[b][h].y, qv[i].y, a);
            a = fmaf(x[b][h].z, qv[i].z, a);
            a = fmaf(x[b][h].w, qv[i].w, a);
          }
        }
      }
    }
    __syncwarp();
    if (lane == 0) release_stage<1>(&ring.empty[cur.stage]);
    cur.template advance<Ring::kStages>();
  }
}

// f32 as 3xTF32 on mma.sync (tf32.cuh; the default, MEGATAX_CUDA_F32=ffma takes ffma_tile):
// the m16n8k8 accumulators of warp w's 16 rows (+ 64 b) and queries 8 j .. 8 j + 7 are the
// wgmma layout's acc[b][4 j .. 4 j + 3], so the selection code is shared. A stage's 32 floats
// of d are four k8 steps; a fragment element (row r, column c) is one 32-bit read from the
// 128-byte swizzle (r % 8 = lane / 4 and c % 4 = lane % 4 across a warp: all 32 banks), split
// into tf32 big + small, and the products small.big, big.small, big.big accumulated in that
// order. A k8 step a warp: 12 reads, 36 split operations, 12 MMAs, against 64 FFMAs and 8
// 16-byte reads for each 4 of d on the FFMA path.
__device__ __forceinline__ void tf32_tile(float (&acc)[kBlocks][kQ / 2],
                                          const RingView<Ring>& ring, RingCursor& cur, int cw,
                                          int warp, int lane, std::int64_t dchunks) {
#pragma unroll
  for (int b = 0; b < kBlocks; ++b) {
#pragma unroll
    for (int i = 0; i < kQ / 2; ++i) acc[b][i] = 0.f;
  }
  const int row_in_tile = cw * (kRows / 2) + warp * 16 + lane / 4;
  const int swz_row = lane / 4;      // (row + 8 h + 64 b) % 8, and (8 j + lane / 4) % 8
  const int column = 4 * (lane % 4);  // the element's bytes within its 16-byte piece
  auto load = [](const unsigned char* p) { return *reinterpret_cast<const std::uint32_t*>(p); };
  for (std::int64_t c = 0; c < dchunks; ++c) {
    sm90::mbarrier_wait(&ring.full[cur.stage], cur.phase);
    const unsigned char* stage = ring.stages + cur.stage * Ring::kStageBytes;
    const unsigned char* queries = stage + Ring::kABytes;
#pragma unroll
    for (int ks = 0; ks < kChunkBytes / 32; ++ks) {
      const int lo = (((2 * ks) ^ swz_row) << 4) + column;      // d 8 ks + lane % 4
      const int hi = (((2 * ks + 1) ^ swz_row) << 4) + column;  // and 4 further
      std::uint32_t qb[2][2], qs[2][2];  // [j][b0, b1]: query 8 j + lane / 4
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const unsigned char* qrow = queries + (8 * j + lane / 4) * kChunkBytes;
        split_tf32(load(qrow + lo), qb[j][0], qs[j][0]);
        split_tf32(load(qrow + hi), qb[j][1], qs[j][1]);
      }
#pragma unroll
      for (int b = 0; b < kBlocks; ++b) {
        const unsigned char* r0 = stage + (row_in_tile + 64 * b) * kChunkBytes;
        const unsigned char* r8 = r0 + 8 * kChunkBytes;
        std::uint32_t ab[4], as[4];
        split_tf32(load(r0 + lo), ab[0], as[0]);
        split_tf32(load(r8 + lo), ab[1], as[1]);
        split_tf32(load(r0 + hi), ab[2], as[2]);
        split_tf32(load(r8 + hi), ab[3], as[3]);
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          float(&d)[4] = *reinterpret_cast<float(*)[4]>(&acc[b][4 * j]);
          mma_tf32(d, as, qb[j][0], qb[j][1]);
          mma_tf32(d, ab, qs[j][0], qs[j][1]);
          mma_tf32(d, ab, qb[j][0], qb[j][1]);
        }
      }
    }
    __syncwarp();
    if (lane == 0) release_stage<1>(&ring.empty[cur.stage]);
    cur.template advance<Ring::kStages>();
  }
}

// The consumer warpgroup `cw` (0 or 1) of topk_sm90_few_kernel.
template <class T, class Op, bool kTf32>
__device__ __forceinline__ void consume(const FewParams& p, const RingView<Ring>& ring,
                                        const FewSmem& sm, int cw, std::int64_t dchunks) {
  constexpr bool kF32 = std::is_same_v<T, float>;
  QueryState* states = sm.states;
  sm90::setmaxnreg_inc<kSm90ConsumerRegs>();
  const int tid = static_cast<int>(threadIdx.x) - 128 * (cw + 1);
  const int warp = tid / 32, lane = tid % 32;
  const int owner = cw * 4 + warp;
  // The thread's queries: accumulator 4 j + 2 h + e holds query 8 j + 2 (lane % 4) + e.
  int my_q[4];
  bool q_ok[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    my_q[i] = query_of(i, lane);
    q_ok[i] = my_q[i] < p.nq;
  }
  float acc[kBlocks][kQ / 2];
  RingCursor cur;

  for (std::int64_t w = blockIdx.x; w < p.chunks; w += gridDim.x) {
    const std::int64_t t0 = w * p.chunk_tiles;
    const std::int64_t t1 = min(t0 + p.chunk_tiles, p.tiles);
    if (lane == 0) {
      for (int q = owner; q < kQ; q += kOwners) {
        QueryState& qs = states[q];
        qs.m = 0;
        qs.count = 0;
        qs.appended = 0;
        qs.tau_s = kInfScore;
        qs.tau_id = kNoId;
      }
    }
    // Every state initialised; the last chunk's readers are past it.
    sm90::named_barrier_sync(1, kConsumers);
    float own[4];  // the CTA's own thresholds of the thread's queries (NaN: past the queries)
#pragma unroll
    for (int i = 0; i < 4; ++i) own[i] = q_ok[i] ? kInfScore : __int_as_float(0x7fc00000);

    // The thread's first row of tile t (accumulator b, 2 h + ... holds row + 64 b + 8 h).
    const std::int64_t thread_row = cw * (kRows / 2) + warp * 16 + lane / 4;
    // The rows' norms and the queries' shared thresholds are read a tile ahead: a load from
    // HBM while it streams takes about as long as a tile of 128-d rows.
    float norm_next[kBlocks][2];
    uint4 bucket_next;  // buckets 4 (lane % 2) .. + 3 of query lane / 2 (shared_bound.cuh)
    auto load_ahead = [&](std::int64_t t) {
#pragma unroll
      for (int b = 0; b < kBlocks; ++b) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const std::int64_t r = t * kRows + thread_row + 64 * b + 8 * h;
          norm_next[b][h] = (Op::kUsesNorms && t < t1 && r < p.n) ? __ldg(p.db_norms + r) : 0.f;
        }
      }
      bucket_next = __ldcg(reinterpret_cast<const uint4*>(p.tau_keys) + lane);
    };
    load_ahead(t0);

    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t row_base = t * kRows + thread_row;
      float norm[kBlocks][2];
      // The queries' shared bounds: the largest bucket (a key of 0xffffffff, NaN, while any
      // bucket is unset).
      unsigned shared_key[4];
      {
        unsigned m = max(max(bucket_next.x, bucket_next.y), max(bucket_next.z, bucket_next.w));
        m = max(m, __shfl_xor_sync(0xffffffffu, m, 1));
#pragma unroll
        for (int i = 0; i < 4; ++i) shared_key[i] = __shfl_sync(0xffffffffu, m, 2 * my_q[i]);
      }
#pragma unroll
      for (int b = 0; b < kBlocks; ++b) {
        norm[b][0] = norm_next[b][0];
        norm[b][1] = norm_next[b][1];
      }
      load_ahead(t + 1);

      if constexpr (kF32 && kTf32) {
        tf32_tile(acc, ring, cur, cw, warp, lane, dchunks);
      } else if constexpr (kF32) {
        ffma_tile(acc, ring, cur, cw, warp, lane, dchunks);
      } else {
        wgmma_tile<T>(acc, ring, cur, cw, lane, dchunks);
      }

      float thr[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        // fminf ignores the NaN of "none yet"; queries past nq keep their NaN.
        thr[i] = own[i] == own[i] ? fminf(own[i], float_from_order_key(shared_key[i])) : own[i];
      }
      // Scores into place; the passing ones into their queries' areas. A score that finds its
      // area full (bit 4 (2 b + h) + i of `missed`) is appended again after the merge.
      float sc[kBlocks][2][4];
      unsigned missed = 0;
      bool merge_now = false;
#pragma unroll
      for (int b = 0; b < kBlocks; ++b) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const std::int64_t r = row_base + 64 * b + 8 * h;
          const bool row_ok = r < p.n;
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const float dot = acc[b][acc_index(h, i)];
            const float s = row_ok ? Op::score(dot, norm[b][h]) : __int_as_float(0x7fc00000);
            sc[b][h][i] = s;
            if (s <= thr[i]) {  // NaN never passes
              const int pos = atomicAdd(&states[my_q[i]].appended, 1);
              if (pos < kRows) {
                sm.areas[my_q[i] * kRows + pos] = Candidate{s, static_cast<std::int32_t>(r)};
              } else {
                missed |= 1u << (4 * (2 * b + h) + i);
              }
              merge_now = merge_now || pos + 1 >= kMergeAt;
            }
          }
        }
      }
      // Most tiles end here: the areas are merged once one holds kMergeAt candidates.
      if (!sm90::named_barrier_any(1, kConsumers, merge_now)) continue;
      for (int q = owner; q < p.nq; q += kOwners) {
        if (states[q].appended > 0) merge_area(p, sm, w, q, lane);
      }
      // The merged states (emptied areas, new thresholds) are visible to all after this.
      const bool any_missed = sm90::named_barrier_any(1, kConsumers, missed != 0);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if (q_ok[i]) own[i] = states[my_q[i]].tau_s;
      }
      // Long tiles read the bounds again after a merge (its own and the other CTAs' that
      // merged meanwhile): the next tile would otherwise filter with bounds a tile old, which
      // at a chunk's second tile means none yet (Q=16 bf16 N=2M D=1024 k=100 on an H200:
      // 1.04-1.06 -> 1.01-1.02 ms); with short ones the wait for L2 costs more than it saves
      // (N=10M D=128 k=100: 0.79 -> 0.81 ms; session 38).
      if (dchunks >= kFreshBoundChunks) {
        bucket_next = __ldcg(reinterpret_cast<const uint4*>(p.tau_keys) + lane);
      }
      if (!any_missed) continue;
      // Rare (an area overflowed: the thresholds were stale): the missed scores that still
      // pass go into the emptied areas (at most a tile's rows a query: they fit), before any
      // thread appends the next tile's.
#pragma unroll
      for (int b = 0; b < kBlocks; ++b) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const float s = sc[b][h][i];
            if ((missed >> (4 * (2 * b + h) + i) & 1u) != 0 && s <= own[i]) {
              const int pos = atomicAdd(&states[my_q[i]].appended, 1);
              sm.areas[my_q[i] * kRows + pos] =
                  Candidate{s, static_cast<std::int32_t>(row_base + 64 * b + 8 * h)};
            }
          }
        }
      }
      sm90::named_barrier_sync(1, kConsumers);
    }
    // The candidates still in the areas.
    sm90::named_barrier_sync(1, kConsumers);
    for (int q = owner; q < p.nq; q += kOwners) {
      if (states[q].appended > 0) merge_area(p, sm, w, q, lane);
    }

    // The chunk's lists: flush the buffers, copy short lists out, pad to k with (+inf, -1).
    for (int q = owner; q < p.nq; q += kOwners) {
      RowSelect st = query_select(p, sm, w, q);
      if (st.count > 0) flush(st);
      const bool in_smem = st.k <= kShortList;
      const std::int64_t slot = (q * static_cast<std::int64_t>(p.chunks) + w) * p.k;
      for (int j = lane; j < st.k; j += 32) {
        const bool have = j < st.m;
        if (in_smem || !have) {
          p.list_s[slot + j] = have ? st.list_s[j] : kInfScore;
          p.list_id[slot + j] = have ? st.list_id[j] : -1;
        }
      }
    }
    __syncwarp();
  }
}
#endif

template <class T, class Op, bool kTf32>
__global__ void __launch_bounds__(kSm90Threads, 1)
    topk_sm90_few_kernel(const __grid_constant__ CUtensorMap map_db,
                         const __grid_constant__ CUtensorMap map_q, const FewParams p) {
#if defined(MEGATAX_SM90A)
  extern __shared__ unsigned char smem_raw[];
  const RingView<Ring> ring(smem_raw);
  const FewSmem sm(ring.end());
  const int wg = static_cast<int>(threadIdx.x) / 128;
  ring.template init<1>();
  constexpr int kBK = kChunkBytes / static_cast<int>(sizeof(T));  // d a chunk
  const std::int64_t dchunks = (p.d + kBK - 1) / kBK;

  if (wg == 0) {
    sm90::setmaxnreg_dec<kSm90ProducerRegs>();
    if (threadIdx.x == 0) {
      sm90::prefetch_tensor_map(&map_db);
      sm90::prefetch_tensor_map(&map_q);
      RingCursor cur;
      for (std::int64_t w = blockIdx.x; w < p.chunks; w += gridDim.x) {
        const std::int64_t t0 = w * p.chunk_tiles;
        const std::int64_t t1 = min(t0 + p.chunk_tiles, p.tiles);
        for (std::int64_t t = t0; t < t1; ++t) {
          produce_tile<Ring, kQ, 1, kBK>(ring, cur, &map_db, &map_q, t * kRows, 0, dchunks, 0);
        }
      }
    }
  } else {
    consume<T, Op, kTf32>(p, ring, sm, wg - 1, dchunks);
  }
#else
  __trap();  // launched only on compute capability 9.0 with the sm_90a image (see usable())
#endif
}

template <class T, class Op, bool kTf32 = false>
void launch_typed(const Sm90TopkJob& job, const FewParams& p, int sm_count, cudaStream_t stream) {
  auto kernel = topk_sm90_few_kernel<T, Op, kTf32>;
  constexpr int kBK = kChunkBytes / static_cast<int>(sizeof(T));
  const CUtensorMap map_db = make_tensor_map_2d(job.database, job.database.rows, kRows, kBK);
  const CUtensorMap map_q = make_tensor_map_2d(job.queries, job.queries.rows, kQ, kBK);
  ClusterLaunch<1> launch(kernel, kSmemBytes, stream);
  launch.launch(kernel, sm_count, p.chunks, map_db, map_q, p);
  MEGATAX_CUDA_CHECK_LAUNCH("topk_sm90_few_kernel");
}

template <class Op>
void launch_dtype(const Sm90TopkJob& job, const FewParams& p, int sm_count, cudaStream_t stream) {
  if (job.queries.dtype == DType::kBF16) {
    launch_typed<__nv_bfloat16, Op>(job, p, sm_count, stream);
  } else if (job.queries.dtype == DType::kF16) {
    launch_typed<__half, Op>(job, p, sm_count, stream);
  } else if (f32_tensor_cores()) {
    launch_typed<float, Op, true>(job, p, sm_count, stream);
  } else {
    launch_typed<float, Op, false>(job, p, sm_count, stream);
  }
}

}  // namespace

bool sm90_topk_few_usable(const MatrixView& queries, const MatrixView& database) {
  if (const char* force = std::getenv("MEGATAX_CUDA_TOPK");
      force != nullptr && std::strcmp(force, "mma") == 0)
    return false;
  return queries.rows <= kSm90FewQueries && tma_compatible(queries, true) &&
         tma_compatible(database, true) && device_is_sm90();
}

std::size_t sm90_topk_few_scratch_bytes(std::int64_t) {
  return kQ * kBoundBuckets * sizeof(unsigned);
}

void launch_topk_sm90_few(const Sm90TopkJob& job, int sm_count, cudaStream_t stream) {
  FewParams p;
  p.nq = job.queries.rows;
  p.n = job.database.rows;
  p.d = job.queries.dim;
  p.db_norms = job.database_norms;
  p.k = job.k;
  p.tiles = (p.n + kRows - 1) / kRows;
  p.chunk_tiles = job.chunk_tiles;
  p.chunks = job.chunks;
  p.list_s = job.list_s;
  p.list_id = job.list_id;
  p.tau_keys = static_cast<unsigned*>(job.scratch);
  if (p.nq == 0 || p.chunks == 0) return;
  MEGATAX_CUDA_CHECK(
      cudaMemsetAsync(p.tau_keys, 0xff, kQ * kBoundBuckets * sizeof(unsigned), stream));
  if (job.l2) {
    launch_dtype<L2Op>(job, p, sm_count, stream);
  } else {
    launch_dtype<InnerProductOp>(job, p, sm_count, stream);
  }
}

}  // namespace megatax::cuda::detail
