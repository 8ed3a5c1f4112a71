// Fused top-k (IndexFlatL2 / IP search): the k nearest database rows per query, streaming the
// database once, never writing a [q, n] distance matrix.
//
// Phase 1 (topk_chunk_kernel): grid = (query blocks of kBM, database chunks). A block runs the
// GEMM main loop of gemm_core.cuh over its chunk's column tiles; after each tile the dot
// products (kBM x kBN floats) go to shared memory, and each warp scans the rows it owns: every
// lane turns kBN / 32 adjacent dot products into scores and compares them with the row's
// threshold (the k-th best so far); only when some lane beats it does the warp feed the tile
// row to its warp selection (warp_select.cuh), whose sorted list is the block's output slot
// in a candidate array [q][chunks][k] (bounded: TopkArgs::max_workspace_bytes). After the
// first k candidates of a chunk most tile rows stop at that one compare.
// Phase 2 (topk_merge_kernel): one warp per query streams its `chunks` sorted lists through
// the same selection (stopping early in each list at the threshold), writes the list straight
// into the caller's output and turns scores into distances. Fewer than 128 queries: one block
// a query selects from its lists by radix select (list_select.cuh; the same output): 16
// queries' merge took 0.07-0.16 ms against a 1 ms search with a warp a query, 24 / 94-98 us
// (k = 10 / 100) in two passes of warps (a group of a query's lists, then the groups' lists),
// and 11-12 / 30-35 us by block select (H200, 132 lists a query; bench/RESULTS.md, session 36).
//
// Phase 1 on Hopper: topk_sm90.cu (f16/bf16), the wgmma + TMA main loop of assign with the
// same selection in its epilogue, writing the same lists; for at most 16 queries (f16/bf16 and
// f32) topk_sm90_few.cu, the database as the streamed A side (bound by HBM, not by the MMAs).
// Phase 2 is shared.
//
// Chunks are chosen so that (query blocks x chunks) fills the GPU twice (Hopper: the resident
// clusters once; a few queries: one chunk an SM), each chunk holding at least 4k database rows.
// Chunks share a bound on each query's final k-th score while they run (shared_bound.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/distance_ops.cuh"
#include "kernels/cuda/gemm_core.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/list_select.cuh"
#include "kernels/cuda/shared_bound.cuh"
#include "kernels/cuda/topk_sm90.h"
#include "kernels/cuda/warp_select.cuh"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {
namespace {

constexpr std::int64_t kMaxTopK = 4096;

struct TopkParams {
  Operand q;                         // this batch's queries
  Operand db;                        // n rows
  std::int64_t d = 0;
  bool aligned = false;
  const float* db_norms = nullptr;   // L2
  int k = 0;
  std::int64_t tiles = 0;            // database column tiles in total
  std::int64_t tiles_per_chunk = 0;
  int chunks = 0;
  float* list_s = nullptr;           // [q][chunks][k]
  std::int64_t* list_id = nullptr;
  unsigned* tau_keys = nullptr;  // [q]: the shared bounds, one bucket (shared_bound.cuh)
};

// Shared-memory layout of phase 1 after the pipeline: the score tile, the per-row candidate
// buffers and the per-row selection state.
template <class Core>
struct ChunkSmem {
  static constexpr int kBM = Core::kBM;
  static constexpr int kLdTile = Core::kBN + 8;  // +8 floats: conflict-free float2 stores
  static constexpr int kTileOffset = Core::kSmemBytes;
  static constexpr int kBufSOffset = kTileOffset + kBM * kLdTile * 4;
  static constexpr int kBufIdOffset = kBufSOffset + kBM * 32 * 4;
  static constexpr int kTauIdOffset = kBufIdOffset + kBM * 32 * 8;
  static constexpr int kTauSOffset = kTauIdOffset + kBM * 8;
  static constexpr int kMOffset = kTauSOffset + kBM * 4;
  static constexpr int kCountOffset = kMOffset + kBM * 4;
  static constexpr int kSharedTauOffset = kCountOffset + kBM * 4;  // the queries' shared thresholds
  static constexpr int kBytes = kSharedTauOffset + kBM * 4;
  static_assert(kTileOffset % 16 == 0 && kBufIdOffset % 16 == 0 && kTauIdOffset % 8 == 0,
                "alignment");
};

template <class Core, class Op>
struct SelectEpilogue {
  using Layout = ChunkSmem<Core>;
  static constexpr int kBM = Core::kBM;
  static constexpr int kBN = Core::kBN;
  static constexpr int kWarps = Core::kThreads / 32;
  static_assert(kBM <= Core::kThreads, "a thread per row reads the shared thresholds");

