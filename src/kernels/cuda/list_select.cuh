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
// most significant byte first -- passes, each a 256-bin histogram of the next byte of the keys
// that share the digits chosen so far, and the byte of the bin that holds the k-th key --
// which gives the k-th key and how many of its ties to take; if that is not all of them,
// eight more passes over the ties' ids (rare: equal scores, e.g. duplicate database rows).
// Near scores share their top bits, so the histogram's shared atomics are aggregated per warp
// (__match_any_sync). Then the chosen entries are gathered into shared memory and placed by
// rank (at most kListSelectRankMax of them: each counts the entries before it) or
// bitonic-sorted by (key, id).
// The candidates first: phase 1's shared bound for the query (shared_bound.cuh; the
// few-query Hopper kernel's eight buckets, the many-query one's one word or eight, the
// portable kernels' one word) vouches for k scores at or below it, so only the lists' heads
// at or below it can be chosen. Warps read the lists' heads (32 entries of five lists a
// warp at once, further only while all 32 pass) and gather those candidates into shared
// memory (up to kListSelectCompact; their smallest and largest keys tell which top bits
// they all share, so the passes start below those). Without a bound, or with more
// candidates, the passes read the lists themselves: the keys of at most 16,384 entries stay
// in registers between passes (16 a thread), more are read again from L2, eight loads a
// thread in flight. The selection runs in a function of its own for each source (not
// inlined: the block runs cold after phase 1, and a path kept apart from the others' code
// misses the instruction cache less).
// With a few queries this replaced a warp merge of the lists through a 32-entry buffer into
// a k-list in global memory (two launches: a warp a group of lists, then a warp a query):
// 16 queries' 132 lists of k took 24 -> 11-12 us at k = 10 and 94-98 -> 30-35 us at k = 100
// on an H200 (bench/RESULTS.md, session 36). With the bound, the gathered candidates and the
// rank (session 39; ncu, the same H200 and call): 35-36 -> 15 us at k = 100 (D=1024's lists:
// 30 -> 13.5 us), k = 10 unchanged (11 us). Where the time went (clock64 stamps, k = 100, a
// block's cycles at ~1.98 GHz): the first launch after phase 1 ~28k, an immediate second one
// of the same lists ~17k (a cold start: instruction cache, first loads); with the selection's
// code apart, 24k and 17k.
// Tried: a bound from the lists' heads (the ceil(k / j)-th smallest of the lists' j-th
// entries, j = ceil(k / lists)) dropping most entries before the passes: k = 100 31-36 ->
// 27-29 us, the searches unchanged (session 36; the passes still visited every entry); one
// barrier a pass instead of three (histograms in turn, every warp picking): within 1-2%
// (session 36); a warp with nothing to count skipping its match, warp barriers between the
// final sort's steps of stride < 32 (3 block barriers instead of 28 at k = 100): 35-36 us at
// k = 100 either way (session 38).
// Internal header: compiled by nvcc only.
#pragma once

#include <cstdint>

#include "kernels/cuda/distance_ops.cuh"
#include "kernels/cuda/warp_select.cuh"

