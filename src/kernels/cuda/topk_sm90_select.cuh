// kernels/cuda/topk_sm90_select.cuh -- the selection epilogue of the many-query Hopper top-k
// (topk_sm90.cu), apart from its main loop.
//
// After a database tile's MMAs a consumer warp holds, per 64-row block of its warpgroup's
// accumulators, two query rows' dot products against BN / 4 database rows each (wgmma's
// register layout: a row's BN columns live in the four lanes of one quad). A thread's "parts"
// are those rows: part 2 b + h is row lane / 4 + 8 h of block b (the kernel's warpgroups hold
// one block: kParts = 2; the functions take kParts / 2 blocks, a layout where one warpgroup
// multiplies all 128 queries). A warp owns 16 rows a block (its local rows: local row r is row
// base + (r / 16) * 64 + r % 16 of the CTA's query block), so the selection needs no
// synchronisation beyond __syncwarp:
//
//   score    dot products become scores in place (column terms ||c||^2 from a shared copy),
//            each thread keeps the smallest score of each 8-score group of its parts (and the
//            smallest of those a part). Two instructions a score.
//   filter   a part whose smallest score does not beat the row's threshold is done: the
//            smaller of the row's own tau (its k-th best so far, +inf until k are known) and
//            the query's shared bound (shared_bound.cuh: the chunks' lists vouch for k scores
//            at or below it). Most tiles end here after the first few of a chunk.
//   slots    otherwise the thread appends the passing scores to its own kSlots slots per part
//            (shared memory; only the groups whose smallest passes are looked into); later
//            (drain_slots, which the kernel runs while the next tile's first MMAs are in
//            flight) the warp offers them all at once: each lane
//            compares its candidates with its row's threshold and appends the survivors to
//            the row's 32-entry buffer (a shared atomic on the row's count); full buffers are
//            merged into the row's sorted list (warp_select.cuh flush, the list being the
//            (query, chunk) slot of the output lists in global memory).
//   publish  a flush publishes the chunk's bound_j-th score to the query's buckets at once;
//            for k < 32 the row is marked instead, and after the next tile's selection, with
//            the accumulators free, the warp publishes the union bound of the query's lists
//            (publish_flushed_rows: reads them back from L2).
//   overflow a tile where some thread has more than kSlots candidates (the first tiles of a
//            chunk) goes through per-row scratch areas in global memory (BN entries a row,
//            atomics) and row-by-row offers instead.
//
// Candidates are ordered by (score, id), ties to the smaller id, as the portable kernel (the
// lists are the same whatever the tile order).
//
// Internal header: compiled by nvcc only.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/distance_ops.cuh"
#include "kernels/cuda/shared_bound.cuh"
#include "kernels/cuda/topk_sm90.h"
#include "kernels/cuda/warp_select.cuh"

