// Fused top-k on Hopper, phase 1: wgmma + TMA dot products with the selection in the epilogue.
//
// Work items: (query-block cluster, database chunk), the chunk running slowest, so that the
// clusters working at one time share their chunk through L2. The main loop is assign's
// (sm90_pipeline.cuh): the queries are the A side (a CTA's 128 query rows; for d > 256
// clusters of 2 CTAs take 2 query blocks and multicast each database tile to both; smaller d
// runs single CTAs: sm90_topk_shape), the database the B side, walked in BN-row tiles. After
// each tile a consumer thread holds its two query rows' dot products against BN / 4 database
// rows each, and the selection of topk_sm90_select.cuh runs per row (score, filter, slots or
// scratch areas, flushes into the (query, chunk) lists); the slots' candidates are offered to
// their rows while the next tile's first two d chunks multiply, so that the row buffers,
// flushes and list traffic overlap the tensor cores (only scoring and filtering stall them).
// Each warp owns its 16 query rows for the whole work item; each warpgroup shares the tile's
// column terms through its own double buffer (no barrier between the warpgroups: one had
// them wait for each other every tile, 9-13% of the samples). A tile's first MMA names the
// accumulators as outputs only (mma_tile's kFirstWrites), so their registers serve the
// selection until then: the consumers no longer spill (60-64 -> 0-24 bytes; ptxas -v).
//
// For k >= 32 the bound the chunks share starts from a seed run of this kernel over the
// database's first tiles (launch_topk_sm90), so a chunk's first tiles no longer pass every
// score into the scratch areas: 2-3% at k = 100 (session 33). The seed launch itself takes
// ~0.6 ms of a ~8.3 ms search at N=2M D=1024 k=100 (H200, session 35): its chunks' first
// tiles pass every score and flush their buffers into global lists one after the other.
// Since session 40 a row's first candidates fill its list at once, only the k best of them
// sorted (topk_sm90_select.cuh drain_staged): the seed launch 0.59-0.63 -> 0.42-0.47 ms, the
// main launch at D=1024 k=10 / 100 ~2% / ~3% shorter (ncu durations, H200). Since session 41
// the seed keeps lists of the rank it publishes (13 at k = 100: 0.41-0.46 -> 0.29-0.33 ms) and
// a row's last candidates of an item are published too (finish_rows): the main launch at
// k = 100 8.60 -> 8.30 ms (D=128), 7.43 -> 7.19 ms (D=1024).
// Shared memory: the ring (3 stages of 48 KiB at BN = 256), 128 row states (24 bytes) and
// their 32-entry candidate buffers (12 bytes an entry), the slots (8 warps x 2 parts x 32
// lanes x kSlots x 8 bytes) and the column terms (2 warpgroups x 2 x 1 KiB).
// Measured on an H100 (bench_cuda, bench/RESULTS.md): Q=1024 bf16 against cuBLAS's GEMM-only
// time of the same shape 0.67-0.69x (N=10M D=128 k=10; GEMM-only there writes a 20 GB
// matrix), 1.08-1.14x (k=100), 1.31-1.40x / 1.5-1.7x (N=2M D=1024 k=10 / 100); on an H200
// (session 35, after the slots looked only into groups whose smallest passes: 1-12% faster)
// 0.83-0.86x / 1.30-1.34x at D=128 (cuBLAS is faster there on the H200), 1.23-1.41x /
// 1.46-1.62x at D=1024. Without
// the selection (a diagnostic build) the main loop ran at 0.43x (D=128) and 0.95x (D=1024)
// of GEMM-only: what is left is the part of the selection before the accumulators are free
// (scoring, slot extraction, a chunk's first tiles overflowing into the scratch areas) and
// the cluster waiting for its slowest warp (session 30's clock profile; session 35's ncu
// samples at D=1024 k=100 on an H200: the consumers ~30% waiting for a full stage, ~17% in the
// scoring and selection). Tried: a fourth
// stage (row buffers moved to global memory to make room): no faster at D=1024; queries
// resident in shared memory with the two warpgroups taking 128-row tiles in turns
// ("ping-pong", one selecting while the other multiplies): 3-13% slower than this kernel (at
// 90d8e93) at D=128, the selection being latency-bound at one warp a scheduler
// (bench/RESULTS.md, session 27); flushing row buffers at 8-24 entries instead of 32: no
// faster (session 30); with the union bound, flushing at 8 or 16: no faster at k = 10
// (session 31); groups of 4 scores for the slots (16 minima a part): slower at D=128, mixed at
// D=1024; a seed of 16 tiles a chunk: slower (session 35); of 1 or 2 tiles a chunk: within
// the runs' spread (session 36: a cheaper seed launch, a looser bound).
#include "kernels/cuda/topk_sm90.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/check.h"
#include "kernels/cuda/distance_ops.cuh"
#include "kernels/cuda/hopper.cuh"
#include "kernels/cuda/sm90_pipeline.cuh"
#include "kernels/cuda/tensor_map.h"
#include "kernels/cuda/topk_sm90_select.cuh"
#include "megatax/error.h"

