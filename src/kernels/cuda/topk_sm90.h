// kernels/cuda/topk_sm90.h -- phase 1 of the fused top-k on Hopper (sm_90a): the wgmma + TMA main
// loop of sm90_pipeline.cuh with a selection epilogue (topk_sm90.cu; topk_sm90_few.cu for at
// most 16 queries). topk.cu calls it when it applies (and runs phase 2, the merge of the chunk
// lists, itself); otherwise the portable kernel runs.
//
// Internal header (CUDA types allowed).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "megatax/matrix.h"

namespace megatax::cuda::detail {

// Database rows per column tile of the Hopper top-k (chunks are whole tiles).
constexpr int kSm90TopkBN = 256;

// True when the Hopper top-k can run `queries` against `database` on the current device: a
// compute capability 9.0 GPU, this build carries the sm_90a kernels, f16/bf16 operands TMA
// can describe, and MEGATAX_CUDA_TOPK=mma does not force the portable kernel (side-by-side
// benchmarks).
bool sm90_topk_usable(const MatrixView& queries, const MatrixView& database);

// How many work items (query-block cluster, database chunk) run at once: the launch's
// resident clusters, and the CTAs per cluster for `query_rows` queries of `d` a launch.
// Clusters of 2 (each database tile multicast to two query blocks) for d > kSm90TopkPairD;
// at smaller d, where a tile is two or three d chunks, single CTAs ran 4-5% faster (N=10M
// D=128 on an H100: a stage waits for both CTAs of a cluster to free it).
struct Sm90TopkShape {
  int cluster = 1;                  // CTAs per cluster (query blocks sharing database tiles)
  std::int64_t resident = 1;        // clusters resident at once (the persistent grid)
  std::int64_t query_clusters = 1;  // clusters of query blocks of the launch
};
inline constexpr std::int64_t kSm90TopkPairD = 256;
Sm90TopkShape sm90_topk_shape(std::int64_t query_rows, std::int64_t d, int sm_count);

// Bytes of the device scratch a launch of `query_rows` queries needs (candidate staging, one
// area per CTA; the queries' shared thresholds).
std::size_t sm90_topk_scratch_bytes(int sm_count, std::int64_t query_rows);

// Where a launch with that scratch leaves its shared bounds (shared_bound.cuh): `buckets` order
// keys a query (one below k = 32 or with MEGATAX_TOPK_BOUND=union: the union bound; else
// kBoundBuckets), valid for the final lists once the launch is done (topk.cu's phase 2 reads
// them).
struct Sm90TopkBounds {
  const unsigned* keys = nullptr;
  int buckets = 0;
};
Sm90TopkBounds sm90_topk_bounds(void* scratch, int sm_count, int k);

// One launch: every query of `queries` against chunks of `chunk_tiles` tiles of the database;
// writes each (query, chunk)'s k best (score, id), sorted, (+inf, -1)-padded, into
// list_s / list_id [queries.rows][chunks][k] (the layout topk.cu's merge reads).
struct Sm90TopkJob {
  MatrixView queries;                // this batch
  MatrixView database;
  bool l2 = true;                    // else inner product
  const float* database_norms = nullptr;  // [n], L2
  int k = 0;
  std::int64_t chunk_tiles = 0;
  int chunks = 0;
  float* list_s = nullptr;
  std::int64_t* list_id = nullptr;
  void* scratch = nullptr;           // sm90_topk_scratch_bytes(sm_count, queries.rows)
};
void launch_topk_sm90(const Sm90TopkJob& job, int sm_count, cudaStream_t stream);

// ---- a few queries (topk_sm90_few.cu) ----
// At most kSm90FewQueries queries: the roles swap (database rows are the A side, walked in
// tiles of kSm90FewRows rows, the queries one 16-column B tile), one CTA an SM, one chunk a
// CTA at a time. Same job, same output lists; the scratch holds the shared thresholds only.
constexpr int kSm90FewQueries = 16;
constexpr int kSm90FewRows = 256;
// As sm90_topk_usable, for queries.rows <= kSm90FewQueries, f32 operands too (3xTF32 on
// mma.sync, or exact FFMA products with MEGATAX_CUDA_F32=ffma, instead of wgmma; the same
// streaming and selection).
bool sm90_topk_few_usable(const MatrixView& queries, const MatrixView& database);
std::size_t sm90_topk_few_scratch_bytes(std::int64_t query_rows);
void launch_topk_sm90_few(const Sm90TopkJob& job, int sm_count, cudaStream_t stream);

}  // namespace megatax::cuda::detail
