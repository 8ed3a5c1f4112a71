// kernels/cuda/list_select.cuh -- top-k phase 2 for a few queries: one block a query chooses
// the k best entries of the query's chunk lists by a radix select, sorts and finalizes them.
//
// Contract (the warp merge's of topk.cu, the same entries, bits and order): a query's lists
// are [chunks][k] (score, id) pairs; an entry is a candidate unless its score is NaN (the
// union bound's unwritten positions) or it is (+inf, id < 0) (a short list's tail). The output
// is the k smallest candidates by (score, id), ties to the smaller id (ids are unique: each
// chunk has its own rows), sorted, each score turned into a distance by Op::finalize with the
// query's norm; (finalize(+inf), -1) past the candidates.
//
// How: the scores' order keys (float_order_key, -0 as +0: they compare equal) are selected
// most significant byte first -- four passes, each a 256-bin histogram of the next byte of
// the keys that share the digits chosen so far, and the byte of the bin that holds the k-th
// key -- which gives the k-th key and how many of its ties to take; if that is not all of
// them, eight more passes over the ties' ids (rare: equal scores, e.g. duplicate database
// rows). The keys of at most 16,384 entries stay in registers between passes (16 a thread);
// more are read again from L2, eight loads a thread in flight. Near scores share their top
// bits, so the histogram's shared atomics are aggregated per warp (__match_any_sync). Then
// the chosen entries are gathered into shared memory and bitonic-sorted by (key, id).
// With a few queries this replaced a warp merge of the lists through a 32-entry buffer into
// a k-list in global memory (two launches: a warp a group of lists, then a warp a query):
// 16 queries' 132 lists of k took 24 -> 11-12 us at k = 10 and 94-98 -> 30-35 us at k = 100
// on an H200 (bench/RESULTS.md, session 36).
// Tried: a bound from the lists' heads (the ceil(k / j)-th smallest of the lists' j-th
// entries, j = ceil(k / lists)) dropping most entries before the passes: k = 100 31-36 ->
// 27-29 us, the searches unchanged; one barrier a pass instead of three (histograms in turn,
// every warp picking): within 1-2% (session 36); a warp with nothing to count skipping its
// match, warp barriers between the final sort's steps of stride < 32 (3 block barriers
// instead of 28 at k = 100): 35-36 us at k = 100 either way -- the block is latency-bound
// throughout (ncu: issue slots 3% busy; session 38).
// Internal header: compiled by nvcc only.
#pragma once

#include <cstdint>

#include "kernels/cuda/distance_ops.cuh"
#include "kernels/cuda/warp_select.cuh"

namespace megatax::cuda::detail {

constexpr int kListSelectThreads = 1024;
constexpr int kListSelectCached = 16;  // keys a thread keeps in registers between passes
constexpr int kListSelectLoads = 8;    // loads a thread has in flight when they are re-read
constexpr std::uint32_t kNoCandidate = 0xffffffffu;  // above every float's key (+inf's: 0xff800000)

struct ListSelectParams {
  std::int64_t nq = 0;
  int k = 0;
  int chunks = 0;
  int sort_size = 1;                  // a power of two >= k: the shared-memory sort's length
  const float* list_s = nullptr;      // [nq][chunks][k]
  const std::int64_t* list_id = nullptr;
  const float* q_norms = nullptr;     // [nq] (L2)
  float* out_dist = nullptr;          // [nq][k]
  std::int64_t* out_id = nullptr;
};

// Shared-memory bytes of list_select_kernel (dynamic part).
inline std::size_t list_select_smem_bytes(int sort_size) {
  return static_cast<std::size_t>(sort_size) *
         (sizeof(std::int64_t) + sizeof(std::uint32_t) + sizeof(float));
}

// The order key of entry i, or kNoCandidate.
__device__ __forceinline__ std::uint32_t list_entry_key(const float* s, const std::int64_t* id,
                                                        std::int64_t i) {
  const float v = s[i];
  if (v != v) return kNoCandidate;
  if (v == kInfScore && id[i] < 0) return kNoCandidate;
  return float_order_key(v == 0.f ? 0.f : v);
}

// Adds the calling warp's digits (0..255; 256: not counted) to `hist`, one shared atomic per
// distinct digit. Called by all 32 lanes.
__device__ __forceinline__ void count_digits(unsigned* hist, unsigned digit) {
  const unsigned peers = __match_any_sync(0xffffffffu, digit);
  if (digit < 256 && static_cast<int>(threadIdx.x % 32) == __ffs(peers) - 1) {
    atomicAdd(&hist[digit], static_cast<unsigned>(__popc(peers)));
  }
}

struct DigitPick {
  unsigned digit;   // the byte whose bin holds the want-th entry (1-based) in key order
  unsigned below;   // entries in the lower bins
  unsigned in_bin;  // entries in that bin
  unsigned total;   // entries counted
};

// Warp 0: the bin of `hist` holding its want-th entry (want <= total, else only `total`).
__device__ __forceinline__ void pick_digit(const unsigned* hist, unsigned want, DigitPick* out) {
  if (threadIdx.x >= 32) return;
  const int lane = static_cast<int>(threadIdx.x);
  unsigned c[8], sum = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    c[j] = hist[lane * 8 + j];
    sum += c[j];
  }
  unsigned incl = sum;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const unsigned t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  const unsigned total = __shfl_sync(0xffffffffu, incl, 31);
  unsigned below = incl - sum;
  if (below < want && want <= incl) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (below < want && want <= below + c[j]) {
        out->digit = static_cast<unsigned>(lane * 8 + j);
        out->below = below;
        out->in_bin = c[j];
      }
      below += c[j];
    }
  }
  if (lane == 0) out->total = total;
}

