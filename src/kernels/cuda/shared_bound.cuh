// kernels/cuda/shared_bound.cuh -- the bound on a query's final k-th score that the chunks of a
// top-k share while they run (topk.cu, topk_sm90.cu, topk_sm90_few.cu): buckets of the
// chunks' j-th scores, or (below) the union bound read from the chunks' lists.
//
// A query has B buckets (order keys of distance_ops.cuh, 0xffffffff: none yet). A chunk c
// whose list holds at least j = ceil(k / B) entries publishes its j-th score into bucket c % B
// with atomicMin. Bucket b then vouches for j entries at or below its value, all from chunks
// of bucket b, so once every bucket is set, at least B j >= k entries of distinct chunks lie
// at or below the largest bucket: no score above it can be in the query's final k (ties
// pass), and every chunk filters with it as well as with its own k-th score.
// With one bucket this is the smallest k-th score of the chunks. With kBoundBuckets the bound
// is the j-th of one chunk in a group of them, several times smaller in rank, for 8 words a
// query to read: the few-query kernel always uses them (Q=16 N=10M D=128 k=100: 1.30 ->
// 1.05 ms), the many-query Hopper kernel for k >= 32 (Q=1024 k=100: 17.8 -> 13.9 ms at D=128;
// at k=10 it was 7% slower); the portable kernels use one (slower with 8 at every k measured).
//
// Readers take the largest of a query's words (as unsigned keys: an unset bucket, the largest
// key, decodes to NaN, which fminf ignores) a tile ahead of its use; a stale bound is only a
// looser one.
//
// Internal header: compiled by nvcc only.
#pragma once

#include <cstdint>

#include "kernels/cuda/distance_ops.cuh"
#include "kernels/cuda/warp_select.cuh"

namespace megatax::cuda::detail {

constexpr int kBoundBuckets = 8;

// The rank a chunk publishes for lists of k with `buckets` buckets a query (1: the k-th, the
// single-word scheme): RowSelect::bound_j, so that flushes track it.
__host__ __device__ constexpr int bound_rank(int k, int buckets) {
  return (k + buckets - 1) / buckets;
}

// One lane of the warp that owns `st` (with bound_j = bound_rank(k, buckets)): publishes chunk
// `chunk`'s bound_j-th score to query q's bucket if a flush changed the list since the state
// was loaded. `keys`: [queries][buckets].
__device__ __forceinline__ void publish_bound(unsigned* keys, int buckets, std::int64_t q,
                                              std::int64_t chunk, const RowSelect& st) {
  if (st.flushes > 0 && st.bound_j > 0 && st.m >= st.bound_j) {
    atomicMin(keys + q * buckets + chunk % buckets, float_order_key(st.bound_s));
  }
}

// ---- the union bound ----
// A tighter bound from the chunks' lists themselves: about the k-th smallest score of their
// union (one bucket above is the smallest of the chunks' k-th scores: with 16 chunks, several
// times k in the union's ranks). The Hopper many-query kernel publishes it for k < 32.
// Why it holds while other chunks flush: each position of a (query, chunk) list (the phase-1
// output, [queries][chunks][k]) only ever decreases -- a flush writes a position at most once,
// with its new value, which is at most the one it replaces (the j-th smallest of a larger set
// is at most the j-th of a smaller one), and positions not yet written hold NaN (the launch
// fills the lists first). So a word read at any moment, even mid-flush, is at least the value
// its position holds once the flushes begun before the read have finished, when the list is
// sorted and holds distinct rows. A warp reads kUnionSamples words of each of at most
// kUnionChunks lists (its own chunk's and its neighbours'): ranks stride - 1, 2 stride - 1, ...
// (stride = ceil(k / kUnionSamples)). If J words of one list are at or below v, the highest
// rank among them is at least J stride - 1, so at that later moment at least J stride of the
// list's rows are at or below v; the chunks' rows are disjoint. `needed` = ceil(k / stride)
// words at or below v thus vouch for k rows: v is a bound (k <= 16: the exact k-th of the
// union of those lists). A lane's words are sorted before the extraction: as read they need
// not ascend (a word read mid-flush may be older, so larger, than the next), and the
// extraction counts a word only once every smaller word of its lane was counted (without the
// sort, k = 100 lost true neighbours in the kernel tests).
constexpr int kUnionSamples = 16;

struct UnionSampling {
  int stride;   // rows a sampled word vouches for
  int samples;  // words read per list (<= kUnionSamples)
  int needed;   // words at or below the bound
};
__host__ __device__ constexpr UnionSampling union_sampling(int k) {
  const int stride = (k + kUnionSamples - 1) / kUnionSamples;
  return UnionSampling{stride, k / stride, (k + stride - 1) / stride};
}

// All 32 lanes of a warp: publishes query q's union bound over the lists `q_lists`
// ([chunks][k], the query's lists) of the (at most kUnionChunks) chunks around `chunk` into
// keys[q] (one word a query: atomicMin of an order key). Two lanes a list (even and odd
// samples), one round trip to L2, a sort of 8 words a lane and at most `needed` warp
// reductions.
constexpr int kUnionChunks = 16;
__device__ inline void publish_union_bound(unsigned* keys, std::int64_t q, const float* q_lists,
                                           int chunks, int k, int chunk, int lane) {
  constexpr int kWords = kUnionSamples / 2;  // a lane's
  const UnionSampling u = union_sampling(k);
  const int group = min(chunks, kUnionChunks);
  const int g0 = min((chunk / kUnionChunks) * kUnionChunks, chunks - group);
  const int half = lane % 2;
  const float* list = q_lists + static_cast<std::int64_t>(g0 + lane / 2) * k;
  // The lane's words as order keys; ~0u: none (NaN: unwritten).
  unsigned v[kWords];
#pragma unroll
  for (int i = 0; i < kWords; ++i) {
    const int j = 2 * i + half;
    v[i] = ~0u;
    if (lane / 2 < group && j < u.samples) {
      const float s = __ldcg(list + (j + 1) * u.stride - 1);
      if (s == s) v[i] = float_order_key(s);
    }
  }
  // Sorted (Batcher's network): every word the extraction counts is then at most the bound it
  // returns, whatever the interleaving with the flushes (see above).
  auto order = [&](int a, int b) {
    const unsigned lo = min(v[a], v[b]), hi = max(v[a], v[b]);
    v[a] = lo;
    v[b] = hi;
  };
  static_assert(kWords == 8, "the network below sorts 8 words");
  order(0, 1), order(2, 3), order(4, 5), order(6, 7);
  order(0, 2), order(1, 3), order(4, 6), order(5, 7);
  order(1, 2), order(5, 6);
  order(0, 4), order(1, 5), order(2, 6), order(3, 7);
  order(2, 4), order(3, 5);
  order(1, 2), order(3, 4), order(5, 6);
  // The needed-th smallest: take the warp's smallest head, count its holders, advance them.
  int left = u.needed;
  unsigned bound = ~0u;
  for (int it = 0; it < u.needed; ++it) {
    const unsigned m = __reduce_min_sync(0xffffffffu, v[0]);
    if (m == ~0u) break;  // fewer words than needed: no bound yet
    const bool holds = v[0] == m;
    left -= __popc(__ballot_sync(0xffffffffu, holds));
    if (left <= 0) {
      bound = m;
      break;
    }
    if (holds) {
#pragma unroll
      for (int i = 0; i + 1 < kWords; ++i) v[i] = v[i + 1];
      v[kWords - 1] = ~0u;
    }
  }
  if (lane == 0 && bound != ~0u) atomicMin(keys + q, bound);
}

}  // namespace megatax::cuda::detail