namespace megatax::cuda::detail {

// A staged candidate: score and database row (n < 2^31: TMA's limit too).
struct Candidate {
  float s;
  std::int32_t id;
};

// The selection state of one query row (shared memory); its candidate buffer is apart.
struct RowState {
  std::int64_t tau_id;
  float tau_s;
  int m;
  int count;   // entries in the row's buffer
  int staged;  // candidates in the row's scratch area
  int publish;  // the row flushed since its union bound was last published (union_bound)
  int padding;
};
static_assert(sizeof(RowState) % 8 == 0, "row states stay 8-byte aligned");

// Entries of a row's candidate buffer (warp_select.cuh's).
constexpr int kRowBuffer = 32;

// A thread's candidate slots per part (the filter's fast path).
constexpr int kSlots = 6;

struct TopkSm90Params {
  std::int64_t nq = 0, n = 0, d = 0;
  const float* db_norms = nullptr;
  int k = 0;
  std::int64_t tiles = 0, chunk_tiles = 0;  // in kSm90TopkBN-row tiles
  int chunks = 0;
  std::int64_t query_clusters = 0, items = 0;
  float* list_s = nullptr;
  std::int64_t* list_id = nullptr;
  Candidate* scratch = nullptr;  // [grid CTAs][128 rows][kSm90TopkBN]
  // [nq][buckets]: the shared bounds (shared_bound.cuh); kBoundBuckets for k >= 32 (chunk
  // bounds), else 1.
  unsigned* tau_keys = nullptr;
  int buckets = 1;
  // Publish the union bound (shared_bound.cuh) instead of the chunk's bound_j-th score
  // (buckets is then 1).
  bool union_bound = false;
  // The rank of the score a chunk publishes to its bucket: bound_rank(k, buckets).
  int bound_j = 0;
  // A seed run (topk_sm90.cu's seed_bounds): [nq][tiles * seed_values_per_tile], each
  // thread's smallest scores of a tile (4 a row: a quad's lanes'; 32: their 8-score groups');
  // null in a full run.
  float* seed_values = nullptr;
  int seed_values_per_tile = 0;
};

struct TopkWork {
  std::int64_t row0;    // the CTA's first query row
  int chunk;
  std::int64_t t0, t1;  // database tiles
};

template <int kCluster>
__device__ __forceinline__ TopkWork topk_work(const TopkSm90Params& p, std::int64_t w,
                                              int cta_rank) {
  TopkWork r;
  r.chunk = static_cast<int>(w / p.query_clusters);
  r.row0 = ((w % p.query_clusters) * kCluster + cta_rank) * 128;
  r.t0 = r.chunk * p.chunk_tiles;
  r.t1 = min(r.t0 + p.chunk_tiles, p.tiles);
  return r;
}

// A launch's device scratch (topk_sm90.h's sm90_topk_scratch_bytes): per CTA of the persistent
// grid (at most one an SM) its 128 rows' scratch areas (kSm90TopkBN candidates a row), then
// the queries' shared bounds ([queries][kBoundBuckets]).
struct Sm90TopkScratch {
  Candidate* areas;
  unsigned* tau_keys;

  static std::int64_t area_entries(int sm_count) {
    return std::int64_t{std::max(sm_count, 1)} * 128 * kSm90TopkBN;
  }
  static std::size_t bytes(int sm_count, std::int64_t query_rows) {
    return static_cast<std::size_t>(area_entries(sm_count)) * sizeof(Candidate) +
           static_cast<std::size_t>(std::max<std::int64_t>(query_rows, 1)) * kBoundBuckets *
               sizeof(unsigned);
  }
  Sm90TopkScratch(void* base, int sm_count)
      : areas(static_cast<Candidate*>(base)),
        tau_keys(reinterpret_cast<unsigned*>(areas + area_entries(sm_count))) {}
};

// The rows a warp owns, by local index.
struct WarpRows {
  RowState* states;      // [rows]
  float* buf_s;          // [rows][kRowBuffer]
  std::int64_t* buf_id;  // [rows][kRowBuffer]
  std::int64_t row0;     // the item's first query (row 0 of the CTA's block)
  int base;              // the block row of local row 0