namespace megatax::cuda::detail {
namespace {

constexpr int kBN = kSm90TopkBN;
constexpr int kBM = kSm90BM;
constexpr int kParts = 2;  // a consumer warp owns 16 query rows: two of them a thread

using Ring = Sm90Ring<kBN, 3 * (kBM + kBN) * kSm90BK * 2>;
constexpr int kSlotBytes =
    kSm90ConsumerWarps * kParts * 32 * kSlots * static_cast<int>(sizeof(Candidate));
constexpr int kRowBytes =
    kBM * static_cast<int>(sizeof(RowState) + kRowBuffer * (sizeof(std::int64_t) + sizeof(float)));
constexpr int kSmemBytes =
    Ring::kBytes + kRowBytes + kSlotBytes + 2 * 2 * kBN * 4 /* column terms a warpgroup */;
static_assert(kSmemBytes <= 227 * 1024, "fits the per-block shared-memory limit");

#if defined(MEGATAX_SM90A)
// The consumer warpgroup `cw` (0 or 1) of topk_sm90_kernel.
template <class T, class Op, int kCluster, int kBuckets>
__device__ __forceinline__ void consume(const TopkSm90Params& p, const RingView<Ring>& ring,
                                        std::int64_t* buf_id_smem, RowState* row_states,
                                        float* buf_s_smem, Candidate* slot_smem,
                                        float* norm_smem, int cw, int cta_rank,
                                        std::int64_t cluster_id, std::int64_t clusters,
                                        std::int64_t chunks) {
  sm90::setmaxnreg_inc<kSm90ConsumerRegs>();
  const int tid = static_cast<int>(threadIdx.x) - 128 * (cw + 1);
  const int warp = tid / 32, lane = tid % 32;
  const int warp_row0 = cw * 64 + warp * 16;  // the warp's first row in the block
  WarpRows wr;
  wr.states = row_states + warp_row0;
  wr.buf_s = buf_s_smem + warp_row0 * kRowBuffer;
  wr.buf_id = buf_id_smem + warp_row0 * kRowBuffer;
  wr.base = warp_row0;
  Candidate* areas =
      p.scratch + (static_cast<std::int64_t>(blockIdx.x) * kBM + warp_row0) * kBN;
  // The thread's slots: [kParts][32 lanes][kSlots] a warp.
  Candidate* slots = slot_smem + (cw * 4 + warp) * kParts * 32 * kSlots + lane * kSlots;
  float acc[1][kBN / 2];
  RingCursor cur;

  // The thread's parts' thresholds: the smaller of the row's tau and the shared bound; a
  // row past the queries NaN (never passes the filter: NaN compares false).
  float thr[kParts];
  auto reload_thresholds = [&] {
#pragma unroll
    for (int h = 0; h < kParts; ++h) {
      if (thr[h] == thr[h]) thr[h] = wr.states[part_row(h, lane)].tau_s;
    }
  };
  // Candidates of the last tile waiting in the slots (warp-uniform) and their counts.
  bool pending = false, drained = false;
  int count[kParts];
  const std::int64_t drain_chunk = chunks > 1 ? 1 : 0;

  for (std::int64_t w = cluster_id; w < p.items; w += clusters) {
    const TopkWork wk = topk_work<kCluster>(p, w, cta_rank);
    wr.row0 = wk.row0;
    reset_rows<kParts>(wr, lane);
#pragma unroll
    for (int h = 0; h < kParts; ++h) {
      thr[h] = wr.query(part_row(h, lane)) < p.nq ? kInfScore : __int_as_float(0x7fc00000);
    }

    for (std::int64_t t = wk.t0; t < wk.t1; ++t) {
      const std::int64_t col0 = t * kBN;
      // The tile's column terms, two a thread, read while the MMAs run, then shared through
      // the warpgroup's double buffer (its barrier orders this tile's writes after every
      // thread's reads of the buffer two tiles ago). Each warpgroup keeps its own copy: one
      // copy and a 256-thread barrier had the warpgroups wait for each other every tile.
      float norm[2] = {0.f, 0.f};
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        if (Op::kUsesNorms && col0 + i * 128 + tid < p.n) {
          norm[i] = __ldg(p.db_norms + col0 + i * 128 + tid);
        }
      }
      unsigned shared_key[kParts];
      load_shared_bounds<kBuckets, kParts>(p, wr, lane, shared_key);
      // The last tile's slotted candidates are offered to their rows while this tile's first
      // two d chunks multiply (their registers are not the accumulators): the warp's row
      // buffers, flushes and list traffic overlap the tensor cores instead of stalling them.
      mma_tile<T, Ring, kBN, kCluster, /*kFirstWrites=*/true>(
          acc[0], ring, cur, cw, lane, chunks, [&](std::uint32_t, std::int64_t c) {
            if (c == drain_chunk && pending) {
              drain_slots<kParts>(p, wk.chunk, wr, slots, count, lane);
              pending = false;
              drained = true;
              reload_thresholds();
            }
          });
      tighten<kBuckets, kParts>(shared_key, thr);
      float* tile_norms = norm_smem + (cw * 2 + (t & 1)) * kBN;
      if constexpr (Op::kUsesNorms) {
        tile_norms[tid] = norm[0];
        tile_norms[128 + tid] = norm[1];
        sm90::named_barrier_sync(1 + cw, 128);
      }
      float gmin[kParts][kScoreGroups<kBN>], lowest[kParts];
      score_tile<Op, kBN, kParts>(acc, tile_norms, p.n, col0, lane, gmin, lowest);
      // Most tiles end here: no score of the thread's rows beats its threshold.
      const TileSelect sel = select_tile<kBN, kParts>(p, wk.chunk, wr, acc, col0, lane, thr,
                                                      lowest, gmin, slots, count, areas);
      if (sel == TileSelect::kDone) reload_thresholds();
      pending = sel == TileSelect::kPending;
      if (p.union_bound && (drained || sel == TileSelect::kDone)) {
        publish_flushed_rows<kParts>(p, wk.chunk, wr, lane);
      }
      drained = false;
    }
    if (pending) {  // the item's last tile
      drain_slots<kParts>(p, wk.chunk, wr, slots, count, lane);
      pending = false;
    }
    finish_rows<kParts>(p, wk.chunk, wr, lane);
  }
}
#endif

template <class T, class Op, int kCluster, int kBuckets>
__global__ void __launch_bounds__(kSm90Threads, 1)
    topk_sm90_kernel(const __grid_constant__ CUtensorMap map_q,
                     const __grid_constant__ CUtensorMap map_db, const TopkSm90Params p) {
#if defined(MEGATAX_SM90A)
  extern __shared__ unsigned char smem_raw[];
  const RingView<Ring> ring(smem_raw);
  auto* buf_id_smem = reinterpret_cast<std::int64_t*>(ring.end());
  auto* row_states = reinterpret_cast<RowState*>(buf_id_smem + kBM * kRowBuffer);
  auto* buf_s_smem = reinterpret_cast<float*>(row_states + kBM);
  auto* slot_smem = reinterpret_cast<Candidate*>(buf_s_smem + kBM * kRowBuffer);
  auto* norm_smem =
      reinterpret_cast<float*>(slot_smem + kSm90ConsumerWarps * kParts * 32 * kSlots);
  const int wg = static_cast<int>(threadIdx.x) / 128;
  const int cta_rank = kCluster > 1 ? static_cast<int>(sm90::cluster_cta_rank()) : 0;
  const std::int64_t cluster_id = blockIdx.x / kCluster;
  const std::int64_t clusters = gridDim.x / kCluster;
  ring.template init<kCluster>();
  const std::int64_t chunks = (p.d + kSm90BK - 1) / kSm90BK;

  if (wg == 0) {
    sm90::setmaxnreg_dec<kSm90ProducerRegs>();
    if (threadIdx.x == 0) {
      produce_items<Ring, kBN, kCluster>(ring, &map_q, &map_db, cluster_id, clusters, p.items,
                                         chunks, cta_rank, [&](std::int64_t w) {
                                           const TopkWork wk = topk_work<kCluster>(p, w, cta_rank);
                                           return ProducerItem{wk.row0, 0, wk.t0, wk.t1};
                                         });
    }
  } else {
    consume<T, Op, kCluster, kBuckets>(p, ring, buf_id_smem, row_states, buf_s_smem, slot_smem,
                                       norm_smem, wg - 1, cta_rank, cluster_id, clusters,
                                       chunks);
  }
  // No CTA may leave while a peer can still multicast into its shared memory or arrive on its
  // barriers.
  if constexpr (kCluster > 1) sm90::cluster_sync();
#else
  __trap();  // launched only on compute capability 9.0 with the sm_90a image (see usable())
#endif
}

// After the seed run (launch_topk_sm90): each query's words become the bound they vouch for
// together -- the largest of its buckets (each vouches for bound_j rows of its own chunks,
// disjoint), or its one word -- written to all of them; an unset word (~0u) leaves them all
// unset. One thread a query.
__global__ void seed_bound_kernel(unsigned* keys, std::int64_t nq, int buckets) {
  const std::int64_t q = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (q >= nq) return;
  unsigned* w = keys + q * buckets;
  unsigned m = 0;
  for (int b = 0; b < buckets; ++b) m = max(m, w[b]);
  for (int b = 0; b < buckets; ++b) w[b] = m;
}

template <class T, class Op, int kCluster>
void launch_typed(const Sm90TopkJob& job, const TopkSm90Params& p, int sm_count,
                  cudaStream_t stream) {
  auto kernel = p.buckets == 1 ? topk_sm90_kernel<T, Op, kCluster, 1>
                               : topk_sm90_kernel<T, Op, kCluster, kBoundBuckets>;
  const CUtensorMap map_q = make_tensor_map_2d(job.queries, job.queries.rows, kBM, kSm90BK);
  const CUtensorMap map_db =
      make_tensor_map_2d(job.database, job.database.rows, kBN / kCluster, kSm90BK);
  ClusterLaunch<kCluster> launch(kernel, kSmemBytes, stream);
  launch.launch(kernel, sm_count, p.items, map_q, map_db, p);
  MEGATAX_CUDA_CHECK_LAUNCH("topk_sm90_kernel");
}

template <class Op, int kCluster>
void launch_dtype(const Sm90TopkJob& job, const TopkSm90Params& p, int sm_count,
                  cudaStream_t stream) {
  if (job.queries.dtype == DType::kBF16) {
    launch_typed<__nv_bfloat16, Op, kCluster>(job, p, sm_count, stream);
  } else {
    launch_typed<__half, Op, kCluster>(job, p, sm_count, stream);
  }
}

template <class Op>
void launch_cluster(const Sm90TopkJob& job, const TopkSm90Params& p, int cluster, int sm_count,
                    cudaStream_t stream) {
  if (cluster == 2) {
    launch_dtype<Op, 2>(job, p, sm_count, stream);
  } else {
    launch_dtype<Op, 1>(job, p, sm_count, stream);
  }
}

}  // namespace