  unsigned char* smem;
  const TopkParams& p;
  std::int64_t row0;  // first query row of the block (within the batch)
  std::int64_t n;

  __device__ SelectEpilogue(unsigned char* smem_, const TopkParams& p_, std::int64_t row0_)
      : smem(smem_), p(p_), row0(row0_), n(p_.db.rows) {}

  __device__ float* tile() const { return reinterpret_cast<float*>(smem + Layout::kTileOffset); }

  __device__ RowSelect load_state(int r) const {
    RowSelect st;
    const std::int64_t slot = ((row0 + r) * p.chunks + blockIdx.y) * p.k;
    st.list_s = p.list_s + slot;
    st.list_id = p.list_id + slot;
    st.buf_s = reinterpret_cast<float*>(smem + Layout::kBufSOffset) + r * 32;
    st.buf_id = reinterpret_cast<std::int64_t*>(smem + Layout::kBufIdOffset) + r * 32;
    st.k = p.k;
    st.m = reinterpret_cast<const int*>(smem + Layout::kMOffset)[r];
    st.count = reinterpret_cast<const int*>(smem + Layout::kCountOffset)[r];
    st.tau_s = reinterpret_cast<const float*>(smem + Layout::kTauSOffset)[r];
    st.tau_id = reinterpret_cast<const std::int64_t*>(smem + Layout::kTauIdOffset)[r];
    st.bound_j = bound_rank(p.k, 1);
    return st;
  }

  __device__ void store_state(int r, const RowSelect& st) const {
    __syncwarp();
    if (threadIdx.x % 32 == 0) {
      reinterpret_cast<int*>(smem + Layout::kMOffset)[r] = st.m;
      reinterpret_cast<int*>(smem + Layout::kCountOffset)[r] = st.count;
      reinterpret_cast<float*>(smem + Layout::kTauSOffset)[r] = st.tau_s;
      reinterpret_cast<std::int64_t*>(smem + Layout::kTauIdOffset)[r] = st.tau_id;
      publish_bound(p.tau_keys, 1, row0 + r, blockIdx.y, st);
    }
    __syncwarp();
  }

  __device__ void init_state() const {
    for (int r = threadIdx.x; r < kBM; r += Core::kThreads) {
      reinterpret_cast<int*>(smem + Layout::kMOffset)[r] = 0;
      reinterpret_cast<int*>(smem + Layout::kCountOffset)[r] = 0;
      reinterpret_cast<float*>(smem + Layout::kTauSOffset)[r] = kInfScore;
      reinterpret_cast<std::int64_t*>(smem + Layout::kTauIdOffset)[r] = kNoId;
    }
  }

  __device__ void prefetch(const Core&, std::int64_t) {}