  __device__ __forceinline__ std::int64_t query(int r) const {
    return row0 + base + (r / 16) * 64 + r % 16;
  }
};

// The local row of a thread's part.
__device__ __forceinline__ int part_row(int part, int lane) {
  return (part / 2) * 16 + lane / 4 + 8 * (part % 2);
}

// thr = min(thr, the shared bound) for each part (fminf ignores the NaN of "none yet"; rows
// past the queries keep their NaN).
template <int kBuckets, int kParts>
__device__ __forceinline__ void tighten(unsigned (&key)[kParts], float (&thr)[kParts]) {
#pragma unroll
  for (int h = 0; h < kParts; ++h) {
    if constexpr (kBuckets > 1) {
      key[h] = max(key[h], __shfl_xor_sync(0xffffffffu, key[h], 1));
      key[h] = max(key[h], __shfl_xor_sync(0xffffffffu, key[h], 2));
    }
    if (thr[h] == thr[h]) thr[h] = fminf(thr[h], float_from_order_key(key[h]));
  }
}

// The queries' shared bounds (shared_bound.cuh) of the thread's parts, read while the MMAs
// run; of kBoundBuckets buckets, the four lanes of a row's quad read two each (tighten then
// takes the largest over the quad). Rows past the queries read query 0's.
template <int kBuckets, int kParts>
__device__ __forceinline__ void load_shared_bounds(const TopkSm90Params& p, const WarpRows& wr,
                                                   int lane, unsigned (&key)[kParts]) {
#pragma unroll
  for (int h = 0; h < kParts; ++h) {
    std::int64_t q = wr.query(part_row(h, lane));
    q = q < p.nq ? q : 0;
    if constexpr (kBuckets == 1) {
      key[h] = __ldcg(p.tau_keys + q);
    } else {
      const uint2 b =
          __ldcg(reinterpret_cast<const uint2*>(p.tau_keys + q * kBoundBuckets) + lane % 4);
      key[h] = max(b.x, b.y);
    }
  }
}

// A thread's scores of one row of a block fall into kScoreGroups groups of 8 (4 column steps j
// x 2 adjacent columns): group g holds columns j * 8 + (lane % 4) * 2 + e, j in [4 g, 4 g + 4).
template <int BN>
inline constexpr int kScoreGroups = BN / 32;

// Turns one block's dot products into scores in place (NaN for columns past the database,
// which then never pass a filter) and keeps the smallest score of each group of each of the
// thread's two rows of the block (gmin0: row part 0, gmin1: part 1; the same two
// instructions a score as keeping one smallest a row). tile_norms: the tile's column terms in
// shared memory (tile_norms[i]: column col0 + i). kFull: every column exists.
template <class Op, bool kFull, int BN>
__device__ __forceinline__ void score_block(float (&acc)[BN / 2], const float* tile_norms,
                                            std::int64_t n, std::int64_t col0, int lane,
                                            float (&gmin0)[kScoreGroups<BN>],
                                            float (&gmin1)[kScoreGroups<BN>]) {
#pragma unroll
  for (int g = 0; g < kScoreGroups<BN>; ++g) {
    gmin0[g] = gmin1[g] = __int_as_float(0x7fc00000);  // fminf ignores NaN operands
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) {
      const int j = 4 * g + jj;
      const int c = j * 8 + (lane % 4) * 2;
      const bool ok0 = kFull || col0 + c < n, ok1 = kFull || col0 + c + 1 < n;
      float2 ct = make_float2(0.f, 0.f);
      if constexpr (Op::kUsesNorms) ct = *reinterpret_cast<const float2*>(tile_norms + c);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float& s0 = acc[4 * j + 2 * h];
        float& s1 = acc[4 * j + 2 * h + 1];
        s0 = ok0 ? Op::score(s0, ct.x) : __int_as_float(0x7fc00000);
        s1 = ok1 ? Op::score(s1, ct.y) : __int_as_float(0x7fc00000);
        float& m = h == 0 ? gmin0[g] : gmin1[g];
        m = fminf(m, fminf(s0, s1));
      }
    }
  }
}

// score_block over the thread's kParts / 2 blocks, the tile full or not; lowest[h]: the
// smallest of part h's group minima (the filter's test).
template <class Op, int BN, int kParts>
__device__ __forceinline__ void score_tile(float (&acc)[kParts / 2][BN / 2],
                                           const float* tile_norms, std::int64_t n,
                                           std::int64_t col0, int lane,
                                           float (&gmin)[kParts][kScoreGroups<BN>],
                                           float (&lowest)[kParts]) {
  if (col0 + BN <= n) {
#pragma unroll
    for (int b = 0; b < kParts / 2; ++b) {
      score_block<Op, true, BN>(acc[b], tile_norms, n, col0, lane, gmin[2 * b], gmin[2 * b + 1]);
    }
  } else {
#pragma unroll
    for (int b = 0; b < kParts / 2; ++b) {
      score_block<Op, false, BN>(acc[b], tile_norms, n, col0, lane, gmin[2 * b], gmin[2 * b + 1]);
    }
  }
#pragma unroll
  for (int h = 0; h < kParts; ++h) {
    lowest[h] = gmin[h][0];
#pragma unroll
    for (int g = 1; g < kScoreGroups<BN>; ++g) lowest[h] = fminf(lowest[h], gmin[h][g]);
  }
}