bool sm90_topk_usable(const MatrixView& queries, const MatrixView& database) {
  if (const char* force = std::getenv("MEGATAX_CUDA_TOPK");
      force != nullptr && std::strcmp(force, "mma") == 0)
    return false;
  return tma_compatible(queries) && tma_compatible(database) && device_is_sm90();
}

Sm90TopkShape sm90_topk_shape(std::int64_t query_rows, std::int64_t d, int sm_count) {
  Sm90TopkShape s;
  const std::int64_t blocks = (query_rows + kBM - 1) / kBM;
  s.cluster = blocks >= 2 && d > kSm90TopkPairD ? 2 : 1;
  s.query_clusters = (blocks + s.cluster - 1) / s.cluster;
  // The resident clusters do not depend on the dtype or the op.
  if (s.cluster == 2) {
    auto kernel = topk_sm90_kernel<__nv_bfloat16, L2Op, 2, 1>;
    ClusterLaunch<2> launch(kernel, kSmemBytes, nullptr);
    s.resident = launch.resident(kernel, sm_count);
  } else {
    s.resident = std::max(sm_count, 1);
  }
  return s;
}

std::size_t sm90_topk_scratch_bytes(int sm_count, std::int64_t query_rows) {
  return Sm90TopkScratch::bytes(sm_count, query_rows);
}