  __device__ void on_tile(Core& core, std::int64_t t) {
    constexpr int kPerLane = kBN / 32;  // columns each lane scans per row
    static_assert(kPerLane == 2 || kPerLane == 4, "tile width 64 or 128");
    const std::int64_t col0 = t * kBN;
    float* s_tile = tile();
    // The queries' shared bounds, read while the tile goes to shared memory.
    unsigned shared_key = 0xffffffffu;
    if (threadIdx.x < kBM && row0 + threadIdx.x < p.q.rows) {
      shared_key = __ldcg(p.tau_keys + row0 + threadIdx.x);
    }
    // Raw dot products into shared memory, two adjacent columns at a time.
#pragma unroll
    for (int cs = 0; cs < Core::kColSlots; cs += 2) {
      const int c = core.col_of(cs);
#pragma unroll
      for (int rs = 0; rs < Core::kRowSlots; ++rs) {
        *reinterpret_cast<float2*>(s_tile + core.row_of(rs) * Layout::kLdTile + c) =
            make_float2(core.at(rs, cs), core.at(rs, cs + 1));
      }
    }
    // This lane's columns (col0 + lane * kPerLane + e) and their terms, the same for all rows.
    const int lane = threadIdx.x % 32;
    float ct[kPerLane];
    bool valid[kPerLane];
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      const std::int64_t col = col0 + lane * kPerLane + e;
      valid[e] = col < n;
      ct[e] = (Op::kUsesNorms && valid[e]) ? Op::col_term(p.db_norms, col) : 0.f;
    }
    float* shared_tau = reinterpret_cast<float*>(smem + Layout::kSharedTauOffset);
    if (threadIdx.x < kBM) shared_tau[threadIdx.x] = float_from_order_key(shared_key);
    __syncthreads();
    const float* tau_s = reinterpret_cast<const float*>(smem + Layout::kTauSOffset);
    const int warp = threadIdx.x / 32;
    for (int r = warp; r < kBM; r += kWarps) {
      if (row0 + r >= p.q.rows) break;
      float sc[kPerLane];
      const float* src = s_tile + r * Layout::kLdTile + lane * kPerLane;
      if constexpr (kPerLane == 4) {
        const float4 v = *reinterpret_cast<const float4*>(src);
        sc[0] = v.x, sc[1] = v.y, sc[2] = v.z, sc[3] = v.w;
      } else {
        const float2 v = *reinterpret_cast<const float2*>(src);
        sc[0] = v.x, sc[1] = v.y;
      }
      // Fast path: one compare per score against the row's threshold; most tiles stop here.
      const float tau = fminf(tau_s[r], shared_tau[r]);  // fminf ignores "none yet" (NaN)
      bool any = false;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) {
        sc[e] = valid[e] ? Op::score(sc[e], ct[e]) : kInfScore;
        any = any || (valid[e] && sc[e] <= tau);
      }
      if (!__any_sync(0xffffffffu, any)) continue;
      RowSelect st = load_state(r);
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) {
        offer(st, sc[e], col0 + lane * kPerLane + e, valid[e]);
      }
      store_state(r, st);
    }
    __syncthreads();  // the tile is rewritten by the next on_tile
  }

  // Flushes the buffers and pads each list to k entries with (+inf, -1).
  __device__ void finish() {
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    for (int r = warp; r < kBM; r += kWarps) {
      if (row0 + r >= p.q.rows) break;
      RowSelect st = load_state(r);
      if (st.count > 0) flush(st);
      for (int i = st.m + lane; i < st.k; i += 32) {
        st.list_s[i] = kInfScore;
        st.list_id[i] = -1;
      }
    }
  }
};

template <class Core, class Op>
__global__ void __launch_bounds__(Core::kThreads)
    topk_chunk_kernel(const TopkParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  Core core(smem, p.aligned);
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * Core::kBM;
  SelectEpilogue<Core, Op> epi(smem, p, row0);
  epi.init_state();
  const std::int64_t t0 = static_cast<std::int64_t>(blockIdx.y) * p.tiles_per_chunk;
  const std::int64_t t1 = min(t0 + p.tiles_per_chunk, p.tiles);
  run_tiles(core, epi, p.q, p.db, p.d, row0, t0, t1, nullptr);
  epi.finish();
}

struct MergeParams {
  std::int64_t nq = 0;              // queries in this batch
  int k = 0;
  int chunks = 0;
  const float* list_s = nullptr;    // [nq][chunks][k]
  const std::int64_t* list_id = nullptr;
  const float* q_norms = nullptr;   // [nq] (L2)
  float* out_dist = nullptr;        // [nq][k]
  std::int64_t* out_id = nullptr;
  const unsigned* bound_keys = nullptr;  // phase 1's shared bounds [nq][bound_buckets], or null
  int bound_buckets = 0;
};

constexpr int kMergeWarps = 4;