// Appends the scores of row h of a block that pass the threshold to the thread's own
// candidate slots (kSlots of them; `count` goes on counting past them: an overflow). Only
// the groups whose smallest passes are looked into: a part that takes a candidate usually
// takes one or two, in one group of its eight. (Comparing all 64 scores for the groups' pass
// bits first, as before session 35, cost 1-12% more time at Q=1024, bench/RESULTS.md.)
template <int h, int BN>
__device__ __forceinline__ void slot_candidates(const float (&acc)[BN / 2],
                                                const float (&gmin)[kScoreGroups<BN>],
                                                std::int64_t col0, int lane, float thr,
                                                Candidate* slots, int& count) {
#pragma unroll
  for (int g = 0; g < kScoreGroups<BN>; ++g) {
    if (!(gmin[g] <= thr)) continue;
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int j = 4 * g + jj;
        const float sc = acc[4 * j + 2 * h + e];
        const bool pass = sc <= thr;
        if (pass && count < kSlots) {
          slots[count] =
              Candidate{sc, static_cast<std::int32_t>(col0 + j * 8 + (lane % 4) * 2 + e)};
        }
        count += pass ? 1 : 0;
      }
    }
  }
}

// The exhaustive form (a tile where some thread's slots overflowed), for block b: every
// passing score is appended to its row's scratch area (BN entries a local row, `areas` being
// the warp's) at the row's shared counter.
template <int BN>
__device__ __forceinline__ void stage_block(const float (&acc)[BN / 2], std::int64_t col0,
                                            int lane, float thr0, float thr1, const WarpRows& wr,
                                            int b, Candidate* areas) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = part_row(2 * b + h, lane);
    RowState* row = wr.states + r;
    Candidate* area = areas + r * BN;
    const float thr = h == 0 ? thr0 : thr1;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float s = acc[4 * j + 2 * h + e];
        if (s <= thr) {
          const int pos = atomicAdd(&row->staged, 1);
          area[pos] = Candidate{s, static_cast<std::int32_t>(col0 + j * 8 + (lane % 4) * 2 + e)};
        }
      }
    }
  }
}

// The warp-uniform selection state of local row r (whose query is wr.query(r)).
__device__ __forceinline__ RowSelect row_select(const TopkSm90Params& p, int chunk,
                                                const WarpRows& wr, int r) {
  RowSelect st;
  const RowState& rs = wr.states[r];
  const std::int64_t slot = (wr.query(r) * p.chunks + chunk) * p.k;
  st.list_s = p.list_s + slot;
  st.list_id = p.list_id + slot;
  st.buf_s = wr.buf_s + r * kRowBuffer;
  st.buf_id = wr.buf_id + r * kRowBuffer;
  st.k = p.k;
  st.m = rs.m;
  st.count = rs.count;
  st.tau_s = rs.tau_s;
  st.tau_id = rs.tau_id;
  st.short_merge = true;  // few warps an SM: a flush's latency is exposed
  st.bound_j = p.bound_j;
  return st;
}

// Stores local row r's selection state and publishes its query's shared bound.
__device__ __forceinline__ void keep_row_select(const TopkSm90Params& p, int chunk,
                                                const WarpRows& wr, int r, const RowSelect& st,
                                                int lane) {
  __syncwarp();
  if (lane == 0) {
    RowState& rs = wr.states[r];
    rs.m = st.m;
    rs.count = st.count;
    rs.tau_s = st.tau_s;
    rs.tau_id = st.tau_id;
    rs.staged = 0;
    if (!p.union_bound) {
      publish_bound(p.tau_keys, p.buckets, wr.query(r), chunk, st);
    } else if (st.flushes > 0) {
      rs.publish = 1;  // publish_flushed_rows, once the accumulators are free
    }
  }
  __syncwarp();
}

// The union bounds (shared_bound.cuh) of the warp's rows that flushed since the last call: run
// by the kernel after a tile's selection, where the accumulators' registers are free (inside
// a drain, with the next tile's MMAs in flight, the consumers spilled).
template <int kParts>
__device__ __forceinline__ void publish_flushed_rows(const TopkSm90Params& p, int chunk,
                                                     const WarpRows& wr, int lane) {
  __syncwarp();
  const bool flushed = lane < 8 * kParts && wr.states[lane].publish != 0;
  unsigned rows = __ballot_sync(0xffffffffu, flushed);
  if (flushed) wr.states[lane].publish = 0;
  while (rows != 0) {
    const int r = __ffs(rows) - 1;
    rows &= rows - 1;
    const std::int64_t q = wr.query(r);
    publish_union_bound(p.tau_keys, q, p.list_s + q * p.chunks * p.k, p.chunks, p.k, chunk,
                        lane);
  }
  __syncwarp();
}