// The bound scheme for lists of k (see launch_topk_sm90).
static bool union_bound_for(int k) {
  bool u = k < 32;
  if (const char* b = std::getenv("MEGATAX_TOPK_BOUND"); b != nullptr) {
    if (std::strcmp(b, "chunk") == 0) u = false;
    if (std::strcmp(b, "union") == 0) u = true;
  }
  return u;
}
static int bound_buckets_for(int k) { return !union_bound_for(k) && k >= 32 ? kBoundBuckets : 1; }

Sm90TopkBounds sm90_topk_bounds(void* scratch, int sm_count, int k) {
  return Sm90TopkBounds{Sm90TopkScratch(scratch, sm_count).tau_keys, bound_buckets_for(k)};
}

void launch_topk_sm90(const Sm90TopkJob& job, int sm_count, cudaStream_t stream) {
  TopkSm90Params p;
  p.nq = job.queries.rows;
  p.n = job.database.rows;
  p.d = job.queries.dim;
  p.db_norms = job.database_norms;
  p.k = job.k;
  p.tiles = (p.n + kBN - 1) / kBN;
  p.chunk_tiles = job.chunk_tiles;
  p.chunks = job.chunks;
  const Sm90TopkShape shape = sm90_topk_shape(p.nq, p.d, sm_count);
  p.query_clusters = shape.query_clusters;
  p.items = shape.query_clusters * job.chunks;
  p.list_s = job.list_s;
  p.list_id = job.list_id;
  const Sm90TopkScratch scratch(job.scratch, sm_count);
  p.scratch = scratch.areas;
  p.tau_keys = scratch.tau_keys;
  // The bound the chunks share (shared_bound.cuh). Below k = 32 the union bound, one word a
  // query (Q=1024 k=10 on an H100, same runs: N=10M D=128 6.7-6.9 -> 6.3-6.5 ms; N=2M D=1024
  // 7.7-8.1 against 7.8-8.6 ms, within the runs' spread); from k = 32 the chunks' bound_j-th
  // scores in buckets, which at k = 100 ran 4-12% faster than the union bound (why is not
  // measured: a simulation of the selection had the union bound take fewer candidates there
  // too). Buckets are for larger k only: at k = 10 their reads cost more than the tighter
  // bound saves (N=10M D=128: 11.0 vs 10.2 ms; k = 100: 13.9 vs 17.8 ms).
  // MEGATAX_TOPK_BOUND=chunk|union overrides the choice (side-by-side benchmarks).
  p.union_bound = union_bound_for(p.k);
  p.buckets = bound_buckets_for(p.k);
  p.bound_j = bound_rank(p.k, p.buckets);
  if (p.items == 0 || p.nq == 0) return;
  auto run = [&](const TopkSm90Params& q) {
    if (q.union_bound) {
      // Unwritten list positions read as NaN (the union bound's contract, shared_bound.cuh).
      MEGATAX_CUDA_CHECK(cudaMemsetAsync(
          q.list_s, 0xff, static_cast<std::size_t>(q.nq) * q.chunks * q.k * sizeof(float), stream));
    }
    if (job.l2) {
      launch_cluster<L2Op>(job, q, shape.cluster, sm_count, stream);
    } else {
      launch_cluster<InnerProductOp>(job, q, shape.cluster, sm_count, stream);
    }
  };
  MEGATAX_CUDA_CHECK(cudaMemsetAsync(
      p.tau_keys, 0xff, static_cast<std::size_t>(p.nq) * p.buckets * sizeof(unsigned), stream));
  // The seed: without a bound, a chunk's first tiles pass nearly every score (all of the
  // first: no k-th score yet), overflow the slots into the scratch areas and flush the row
  // buffers again and again, with every chunk of a query doing so at once. So the same kernel
  // first runs over the database's first rows only, in kSeedChunks chunks of kSeedTiles tiles,
  // publishing into the same bound words; seed_bound_kernel turns those into one bound a query
  // (each bucket's rows lie in its own seed chunks, so the largest bucket vouches for k rows),
  // which every word of the full run starts from. The seed's scores are the full run's for the
  // same rows (the same kernel, tiles and query blocks), which meet the bound (ties pass) and
  // stay in chunk 0's list unless k better rows displace them: the bound holds. Runs when the
  // chunks are long (the seed costs kSeedTiles tiles a CTA, about one wave). The argument
  // does not need the seed's rows in chunk 0, only the same scores: MEGATAX_TOPK_SEED=force
  // seeds every launch that has a tile to seed from (the kernel tests run so), =0 never
  // (side-by-side benchmarks).
  constexpr int kSeedChunks = 16, kSeedTiles = 4;
  static const int seed_mode = [] {  // 0 off, 1 long chunks, 2 always
    const char* e = std::getenv("MEGATAX_TOPK_SEED");
    if (e != nullptr && std::strcmp(e, "0") == 0) return 0;
    if (e != nullptr && std::strcmp(e, "force") == 0) return 2;
    return 1;
  }();
  const int seed_chunks = static_cast<int>(
      std::min<std::int64_t>({kSeedChunks, p.chunks, p.tiles / kSeedTiles}));
  // By default only for the buckets (k >= 32): with the union bound (k < 32) a chunk's lists
  // tighten it within a few tiles anyway, and the seed ran 0.5-1.5% slower at k = 10 (at
  // k = 100 2-3% faster; bench/RESULTS.md, session 33). With fewer seed chunks than buckets
  // some bucket stays unset: no bound, only time lost.
  const bool long_chunks =
      p.buckets > 1 && seed_chunks >= p.buckets && p.chunk_tiles >= 16 * kSeedTiles;
  if (seed_chunks > 0 && (seed_mode == 2 || (seed_mode == 1 && long_chunks))) {
    TopkSm90Params seed = p;
    // Lists of bound_j: what a bucket gets is a seed chunk's bound_j-th score, which is the
    // last of its bound_j best as well as the bound_j-th of its k best: lists of k publish the
    // same scores after selecting far more (k = 100: lists of 13, whose threshold passes ~8x
    // fewer candidates after the first tile).
    seed.k = p.bound_j;
    seed.chunks = seed_chunks;
    seed.chunk_tiles = kSeedTiles;
    seed.tiles = static_cast<std::int64_t>(seed_chunks) * kSeedTiles;
    seed.n = std::min(p.n, seed.tiles * kBN);  // the database's first rows
    seed.items = shape.query_clusters * seed_chunks;
    run(seed);  // its lists fit in the full run's ([nq][seed chunks <= chunks][k])
    seed_bound_kernel<<<static_cast<unsigned>((p.nq + 255) / 256), 256, 0, stream>>>(
        p.tau_keys, p.nq, p.buckets);
    MEGATAX_CUDA_CHECK_LAUNCH("seed_bound_kernel");
  }
  run(p);
}

}  // namespace megatax::cuda::detail