template <class Op>
__global__ void __launch_bounds__(kMergeWarps * 32) topk_merge_kernel(const MergeParams p) {
  __shared__ float buf_s[kMergeWarps][32];
  __shared__ std::int64_t buf_id[kMergeWarps][32];
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const std::int64_t qi = static_cast<std::int64_t>(blockIdx.x) * kMergeWarps + warp;
  if (qi >= p.nq) return;  // whole warp

  RowSelect st;
  st.list_s = p.out_dist + qi * p.k;
  st.list_id = p.out_id + qi * p.k;
  st.buf_s = buf_s[warp];
  st.buf_id = buf_id[warp];
  st.k = p.k;
  st.m = 0;
  st.count = 0;
  st.tau_s = kInfScore;
  st.tau_id = kNoId;
  // The first 32 entries of the next kAhead lists are loaded ahead: once the threshold is
  // known most lists end after those, and the loop would otherwise wait on one list's load
  // after the other (a few queries a launch: few warps to hide it).
  constexpr int kAhead = 4;
  const float* lists_s = p.list_s + qi * p.chunks * p.k;
  const std::int64_t* lists_id = p.list_id + qi * p.chunks * p.k;
  auto entry = [&](int c, int i, float& s, std::int64_t& id) {
    s = kInfScore;
    id = -1;
    if (c < p.chunks && i < p.k) {
      s = lists_s[static_cast<std::int64_t>(c) * p.k + i];
      id = lists_id[static_cast<std::int64_t>(c) * p.k + i];
    }
  };
  float ahead_s[kAhead];
  std::int64_t ahead_id[kAhead];
#pragma unroll
  for (int a = 0; a < kAhead; ++a) entry(a, lane, ahead_s[a], ahead_id[a]);
  for (int c = 0; c < p.chunks; ++c) {
    float s = ahead_s[0];
    std::int64_t id = ahead_id[0];
#pragma unroll
    for (int a = 0; a + 1 < kAhead; ++a) {
      ahead_s[a] = ahead_s[a + 1];
      ahead_id[a] = ahead_id[a + 1];
    }
    entry(c + kAhead, lane, ahead_s[kAhead - 1], ahead_id[kAhead - 1]);
    for (int j = 0; j < p.k; j += 32) {
      if (j > 0) entry(c, j + lane, s, id);
      // The list is sorted: once no lane's entry beats the threshold, none later does.
      if (!offer(st, s, id, id >= 0)) break;
    }
  }
  if (st.count > 0) flush(st);
  const float qn = Op::kUsesNorms ? p.q_norms[qi] : 0.f;
  for (int i = lane; i < p.k; i += 32) {
    if (i < st.m) {
      st.list_s[i] = Op::finalize(st.list_s[i], qn);
    } else {
      st.list_s[i] = Op::finalize(kInfScore, qn);
      st.list_id[i] = -1;
    }
  }
}

// Phase 2 for `nq` queries: their `chunks` lists -> the caller's output, a warp a query.
template <class Op>
void launch_merge(const MergeParams& m, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>((m.nq + kMergeWarps - 1) / kMergeWarps);
  topk_merge_kernel<Op><<<blocks, kMergeWarps * 32, 0, stream>>>(m);
  MEGATAX_CUDA_CHECK_LAUNCH("topk_merge_kernel");
}

// Phase 2 for a few queries: a block a query (list_select.cuh).
template <class Op>
void launch_list_select(const MergeParams& m, cudaStream_t stream) {
  ListSelectParams p;
  p.nq = m.nq;
  p.k = m.k;
  p.chunks = m.chunks;
  p.sort_size = 4;  // list_select_smem_bytes: a power of two >= max(k, 4)
  while (p.sort_size < p.k) p.sort_size *= 2;
  p.list_s = m.list_s;
  p.list_id = m.list_id;
  p.q_norms = m.q_norms;
  p.out_dist = m.out_dist;
  p.out_id = m.out_id;
  p.bound_keys = m.bound_keys;
  p.bound_buckets = m.bound_buckets;
  const std::size_t bytes = list_select_smem_bytes(p.sort_size);
  MEGATAX_CUDA_CHECK(cudaFuncSetAttribute(list_select_kernel<Op>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(bytes)));
  list_select_kernel<Op><<<static_cast<unsigned>(p.nq), kListSelectThreads, bytes, stream>>>(p);
  MEGATAX_CUDA_CHECK_LAUNCH("list_select_kernel");
}

// Where a phase 1 leaves its shared bounds (shared_bound.cuh) for phase 2: [nq][buckets]
// order keys of the batch's queries, or none.
struct SharedBounds {
  const unsigned* keys = nullptr;
  int buckets = 0;
};

// One phase-1 launch: the queries [b0, b0 + nb) against the database in `chunks` chunks of
// `chunk_tiles` column tiles, into the candidate lists [nb][chunks][k].
struct Phase1Launch {
  const TopkArgs* args = nullptr;
  std::int64_t b0 = 0, nb = 0;
  const float* db_norms = nullptr;
  std::int64_t tiles = 0, chunk_tiles = 0;
  int chunks = 0;
  float* list_s = nullptr;
  std::int64_t* list_id = nullptr;
  void* scratch = nullptr;
  int sm_count = 0;
  cudaStream_t stream = nullptr;