// The warp offers the candidates in its threads' slots (this thread's: `slots`, part h at
// h * 32 * kSlots, count[h] of them, none above kSlots) to their rows' selections. Every lane
// offers its own candidates at once: one compare with the row's threshold and, for those that
// pass, an append to the row's buffer (shared atomic); a row whose buffer is full is flushed
// by the whole warp and its waiting candidates are offered again.
template <int kParts>
__device__ __forceinline__ void drain_slots(const TopkSm90Params& p, int chunk,
                                            const WarpRows& wr, const Candidate* slots,
                                            const int (&count)[kParts], int lane) {
  constexpr int kWarpRows = 8 * kParts;
  // count[h] by selects (a runtime index would put the array in local memory).
  auto count_of = [&](int h) {
    int n = 0;
#pragma unroll
    for (int j = 0; j < kParts; ++j) n = j == h ? count[j] : n;
    return n;
  };
  int h = 0, i = 0;  // this lane's next candidate
  while (true) {
    while (h < kParts && i >= count_of(h)) {
      ++h;
      i = 0;
    }
    const bool have = h < kParts;
    bool waits = false;
    if (have) {
      const int r = part_row(h, lane);
      RowState* rs = wr.states + r;
      const Candidate c = slots[h * 32 * kSlots + i];
      if (key_less(c.s, c.id, rs->tau_s, rs->tau_id)) {
        const int pos = atomicAdd(&rs->count, 1);
        if (pos < kRowBuffer) {
          wr.buf_s[r * kRowBuffer + pos] = c.s;
          wr.buf_id[r * kRowBuffer + pos] = c.id;
        } else {
          waits = true;  // offered again after the row's flush
        }
      }
      if (!waits) ++i;
    }
    __syncwarp();
    if (!__any_sync(0xffffffffu, have)) break;
    // Rows with a full buffer: flush them one by one.
    const int row_count = lane < kWarpRows ? wr.states[lane].count : 0;
    unsigned full = __ballot_sync(0xffffffffu, row_count >= kRowBuffer);
    while (full != 0) {
      const int r = __ffs(full) - 1;
      full &= full - 1;
      __syncwarp();
      if (lane == 0) wr.states[r].count = kRowBuffer;
      __syncwarp();
      RowSelect st = row_select(p, chunk, wr, r);
      flush(st);
      keep_row_select(p, chunk, wr, r, st, lane);
    }
  }
}

// A row's first candidates, `staged` (> 32) of them in its scratch area, fill its list
// (select_empty_row). A function of its own: inlined, its registers raised the consumers'
// spills in some of the kernel's forms (ptxas -v).
template <int BN>
__device__ __noinline__ void fill_row_from_area(RowSelect& st, Candidate* area, int staged,
                                                int lane) {
  constexpr int R = BN / 32;
  float s[R];
  std::int32_t id[R];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const Candidate c =
        32 * i + lane < staged ? area[32 * i + lane] : Candidate{kInfScore, INT32_MAX};
    s[i] = c.s;
    id[i] = c.id;
  }
  select_empty_row<R>(st, s, id, staged, area);
}

// The warp offers its rows' staged candidates (scratch areas, BN entries a local row) to
// their selections. A row's first candidates (a chunk's first tile passes all its rows) fill
// its list at once (select_empty_row: at k <= 128 the k best of them chosen, then sorted)
// instead of a flush for every 32 offered.
template <int BN, int kParts>
__device__ __forceinline__ void drain_staged(const TopkSm90Params& p, int chunk,
                                             const WarpRows& wr, Candidate* areas, int lane) {
  constexpr int kWarpRows = 8 * kParts;
  __syncwarp();  // staged candidates and counters of the other lanes are visible after this
  const int mine = lane < kWarpRows ? wr.states[lane].staged : 0;
  unsigned pending = __ballot_sync(0xffffffffu, mine > 0);
  while (pending != 0) {
    const int r = __ffs(pending) - 1;
    pending &= pending - 1;
    const int staged = __shfl_sync(0xffffffffu, mine, r);
    RowSelect st = row_select(p, chunk, wr, r);
    Candidate* area = areas + r * BN;
    if (st.m == 0 && st.count == 0 && staged > 32) {
      fill_row_from_area<BN>(st, area, staged, lane);
    } else {
      for (int b = 0; b < staged; b += 32) {
        const bool valid = b + lane < staged;
        const Candidate c = valid ? area[b + lane] : Candidate{kInfScore, 0};
        offer(st, c.s, c.id, valid);
      }
    }
    keep_row_select(p, chunk, wr, r, st, lane);
  }
}