namespace megatax::cuda::detail {

constexpr int kListSelectThreads = 1024;
constexpr int kListSelectCached = 16;  // keys a thread keeps in registers between passes
constexpr int kListSelectLoads = 8;    // loads a thread has in flight when they are re-read
constexpr int kListSelectCompact = 4096;  // candidates gathered into shared memory (else re-read)
constexpr int kListSelectRankMax = 256;   // up to this many chosen entries are placed by rank
constexpr std::uint32_t kNoCandidate = 0xffffffffu;  // above every float's key (+inf's: 0xff800000)

struct ListSelectParams {
  std::int64_t nq = 0;
  int k = 0;
  int chunks = 0;
  int sort_size = 4;                  // a power of two >= max(k, 4): the chosen entries' space
  const float* list_s = nullptr;      // [nq][chunks][k]
  const std::int64_t* list_id = nullptr;
  const float* q_norms = nullptr;     // [nq] (L2)
  float* out_dist = nullptr;          // [nq][k]
  std::int64_t* out_id = nullptr;
  // Phase 1's shared bounds ([nq][bound_buckets] order keys, shared_bound.cuh), or null: no
  // score above the largest of a query's words is among its k best, so such entries are
  // dropped before the passes.
  const unsigned* bound_keys = nullptr;
  int bound_buckets = 0;
};

// Shared-memory bytes of list_select_kernel (dynamic part): the chosen entries (sort_size:
// a power of two >= max(k, 4)) and the gathered candidates (kListSelectCompact), each a score,
// an id and (the chosen) a key.
inline std::size_t list_select_smem_bytes(int sort_size) {
  return static_cast<std::size_t>(sort_size) *
             (sizeof(std::int64_t) + sizeof(std::uint32_t) + sizeof(float)) +
         static_cast<std::size_t>(kListSelectCompact) * (sizeof(std::int64_t) + sizeof(float));
}

// The order key of entry i with score v = s[i], or kNoCandidate (not a candidate, or above
// `bound`). The score is passed in so that callers issue all their loads first (the id is read
// only for +inf scores).
__device__ __forceinline__ std::uint32_t list_entry_key(float v, const std::int64_t* id,
                                                        std::int64_t i, std::uint32_t bound) {
  if (v != v) return kNoCandidate;
  if (v == kInfScore && id[i] < 0) return kNoCandidate;
  const std::uint32_t key = float_order_key(v == 0.f ? 0.f : v);
  return key <= bound ? key : kNoCandidate;
}

// The largest key query qi's shared bound lets through (kNoCandidate: no bound; a bucket still
// unset reads as kNoCandidate too). -0 counts as +0, as in the lists' keys. Every warp reads
// the words, a lane each (at most 32 buckets).
__device__ __forceinline__ std::uint32_t list_bound_key(const ListSelectParams& p,
                                                        std::int64_t qi) {
  if (p.bound_keys == nullptr) return kNoCandidate;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const std::uint32_t w =
      lane < p.bound_buckets ? __ldg(p.bound_keys + qi * p.bound_buckets + lane) : 0u;
  const std::uint32_t b = __reduce_max_sync(0xffffffffu, w);
  return b == float_order_key(-0.f) ? float_order_key(0.f) : b;
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

// The block's shared memory (dynamic part, list_select_smem_bytes): the chosen entries
// (sort_size of them) and the gathered candidates (kListSelectCompact).
struct ListSelectSmem {
  std::int64_t* sel_id;
  std::int64_t* cand_id;
  std::uint32_t* sel_key;
  float* sel_s;
  float* cand_s;
  __device__ ListSelectSmem(unsigned char* smem, int sort_size) {
    sel_id = reinterpret_cast<std::int64_t*>(smem);
    cand_id = sel_id + sort_size;
    sel_key = reinterpret_cast<std::uint32_t*>(cand_id + kListSelectCompact);
    sel_s = reinterpret_cast<float*>(sel_key + sort_size);
    cand_s = sel_s + sort_size;
  }
};

// The candidates gathered into shared memory: visit(f) calls f(slot, key) for every one (and
// kNoCandidate keys past them), all lanes of a warp together.
struct GatheredCandidates {
  const float* s;
  const std::int64_t* id;
  int count;
  template <class F>
  __device__ __forceinline__ void visit(F&& f) const {
    const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
    for (int b = warp * 32; b < count; b += kListSelectThreads) {
      const int c = b + lane;
      const bool in = c < count;
      const float v = in ? s[c] : 0.f;
      f(std::int64_t{c}, in ? float_order_key(v == 0.f ? 0.f : v) : kNoCandidate);
    }
  }
  __device__ __forceinline__ std::int64_t id_at(std::int64_t x) const { return id[x]; }
  __device__ __forceinline__ float score_at(std::int64_t x) const { return s[x]; }
};

// The query's lists themselves: visit(f) calls f(index, key) for every entry (kNoCandidate:
// not a candidate or above the bound). kCached: at most kListSelectThreads * kListSelectCached
// entries, whose keys stay in registers; else they are read again each visit, kListSelectLoads
// loads a thread in flight.
template <bool kCached>
struct ListEntries {
  const float* ls;
  const std::int64_t* lid;
  std::int64_t n;
  std::uint32_t bound;
  std::uint32_t keys[kCached ? kListSelectCached : 1];

  __device__ __forceinline__ ListEntries(const float* s, const std::int64_t* id, std::int64_t count,
                                         std::uint32_t b)
      : ls(s), lid(id), n(count), bound(b) {
    if constexpr (kCached) {
      const int tid = static_cast<int>(threadIdx.x);
      float v[kListSelectCached];
#pragma unroll
      for (int r = 0; r < kListSelectCached; ++r) {
        const std::int64_t i = tid + static_cast<std::int64_t>(r) * kListSelectThreads;
        v[r] = i < n ? ls[i] : __int_as_float(0x7fffffff);
      }
#pragma unroll
      for (int r = 0; r < kListSelectCached; ++r) {
        keys[r] = list_entry_key(v[r], lid, tid + static_cast<std::int64_t>(r) * kListSelectThreads,
                                 bound);
      }
    }
  }
  template <class F>
  __device__ __forceinline__ void visit(F&& f) const {
    constexpr int T = kListSelectThreads;
    const int tid = static_cast<int>(threadIdx.x);
    if constexpr (kCached) {
#pragma unroll
      for (int r = 0; r < kListSelectCached; ++r) {
        if (static_cast<std::int64_t>(r) * T >= n) break;  // block-uniform
        f(tid + static_cast<std::int64_t>(r) * T, keys[r]);
      }
    } else {
      for (std::int64_t b = 0; b < n; b += kListSelectLoads * T) {
        float v[kListSelectLoads];
#pragma unroll
        for (int r = 0; r < kListSelectLoads; ++r) {
          const std::int64_t i = b + static_cast<std::int64_t>(r) * T + tid;
          v[r] = i < n ? ls[i] : __int_as_float(0x7fffffff);
        }
#pragma unroll
        for (int r = 0; r < kListSelectLoads; ++r) {
          const std::int64_t i = b + static_cast<std::int64_t>(r) * T + tid;
          f(i, list_entry_key(v[r], lid, i, bound));
        }
      }
    }
  }
  __device__ __forceinline__ std::int64_t id_at(std::int64_t x) const { return lid[x]; }
  __device__ __forceinline__ float score_at(std::int64_t x) const { return ls[x]; }
};

// Where the passes start: the bits of the keys above `hi` are those of kth (mask), known to be
// the k-th key's (all the candidates share them); first: the candidates are not counted yet.
struct SelectStart {
  std::uint32_t kth = 0, mask = 0;
  unsigned ties = 0;
  int hi = 32;
  bool all = false;  // at most k candidates: every one is taken
  bool first = true;
};

// The k best of the candidates `src` visits (Source: GatheredCandidates or ListEntries), sorted
// and finalized into the query's output. A function of its own (not inlined): the code a block
// runs is fetched once, so a path kept apart from the others' code costs fewer misses of the
// instruction cache (the kernel runs cold: the first launch after phase 1 took ~11k more cycles
// than an immediate second one, session 39).
template <class Op, class Source, class... SourceArgs>
__device__ __noinline__ void select_chosen(const ListSelectParams p, unsigned char* smem_base,
                                           SelectStart st, float qn, SourceArgs... source_args) {
  __shared__ unsigned hist[256];
  __shared__ DigitPick pick;
  __shared__ unsigned taken;
  constexpr int T = kListSelectThreads;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32;
  const unsigned lanes_below = (1u << lane) - 1;
  const std::int64_t qi = blockIdx.x;
  const int k = p.k;
  const ListSelectSmem sm(smem_base, p.sort_size);
  const Source src{source_args...};
  if (tid == 0) taken = 0;
  __syncthreads();  // before the gather's appends (no pass may run)

  // Histogram passes: hist is cleared, digit_of(x, key) (256: not counted) counted, and warp 0
  // picks the bin of the want-th entry; every thread then reads `pick`. (The next pass's
  // clearing needs no barrier before it: only warp 0 read hist, before the last barrier.)
  auto pass = [&](unsigned want, auto&& digit_of) {
    if (tid < 256) hist[tid] = 0;
    __syncthreads();
    src.visit([&](std::int64_t x, std::uint32_t key) { count_digits(hist, digit_of(x, key)); });
    __syncthreads();
    pick_digit(hist, want, &pick);
    __syncthreads();
  };

  // The k-th smallest key (or the largest of a bin taken whole) and how many of its ties the k
  // best take, eight bits a pass below `hi`.
  std::uint32_t kth = st.kth, mask = st.mask;
  unsigned want = static_cast<unsigned>(k), ties = st.ties;
  bool all = st.all, first = st.first;
  int hi = st.hi;
  while (!all && hi > 0) {
    const int lo = hi > 8 ? hi - 8 : 0;
    const std::uint32_t bits = (1u << (hi - lo)) - 1;
    pass(want, [&](std::int64_t, std::uint32_t key) {
      return key != kNoCandidate && (key & mask) == kth ? (key >> lo) & bits : 256u;
    });
    if (first && pick.total <= want) {
      all = true;
      break;
    }
    first = false;
    kth |= pick.digit << lo;
    mask |= bits << lo;
    want -= pick.below;
    ties = pick.in_bin;
    if (want == ties) {  // the whole bin is taken: every key up to its largest
      kth |= ~mask;
      break;
    }
    hi = lo;
  }
  // The ties of the k-th key taken: ids up to id_limit (the want-th smallest of them).
  std::uint64_t id_limit = ~std::uint64_t{0};
  if (!all && want < ties) {
    std::uint64_t prefix = 0, id_mask = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
      pass(want, [&](std::int64_t x, std::uint32_t key) {
        if (key != kth) return 256u;
        const auto id = static_cast<std::uint64_t>(src.id_at(x));
        return (id & id_mask) == prefix ? static_cast<unsigned>(id >> shift) & 255u : 256u;
      });
      prefix |= static_cast<std::uint64_t>(pick.digit) << shift;
      id_mask |= std::uint64_t{255} << shift;
      want -= pick.below;
    }
    id_limit = prefix;
  }

  // Gather the chosen entries (warp-aggregated slots).
  src.visit([&](std::int64_t x, std::uint32_t key) {
    const bool take = key != kNoCandidate &&
                      (all || key < kth ||
                       (key == kth && static_cast<std::uint64_t>(src.id_at(x)) <= id_limit));
    const unsigned ballot = __ballot_sync(0xffffffffu, take);
    unsigned base = 0;
    if (lane == 0 && ballot != 0) base = atomicAdd(&taken, static_cast<unsigned>(__popc(ballot)));
    base = __shfl_sync(0xffffffffu, base, 0);
    if (take) {
      const unsigned at = base + static_cast<unsigned>(__popc(ballot & lanes_below));
      sm.sel_key[at] = key;
      sm.sel_id[at] = src.id_at(x);
      sm.sel_s[at] = src.score_at(x);
    }
  });
  __syncthreads();
  const int m = static_cast<int>(taken);  // min(k, candidates)
  float* out_dist = p.out_dist + qi * k;
  std::int64_t* out_id = p.out_id + qi * k;
  for (int i = m + tid; i < k; i += T) {
    out_dist[i] = Op::finalize(kInfScore, qn);
    out_id[i] = -1;
  }
  if (m <= kListSelectRankMax) {
    // Each entry's place: the entries before it in (key, id) order (ids are unique), counted
    // by its thread from shared memory, four keys a read (the same words for every lane; the
    // padding's keys, kNoCandidate, are above every key); ids only among equal keys.
    const auto* keys4 = reinterpret_cast<const uint4*>(sm.sel_key);
    for (int t = tid; t < m; t += T) {
      const std::uint32_t kt = sm.sel_key[t];
      const std::int64_t it = sm.sel_id[t];
      int before = 0, equal = 0;
#pragma unroll 4
      for (int j = 0; j < (m + 3) / 4; ++j) {
        const uint4 q = keys4[j];
        before += (q.x < kt) + (q.y < kt) + (q.z < kt) + (q.w < kt);
        equal += (q.x == kt) + (q.y == kt) + (q.z == kt) + (q.w == kt);
      }
      if (equal > 1) {
        for (int j = 0; j < m; ++j) before += sm.sel_key[j] == kt && sm.sel_id[j] < it;
      }
      out_dist[before] = Op::finalize(sm.sel_s[t], qn);
      out_id[before] = it;
    }
    return;
  }
  // More: a bitonic sort of the entries padded to the sort's length.
  for (int i = m + tid; i < p.sort_size; i += T) sm.sel_id[i] = kNoId;
  __syncthreads();
  for (int size = 2; size <= p.sort_size; size *= 2) {
    for (int stride = size / 2; stride > 0; stride /= 2) {
      for (int i = tid; i < p.sort_size; i += T) {
        const int j = i ^ stride;
        if (j <= i) continue;
        const std::uint32_t ki = sm.sel_key[i], kj = sm.sel_key[j];
        const bool greater = ki > kj || (ki == kj && sm.sel_id[i] > sm.sel_id[j]);
        if (greater == ((i & size) == 0)) {
          sm.sel_key[i] = kj;
          sm.sel_key[j] = ki;
          const std::int64_t t = sm.sel_id[i];
          sm.sel_id[i] = sm.sel_id[j];
          sm.sel_id[j] = t;
          const float s = sm.sel_s[i];
          sm.sel_s[i] = sm.sel_s[j];
          sm.sel_s[j] = s;
        }
      }
      __syncthreads();
    }
  }
  for (int i = tid; i < m; i += T) {
    out_dist[i] = Op::finalize(sm.sel_s[i], qn);
    out_id[i] = sm.sel_id[i];
  }
}

// One block a query (grid: nq blocks of kListSelectThreads); dynamic shared memory:
// list_select_smem_bytes(p.sort_size).
template <class Op>
__global__ void __launch_bounds__(kListSelectThreads) list_select_kernel(const ListSelectParams p) {
  extern __shared__ __align__(16) unsigned char list_select_smem[];
  __shared__ unsigned cand_n, cand_min, cand_max;
  constexpr int C = kListSelectCompact;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const unsigned lanes_below = (1u << lane) - 1;
  const std::int64_t qi = blockIdx.x;
  const int k = p.k;
  const std::int64_t n = static_cast<std::int64_t>(p.chunks) * k;
  const float* ls = p.list_s + qi * n;
  const std::int64_t* lid = p.list_id + qi * n;
  const ListSelectSmem sm(list_select_smem, p.sort_size);
  const float qn = Op::kUsesNorms ? p.q_norms[qi] : 0.f;  // read early: its latency overlaps
  if (tid == 0) {
    cand_n = 0;
    cand_min = kNoCandidate;
    cand_max = 0;
  }
  for (int i = tid; i < p.sort_size; i += kListSelectThreads) {
    sm.sel_key[i] = kNoCandidate;  // the rank's padding
  }
  const std::uint32_t bound = list_bound_key(p, qi);
  __syncthreads();

  // With a bound (or short lists), the candidates are gathered into shared memory first: warp w
  // reads lists w, w + 32, ... 32 entries at a time, from the head while all 32 are candidates
  // (a list is sorted, its candidates before its padding, so those at or below the bound are
  // its head), and appends them at a shared counter (the order of the appends does not matter:
  // the passes count, the chosen are placed by (key, id)). The keys' smallest and largest fix
  // the bits all candidates share, where the passes start.
  const bool scan = bound != kNoCandidate || n <= static_cast<std::int64_t>(C);
  if (scan) {
    std::uint32_t wmin = kNoCandidate, wmax = 0;
    // Appends 32 entries of a list (this lane's score v and id; in: an entry), true when all
    // 32 are candidates.
    auto append = [&](float v, std::int64_t id, bool in) {
      const bool cand = in && v == v && !(v == kInfScore && id < 0) &&
                        float_order_key(v == 0.f ? 0.f : v) <= bound;
      const unsigned ballot = __ballot_sync(0xffffffffu, cand);
      if (ballot == 0) return false;
      unsigned base = 0;
      if (lane == 0) base = atomicAdd(&cand_n, static_cast<unsigned>(__popc(ballot)));
      base = __shfl_sync(0xffffffffu, base, 0);
      const std::uint32_t key = cand ? float_order_key(v == 0.f ? 0.f : v) : kNoCandidate;
      if (cand) {
        const unsigned slot = base + static_cast<unsigned>(__popc(ballot & lanes_below));
        if (slot < static_cast<unsigned>(C)) {
          sm.cand_s[slot] = v;
          sm.cand_id[slot] = id;
        }
      }
      wmin = min(wmin, __reduce_min_sync(0xffffffffu, key));
      wmax = max(wmax, __reduce_max_sync(0xffffffffu, cand ? key : 0u));
      return ballot == 0xffffffffu;
    };
    constexpr int kLists = 5;  // lists a warp reads at once (132 SMs: chunks <= 160 in one)
    for (int c0 = warp; c0 < p.chunks; c0 += 32 * kLists) {
      float v[kLists];
      std::int64_t id[kLists];
#pragma unroll
      for (int u = 0; u < kLists; ++u) {
        const int c = c0 + 32 * u;
        const bool in = c < p.chunks && lane < k;
        const std::int64_t i = static_cast<std::int64_t>(c) * k + lane;
        v[u] = in ? ls[i] : __int_as_float(0x7fffffff);
        id[u] = in ? lid[i] : -1;
      }
#pragma unroll
      for (int u = 0; u < kLists; ++u) {
        const int c = c0 + 32 * u;
        if (c >= p.chunks) break;  // warp-uniform
        bool more = append(v[u], id[u], lane < k);
        for (int pos = 32; more && pos < k; pos += 32) {  // rare: over 32 candidates a list
          const bool in = pos + lane < k;
          const std::int64_t i = static_cast<std::int64_t>(c) * k + pos + lane;
          more = append(in ? ls[i] : __int_as_float(0x7fffffff), in ? lid[i] : -1, in);
        }
      }
    }
    if (lane == 0) {
      atomicMin(&cand_min, wmin);
      atomicMax(&cand_max, wmax);
    }
    __syncthreads();
  }
  const unsigned candidates = scan ? cand_n : 0u;
  SelectStart st;
  if (scan && candidates <= static_cast<unsigned>(C)) {
    st.first = false;
    st.all = candidates <= static_cast<unsigned>(k);
    const std::uint32_t diff = cand_min ^ cand_max;
    st.hi = diff == 0 ? 0 : 32 - __clz(static_cast<int>(diff));
    st.mask = st.hi == 32 ? 0u : ~0u << st.hi;
    st.kth = cand_min & st.mask;
    st.ties = candidates;
    select_chosen<Op, GatheredCandidates>(p, list_select_smem, st, qn, sm.cand_s, sm.cand_id,
                                          static_cast<int>(candidates));
  } else if (n <= static_cast<std::int64_t>(kListSelectThreads) * kListSelectCached) {
    select_chosen<Op, ListEntries<true>>(p, list_select_smem, st, qn, ls, lid, n, bound);
  } else {
    select_chosen<Op, ListEntries<false>>(p, list_select_smem, st, qn, ls, lid, n, bound);
  }
}

}  // namespace megatax::cuda::detail