  MatrixView queries() const {
    MatrixView q = args->queries;
    q.data = static_cast<const char*>(q.data) + b0 * q.stride * dtype_size(q.dtype);
    q.rows = nb;
    return q;
  }

  // The launch as a job of the Hopper kernels (topk_sm90.h).
  Sm90TopkJob sm90_job(bool l2) const {
    Sm90TopkJob job;
    job.queries = queries();
    job.database = args->database;
    job.l2 = l2;
    job.database_norms = db_norms;
    job.k = static_cast<int>(args->k);
    job.chunk_tiles = chunk_tiles;
    job.chunks = chunks;
    job.list_s = list_s;
    job.list_id = list_id;
    job.scratch = scratch;
    return job;
  }
};

// Phase 1 on the portable GEMM cores (gemm_core.cuh): a grid of (query blocks, chunks).
template <class Core, class Op>
struct CorePhase1 {
  static constexpr int kBN = Core::kBN;
  bool aligned = false;

  // Chunks so that (query blocks x chunks) fills the GPU twice.
  std::int64_t chunks_wanted(std::int64_t nq, int sm_count) const {
    auto kernel = topk_chunk_kernel<Core, Op>;
    MEGATAX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            ChunkSmem<Core>::kBytes));
    int per_sm = 0;
    MEGATAX_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, kernel, Core::kThreads, ChunkSmem<Core>::kBytes));
    const std::int64_t resident = static_cast<std::int64_t>(sm_count) * std::max(per_sm, 1);
    const std::int64_t q_blocks = (nq + Core::kBM - 1) / Core::kBM;
    return (2 * resident + q_blocks - 1) / q_blocks;
  }
  std::size_t scratch_bytes(int, std::int64_t batch) const {
    return static_cast<std::size_t>(std::max<std::int64_t>(batch, 1)) * sizeof(unsigned);
  }
  // The shared bounds the launch leaves (shared_bound.cuh): one word a query.
  SharedBounds bounds(const Phase1Launch& l) const {
    return SharedBounds{static_cast<const unsigned*>(l.scratch), 1};
  }

  void launch(const Phase1Launch& l) const {
    const TopkArgs& args = *l.args;
    TopkParams p;
    const MatrixView q = l.queries();
    p.q = Operand{q.data, q.rows, q.stride};
    p.db = Operand{args.database.data, args.database.rows, args.database.stride};
    p.d = q.dim;
    p.aligned = aligned;
    p.db_norms = l.db_norms;
    p.k = static_cast<int>(args.k);
    p.tiles = l.tiles;
    p.tiles_per_chunk = l.chunk_tiles;
    p.chunks = l.chunks;
    p.list_s = l.list_s;
    p.list_id = l.list_id;
    p.tau_keys = static_cast<unsigned*>(l.scratch);
    const std::size_t key_bytes = static_cast<std::size_t>(l.nb) * sizeof(unsigned);
    MEGATAX_CUDA_CHECK(cudaMemsetAsync(p.tau_keys, 0xff, key_bytes, l.stream));
    const dim3 grid(static_cast<unsigned>((l.nb + Core::kBM - 1) / Core::kBM),
                    static_cast<unsigned>(l.chunks));
    MEGATAX_CUDA_CHECK(cudaFuncSetAttribute(topk_chunk_kernel<Core, Op>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            ChunkSmem<Core>::kBytes));
    topk_chunk_kernel<Core, Op><<<grid, Core::kThreads, ChunkSmem<Core>::kBytes, l.stream>>>(p);
    MEGATAX_CUDA_CHECK_LAUNCH("topk_chunk_kernel");
  }
};

// Phase 1 on Hopper (topk_sm90.h): a persistent grid of (query-block cluster, chunk) items.
template <class Op>
struct Sm90Phase1 {
  static constexpr int kBN = kSm90TopkBN;
  std::int64_t d = 0;