// What select_tile left to do.
enum class TileSelect {
  kNone,     // no score of the warp's rows beat its threshold
  kDone,     // candidates went through the scratch areas (an overflow): the rows' taus may
             // have moved
  kPending,  // candidates wait in the threads' slots (`count`) for drain_slots, which the
             // caller runs while the next tile's first MMAs are in flight
};

// One tile's selection after score_tile: the filter, then the slots or (a thread's slots
// overflowing) the scratch areas. thr: the thread's parts' thresholds (NaN: a row past the
// queries). areas: the warp's scratch areas. The result is warp-uniform.
template <int BN, int kParts>
__device__ __forceinline__ TileSelect select_tile(
    const TopkSm90Params& p, int chunk, const WarpRows& wr, const float (&acc)[kParts / 2][BN / 2],
    std::int64_t col0, int lane, const float (&thr)[kParts], const float (&lowest)[kParts],
    const float (&gmin)[kParts][kScoreGroups<BN>], Candidate* slots, int (&count)[kParts],
    Candidate* areas) {
#pragma unroll
  for (int b = 0; b < kParts / 2; ++b) {
    count[2 * b] = count[2 * b + 1] = 0;
    if (lowest[2 * b] <= thr[2 * b]) {
      slot_candidates<0, BN>(acc[b], gmin[2 * b], col0, lane, thr[2 * b],
                             slots + 2 * b * 32 * kSlots, count[2 * b]);
    }
    if (lowest[2 * b + 1] <= thr[2 * b + 1]) {
      slot_candidates<1, BN>(acc[b], gmin[2 * b + 1], col0, lane, thr[2 * b + 1],
                             slots + (2 * b + 1) * 32 * kSlots, count[2 * b + 1]);
    }
  }
  bool overflow = false, any = false;
#pragma unroll
  for (int h = 0; h < kParts; ++h) {
    overflow = overflow || count[h] > kSlots;
    any = any || count[h] > 0;
  }
  if (__any_sync(0xffffffffu, overflow)) {
#pragma unroll
    for (int b = 0; b < kParts / 2; ++b) {
      stage_block<BN>(acc[b], col0, lane, thr[2 * b], thr[2 * b + 1], wr, b, areas);
    }
    drain_staged<BN, kParts>(p, chunk, wr, areas, lane);
    return TileSelect::kDone;
  }
  return __any_sync(0xffffffffu, any) ? TileSelect::kPending : TileSelect::kNone;
}

// A work item's start: the warp's rows hold nothing yet.
template <int kParts>
__device__ __forceinline__ void reset_rows(const WarpRows& wr, int lane) {
  if (lane < 8 * kParts) {
    RowState& rs = wr.states[lane];
    rs.m = 0;
    rs.count = 0;
    rs.staged = 0;
    rs.publish = 0;
    rs.tau_s = kInfScore;
    rs.tau_id = kNoId;
  }
  __syncwarp();
}

// A work item's end: the warp's rows' lists (flush the buffers, pad to k with (+inf, -1)).
template <int kParts>
__device__ __forceinline__ void finish_rows(const TopkSm90Params& p, int chunk,
                                            const WarpRows& wr, int lane) {
  for (int r = 0; r < 8 * kParts; ++r) {
    if (wr.query(r) >= p.nq) break;  // local rows run in query order
    RowSelect st = row_select(p, chunk, wr, r);
    if (st.count > 0) {
      flush(st);
      // The item's last candidates count in its query's bound too (chunks still running get
      // them; session 41).
      if (!p.union_bound && lane == 0) publish_bound(p.tau_keys, p.buckets, wr.query(r), chunk, st);
    }
    for (int j = st.m + lane; j < st.k; j += 32) {
      st.list_s[j] = kInfScore;
      st.list_id[j] = -1;
    }
  }
  __syncwarp();
}

}  // namespace megatax::cuda::detail
