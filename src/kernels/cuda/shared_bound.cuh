// kernels/cuda/shared_bound.cuh -- the bound on a query's final k-th score that the chunks of a
// top-k share while they run (topk.cu, topk_sm90.cu, topk_sm90_few.cu).
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

}  // namespace megatax::cuda::detail