  // Chunks so that the items fill the resident clusters in whole waves: of 1 to 4 waves, the
  // one whose clusters' largest share of the tiles (ceil(items / resident) items of a chunk's
  // tiles) is smallest, the fewest waves on a tie. Q=1024 on an H200: 4 query clusters of 2
  // CTAs on 66 resident clusters (D=1024), 8 single CTAs on 132 (D=128) -- one wave left 2
  // clusters (4 SMs) idle, two waves (33 chunks) do not: the main launch 3-6% shorter, the
  // merge of twice the lists 10-26 us longer (bench/RESULTS.md, session 48).
  std::int64_t chunks_wanted(std::int64_t nq, int sm_count) const {
    const Sm90TopkShape shape = sm90_topk_shape(nq, d, sm_count);
    std::int64_t best = 0;
    double best_share = 0.0;
    for (int w = 1; w <= 4; ++w) {
      const std::int64_t chunks =
          std::max<std::int64_t>(1, w * shape.resident / shape.query_clusters);
      const std::int64_t items = chunks * shape.query_clusters;
      const std::int64_t rounds = (items + shape.resident - 1) / shape.resident;
      const double share = static_cast<double>(rounds) / static_cast<double>(chunks);
      if (best == 0 || share < best_share * (1 - 1e-9)) {
        best = chunks;
        best_share = share;
      }
    }
    return best;
  }
  std::size_t scratch_bytes(int sm_count, std::int64_t batch) const {
    return sm90_topk_scratch_bytes(sm_count, batch);
  }
  // One word or kBoundBuckets a query, by k (topk_sm90.h). (Q=64 on an H200, session 39: the
  // searches within noise either way, phase 2 being ~1% of them.)
  SharedBounds bounds(const Phase1Launch& l) const {
    const Sm90TopkBounds b =
        sm90_topk_bounds(l.scratch, l.sm_count, static_cast<int>(l.args->k));
    return SharedBounds{b.keys, b.buckets};
  }

  void launch(const Phase1Launch& l) const {
    const Sm90TopkJob job = l.sm90_job(Op::kUsesNorms);
    launch_topk_sm90(job, l.sm_count, l.stream);
  }
};

// Phase 1 on Hopper for at most 16 queries (topk_sm90.h): one CTA an SM, a chunk each.
template <class Op>
struct Sm90FewPhase1 {
  static constexpr int kBN = kSm90FewRows;

  std::int64_t chunks_wanted(std::int64_t, int sm_count) const { return std::max(sm_count, 1); }
  std::size_t scratch_bytes(int, std::int64_t batch) const {
    return sm90_topk_few_scratch_bytes(batch);
  }
  // The scratch is the shared bounds, kBoundBuckets words a query.
  SharedBounds bounds(const Phase1Launch& l) const {
    return SharedBounds{static_cast<const unsigned*>(l.scratch), kBoundBuckets};
  }

  void launch(const Phase1Launch& l) const {
    const Sm90TopkJob job = l.sm90_job(Op::kUsesNorms);
    launch_topk_sm90_few(job, l.sm_count, l.stream);
  }
};