// One block a query (grid: nq blocks of kListSelectThreads); dynamic shared memory:
// list_select_smem_bytes(p.sort_size).
template <class Op, bool kCached>
__device__ __forceinline__ void list_select_query(const ListSelectParams& p, unsigned char* smem) {
  __shared__ unsigned hist[256];
  __shared__ DigitPick pick;
  __shared__ unsigned taken;
  constexpr int T = kListSelectThreads;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32;
  const std::int64_t qi = blockIdx.x;
  const std::int64_t n = static_cast<std::int64_t>(p.chunks) * p.k;
  const float* ls = p.list_s + qi * n;
  const std::int64_t* lid = p.list_id + qi * n;
  auto* sel_id = reinterpret_cast<std::int64_t*>(smem);
  auto* sel_key = reinterpret_cast<std::uint32_t*>(sel_id + p.sort_size);
  auto* sel_s = reinterpret_cast<float*>(sel_key + p.sort_size);

  std::uint32_t keys[kCached ? kListSelectCached : 1];
  if constexpr (kCached) {
#pragma unroll
    for (int r = 0; r < kListSelectCached; ++r) {
      const std::int64_t i = tid + static_cast<std::int64_t>(r) * T;
      keys[r] = i < n ? list_entry_key(ls, lid, i) : kNoCandidate;
    }
  }
  // f(i, key) for every entry (key kNoCandidate past n), all lanes of a warp together.
  auto visit = [&](auto&& f) {
    if constexpr (kCached) {
#pragma unroll
      for (int r = 0; r < kListSelectCached; ++r) {
        if (static_cast<std::int64_t>(r) * T >= n) break;  // block-uniform
        f(tid + static_cast<std::int64_t>(r) * T, keys[r]);
      }
    } else {
      for (std::int64_t b = 0; b < n; b += kListSelectLoads * T) {
        std::uint32_t kk[kListSelectLoads];
#pragma unroll
        for (int r = 0; r < kListSelectLoads; ++r) {
          const std::int64_t i = b + static_cast<std::int64_t>(r) * T + tid;
          kk[r] = i < n ? list_entry_key(ls, lid, i) : kNoCandidate;
        }
#pragma unroll
        for (int r = 0; r < kListSelectLoads; ++r) {
          f(b + static_cast<std::int64_t>(r) * T + tid, kk[r]);
        }
      }
    }
  };
  // Histogram passes: hist is cleared, digit_of(i, key) (256: not counted) counted, and warp 0
  // picks the bin of the want-th entry; every thread then reads `pick`. (The next pass's
  // clearing needs no barrier before it: only warp 0 read hist, before the last barrier.)
  auto pass = [&](unsigned want, auto&& digit_of) {
    if (tid < 256) hist[tid] = 0;
    __syncthreads();
    visit([&](std::int64_t i, std::uint32_t key) { count_digits(hist, digit_of(i, key)); });
    __syncthreads();
    pick_digit(hist, want, &pick);
    __syncthreads();
  };

  // The k-th smallest key (or the largest of a bin taken whole) and how many of its ties the k
  // best take.
  std::uint32_t kth = 0, mask = 0;
  unsigned want = static_cast<unsigned>(p.k), ties = 0;
  bool all = false;  // at most k candidates: every one is taken
  for (int shift = 24; shift >= 0; shift -= 8) {
    pass(want, [&](std::int64_t, std::uint32_t key) {
      return key != kNoCandidate && (key & mask) == kth ? (key >> shift) & 255u : 256u;
    });
    if (shift == 24 && pick.total <= want) {
      all = true;
      break;
    }
    kth |= pick.digit << shift;
    mask |= 255u << shift;
    want -= pick.below;
    ties = pick.in_bin;
    if (want == ties) {  // the whole bin is taken: every key up to its largest
      kth |= ~mask;
      break;
    }
  }
  // The ties of the k-th key taken: ids up to id_limit (the want-th smallest of them).
  std::uint64_t id_limit = ~std::uint64_t{0};
  if (!all && want < ties) {
    std::uint64_t prefix = 0, id_mask = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
      pass(want, [&](std::int64_t i, std::uint32_t key) {
        if (key != kth) return 256u;
        const auto id = static_cast<std::uint64_t>(lid[i]);
        return (id & id_mask) == prefix ? static_cast<unsigned>(id >> shift) & 255u : 256u;
      });
      prefix |= static_cast<std::uint64_t>(pick.digit) << shift;
      id_mask |= std::uint64_t{255} << shift;
      want -= pick.below;
    }
    id_limit = prefix;
  }

  // Gather the chosen entries (warp-aggregated slots), pad to the sort's length, sort.
  if (tid == 0) taken = 0;
  __syncthreads();
  visit([&](std::int64_t i, std::uint32_t key) {
    const bool take = key != kNoCandidate &&
                      (all || key < kth ||
                       (key == kth && static_cast<std::uint64_t>(lid[i]) <= id_limit));
    const unsigned ballot = __ballot_sync(0xffffffffu, take);
    unsigned base = 0;
    if (lane == 0 && ballot != 0) base = atomicAdd(&taken, static_cast<unsigned>(__popc(ballot)));
    base = __shfl_sync(0xffffffffu, base, 0);
    if (take) {
      const unsigned at = base + static_cast<unsigned>(__popc(ballot & ((1u << lane) - 1)));
      sel_key[at] = key;
      sel_id[at] = lid[i];
      sel_s[at] = ls[i];
    }
  });
  __syncthreads();
  const int m = static_cast<int>(taken);  // min(k, candidates)
  for (int i = m + tid; i < p.sort_size; i += T) {
    sel_key[i] = kNoCandidate;
    sel_id[i] = kNoId;
  }
  __syncthreads();
  for (int size = 2; size <= p.sort_size; size *= 2) {
    for (int stride = size / 2; stride > 0; stride /= 2) {
      for (int i = tid; i < p.sort_size; i += T) {
        const int j = i ^ stride;
        if (j <= i) continue;
        const std::uint32_t ki = sel_key[i], kj = sel_key[j];
        const bool greater = ki > kj || (ki == kj && sel_id[i] > sel_id[j]);
        if (greater == ((i & size) == 0)) {
          sel_key[i] = kj;
          sel_key[j] = ki;
          const std::int64_t t = sel_id[i];
          sel_id[i] = sel_id[j];
          sel_id[j] = t;
          const float s = sel_s[i];
          sel_s[i] = sel_s[j];
          sel_s[j] = s;
        }
      }
      __syncthreads();
    }
  }
  const float qn = Op::kUsesNorms ? p.q_norms[qi] : 0.f;
  for (int i = tid; i < p.k; i += T) {
    p.out_dist[qi * p.k + i] = Op::finalize(i < m ? sel_s[i] : kInfScore, qn);
    p.out_id[qi * p.k + i] = i < m ? sel_id[i] : -1;
  }
}

template <class Op>
__global__ void __launch_bounds__(kListSelectThreads) list_select_kernel(const ListSelectParams p) {
  extern __shared__ __align__(16) unsigned char list_select_smem[];
  if (static_cast<std::int64_t>(p.chunks) * p.k <=
      static_cast<std::int64_t>(kListSelectThreads) * kListSelectCached) {
    list_select_query<Op, true>(p, list_select_smem);
  } else {
    list_select_query<Op, false>(p, list_select_smem);
  }
}

}  // namespace megatax::cuda::detail