template <class Op, class Phase1>
void run_topk(Resources& res, const TopkArgs& args, const Phase1& phase1) {
  constexpr int kBN = Phase1::kBN;
  auto stream = static_cast<cudaStream_t>(res.stream());
  const std::int64_t nq = args.queries.rows, n = args.database.rows, k = args.k;
  const std::int64_t tiles = (n + kBN - 1) / kBN;
  const std::size_t entry_bytes = sizeof(float) + sizeof(std::int64_t);

  std::int64_t chunks = 1;
  if (tiles > 0) {
    chunks = phase1.chunks_wanted(nq, res.sm_count());
    const std::int64_t min_tiles_per_chunk = std::max<std::int64_t>(1, (4 * k + kBN - 1) / kBN);
    chunks = std::min({chunks, std::max<std::int64_t>(1, tiles / min_tiles_per_chunk),
                       std::int64_t{65535}});
    // The candidate lists of one query block (128 rows at most) must fit the budget.
    const auto per_block = std::size_t{128} * k * entry_bytes;
    chunks = std::min<std::int64_t>(
        chunks, std::max<std::size_t>(1, args.max_workspace_bytes / per_block));
    chunks = std::max<std::int64_t>(chunks, 1);
  }
  const std::int64_t tiles_per_chunk = tiles > 0 ? (tiles + chunks - 1) / chunks : 0;
  if (tiles > 0) chunks = (tiles + tiles_per_chunk - 1) / tiles_per_chunk;
  if (tiles == 0) chunks = 0;

  // Query batch: as many 128-row query blocks as the budget allows.
  const std::size_t per_query = static_cast<std::size_t>(std::max<std::int64_t>(chunks, 1)) *
                                static_cast<std::size_t>(k) * entry_bytes;
  std::int64_t batch = static_cast<std::int64_t>(args.max_workspace_bytes / per_query);
  batch = std::max<std::int64_t>(128, batch / 128 * 128);
  batch = std::min(batch, nq);

  // Phase 2: a warp a query merges its lists; a batch of fewer than 128 queries (fewer warps
  // than the GPU has schedulers) has a block a query select from them instead
  // (list_select.cuh). MEGATAX_TOPK_MERGE=warp keeps the warp merge there (read each call:
  // the kernel tests compare the two).
  const char* merge_env = std::getenv("MEGATAX_TOPK_MERGE");
  const bool block_select =
      batch < 128 && (merge_env == nullptr || std::string(merge_env) != "warp");
  // The block select drops the entries above phase 1's shared bound first (list_select.cuh);
  // MEGATAX_TOPK_PHASE2_BOUND=0 has it select from every entry (read each call: benchmarks).
  const char* bound_env = std::getenv("MEGATAX_TOPK_PHASE2_BOUND");
  const bool bound_to_phase2 = bound_env == nullptr || std::string(bound_env) != "0";
  const std::size_t list_entries = static_cast<std::size_t>(batch) *
                                   static_cast<std::size_t>(std::max<std::int64_t>(chunks, 1)) *
                                   static_cast<std::size_t>(k);
  // Workspace: query norms, database norms (unless given), candidate lists, phase-1 scratch.
  const bool need_db_norms = Op::kUsesNorms && args.database_norms == nullptr;
  const std::size_t scratch_bytes = phase1.scratch_bytes(res.sm_count(), batch);
  float *q_norms = nullptr, *db_norms_ws = nullptr, *list_s = nullptr;
  std::int64_t* list_id = nullptr;
  void* scratch = nullptr;
  auto carve = [&](Carver& cv) {
    q_norms = Op::kUsesNorms ? cv.take<float>(nq) : nullptr;
    db_norms_ws = need_db_norms ? cv.take<float>(n) : nullptr;
    list_s = cv.take<float>(list_entries);
    list_id = cv.take<std::int64_t>(list_entries);
    scratch = scratch_bytes > 0 ? cv.take<std::int64_t>(scratch_bytes / 8 + 1) : nullptr;
  };
  Carver measure(nullptr);
  carve(measure);
  Carver cv(res.workspace(measure.bytes()));
  carve(cv);
  if (Op::kUsesNorms) launch_row_norms(args.queries, q_norms, stream);
  if (need_db_norms) launch_row_norms(args.database, db_norms_ws, stream);
  const float* db_norms = need_db_norms ? db_norms_ws : args.database_norms;

  for (std::int64_t b0 = 0; b0 < nq; b0 += batch) {
    const std::int64_t nb = std::min(batch, nq - b0);
    Phase1Launch l;
    if (chunks > 0) {
      l.args = &args;
      l.b0 = b0;
      l.nb = nb;
      l.db_norms = db_norms;
      l.tiles = tiles;
      l.chunk_tiles = tiles_per_chunk;
      l.chunks = static_cast<int>(chunks);
      l.list_s = list_s;
      l.list_id = list_id;
      l.scratch = scratch;
      l.sm_count = res.sm_count();
      l.stream = stream;
      phase1.launch(l);
    }
    MergeParams m;
    m.nq = nb;
    m.k = static_cast<int>(k);
    m.chunks = static_cast<int>(chunks);
    m.list_s = list_s;
    m.list_id = list_id;
    m.q_norms = q_norms != nullptr ? q_norms + b0 : nullptr;
    m.out_dist = args.distances + b0 * k;
    m.out_id = args.ids + b0 * k;
    if (chunks > 0 && bound_to_phase2) {
      const SharedBounds b = phase1.bounds(l);
      m.bound_keys = b.keys;
      m.bound_buckets = b.buckets;
    }
    if (block_select) {
      launch_list_select<Op>(m, stream);
    } else {
      launch_merge<Op>(m, stream);
    }
  }
}

template <class Core>
void run_topk_metric(Resources& res, const TopkArgs& args, bool aligned) {
  if (args.metric == Metric::kL2) {
    run_topk<L2Op>(res, args, CorePhase1<Core, L2Op>{aligned});
  } else {
    run_topk<InnerProductOp>(res, args, CorePhase1<Core, InnerProductOp>{aligned});
  }
}

void run_topk_sm90(Resources& res, const TopkArgs& args) {
  if (args.metric == Metric::kL2) {
    run_topk<L2Op>(res, args, Sm90Phase1<L2Op>{args.queries.dim});
  } else {
    run_topk<InnerProductOp>(res, args, Sm90Phase1<InnerProductOp>{args.queries.dim});
  }
}

void run_topk_sm90_few(Resources& res, const TopkArgs& args) {
  if (args.metric == Metric::kL2) {
    run_topk<L2Op>(res, args, Sm90FewPhase1<L2Op>{});
  } else {
    run_topk<InnerProductOp>(res, args, Sm90FewPhase1<InnerProductOp>{});
  }
}

}  // namespace
}  // namespace detail

void topk(Resources& res, const TopkArgs& args) {
  using namespace detail;
  validate_operand_pair(args.queries, args.database, "topk", "queries", "database", "is");
  const MatrixView& q = args.queries;
  const MatrixView& db = args.database;
  if (args.k < 1 || args.k > kMaxTopK) {
    throw Error(ErrorCode::kInvalidArgument, "topk: k = " + std::to_string(args.k) +
                                                 ", expected 1 <= k <= " +
                                                 std::to_string(kMaxTopK));
  }
  if (args.metric != Metric::kL2 && args.metric != Metric::kInnerProduct) {
    throw Error(ErrorCode::kInvalidArgument, "topk: unknown metric");
  }
  if (q.rows == 0) return;
  if (args.distances == nullptr || args.ids == nullptr) {
    throw Error(ErrorCode::kInvalidArgument, "topk: distances and ids must not be null");
  }
  if (args.max_workspace_bytes < (std::size_t{1} << 20)) {
    throw Error(ErrorCode::kInvalidArgument, "topk: max_workspace_bytes below 1 MiB");
  }
  res.activate();
  const bool tensor = q.dtype != DType::kF32;
  const bool aligned = tensor && vector_aligned(q) && vector_aligned(db);
  // A few queries (<= 16): 16-row query tiles (MEGATAX_CUDA_TOPK_SMALL_Q=0 turns them off,
  // for side-by-side runs).
  static const bool small_q_tiles = [] {
    const char* v = std::getenv("MEGATAX_CUDA_TOPK_SMALL_Q");
    return v == nullptr || std::string(v) != "0";
  }();
  const bool small = small_q_tiles && q.rows <= 16;
  // On Hopper, f16/bf16: the wgmma kernels (topk_sm90.cu; topk_sm90_few.cu for <= 16 queries).
  if (small && sm90_topk_few_usable(q, db)) {
    run_topk_sm90_few(res, args);
    return;
  }
  if (!small && sm90_topk_usable(q, db)) {
    run_topk_sm90(res, args);
    return;
  }
  switch (q.dtype) {
    case DType::kBF16:
      if (small) {
        run_topk_metric<MmaCore<TopkMmaSmallQPolicy, __nv_bfloat16>>(res, args, aligned);
      } else {
        run_topk_metric<MmaCore<TopkMmaPolicy, __nv_bfloat16>>(res, args, aligned);
      }
      break;
    case DType::kF16:
      if (small) {
        run_topk_metric<MmaCore<TopkMmaSmallQPolicy, __half>>(res, args, aligned);
      } else {
        run_topk_metric<MmaCore<TopkMmaPolicy, __half>>(res, args, aligned);
      }
      break;
    default:
      if (small) {
        run_topk_metric<SimtCore<F32SimtSmallQPolicy>>(res, args, aligned);
      } else if (f32_tensor_cores()) {
        const bool f32_aligned = vector_aligned(q) && vector_aligned(db);
        if (q.dim >= kTopkTf32WideD) {
          run_topk_metric<MmaCore<TopkTf32WidePolicy, float>>(res, args, f32_aligned);
        } else {
          run_topk_metric<MmaCore<TopkTf32Policy, float>>(res, args, f32_aligned);
        }
      } else {
        if (f32_wide_tiles()) {
          run_topk_metric<SimtCore<F32SimtWidePolicy>>(res, args, aligned);
        } else {
          run_topk_metric<SimtCore<F32SimtPolicy>>(res, args, aligned);
        }
      }
      break;
  }
}

}  // namespace megatax::cuda
