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
// The bound the chunks share starts from a seed run of this kernel over about a chunk's worth of
// the database's first rows that keeps only each thread's smallest scores (consume_seed,
// seed_bounds), so a chunk's first tiles no longer pass every score into the scratch areas.
// History: session 33's seed (k >= 32) ran the full selection over 16 x 4 tiles, ~0.6 ms of a
// ~8.3 ms search at N=2M D=1024 k=100 (H200, session 35); a row's first candidates filling its
// list at once (drain_staged, session 40) and lists of the rank published (session 41) took it
// to 0.29-0.33 ms. Session 48's seed of minima takes 0.03-0.17 ms for 4-16x the rows, and the
// tighter bound shortens the main launch at k = 100 by 10-15% (every k is now seeded; the
// items also run in whole waves, topk.cu): bench/RESULTS.md.
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
// A consumer thread's two column terms (||c||^2) of the tile at col0, read while the MMAs run
// (zero past the database or for inner products).
template <class Op>
__device__ __forceinline__ void load_tile_norms(const TopkSm90Params& p, std::int64_t col0,
                                                int tid, float (&norm)[2]) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    norm[i] = 0.f;
    if (Op::kUsesNorms && col0 + i * 128 + tid < p.n) {
      norm[i] = __ldg(p.db_norms + col0 + i * 128 + tid);
    }
  }
}

// The tile's column terms shared through warpgroup cw's double buffer (tile t's half); its
// barrier orders these writes after every thread's reads of the buffer two tiles ago.
template <class Op>
__device__ __forceinline__ const float* share_tile_norms(float* norm_smem, int cw, std::int64_t t,
                                                         int tid, const float (&norm)[2]) {
  float* tile_norms = norm_smem + (cw * 2 + (t & 1)) * kBN;
  if constexpr (Op::kUsesNorms) {
    tile_norms[tid] = norm[0];
    tile_norms[128 + tid] = norm[1];
    sm90::named_barrier_sync(1 + cw, 128);
  }
  return tile_norms;
}

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
      float norm[2];
      load_tile_norms<Op>(p, col0, tid, norm);
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
      const float* tile_norms = share_tile_norms<Op>(norm_smem, cw, t, tid, norm);
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

// The consumer warpgroup `cw` of a seed run (launch_topk_sm90): the tiles, MMAs and scores of
// consume (the same code, so the same bits as the full run's for the same rows), then, instead
// of a selection, each thread's smallest scores of its two rows stored to p.seed_values: 4 a
// row a tile (each the smallest of a quad lane's 64 columns) or 32 (the smallest of each of
// its 8-score groups). Every stored value is the score of a distinct database row.
template <class T, class Op, int kCluster>
__device__ __forceinline__ void consume_seed(const TopkSm90Params& p, const RingView<Ring>& ring,
                                             float* norm_smem, int cw, int cta_rank,
                                             std::int64_t cluster_id, std::int64_t clusters,
                                             std::int64_t chunks) {
  sm90::setmaxnreg_inc<kSm90ConsumerRegs>();
  const int tid = static_cast<int>(threadIdx.x) - 128 * (cw + 1);
  const int warp = tid / 32, lane = tid % 32;
  const int warp_row0 = cw * 64 + warp * 16;
  const std::int64_t per_query = p.tiles * p.seed_values_per_tile;
  float acc[1][kBN / 2];
  RingCursor cur;
  for (std::int64_t w = cluster_id; w < p.items; w += clusters) {
    const TopkWork wk = topk_work<kCluster>(p, w, cta_rank);
    for (std::int64_t t = wk.t0; t < wk.t1; ++t) {
      const std::int64_t col0 = t * kBN;
      float norm[2];
      load_tile_norms<Op>(p, col0, tid, norm);
      mma_tile<T, Ring, kBN, kCluster, /*kFirstWrites=*/true>(
          acc[0], ring, cur, cw, lane, chunks, [](std::uint32_t, std::int64_t) {});
      const float* tile_norms = share_tile_norms<Op>(norm_smem, cw, t, tid, norm);
      float gmin[kParts][kScoreGroups<kBN>], lowest[kParts];
      score_tile<Op, kBN, kParts>(acc, tile_norms, p.n, col0, lane, gmin, lowest);
#pragma unroll
      for (int h = 0; h < kParts; ++h) {
        const std::int64_t q = wk.row0 + warp_row0 + part_row(h, lane);
        if (q >= p.nq) continue;
        float* out = p.seed_values + q * per_query + t * p.seed_values_per_tile;
        if (p.seed_values_per_tile == 4) {
          out[lane % 4] = lowest[h];
        } else {
          float4* o = reinterpret_cast<float4*>(out + (lane % 4) * kScoreGroups<kBN>);
          static_assert(kScoreGroups<kBN> == 8, "two float4 a part");
          o[0] = make_float4(gmin[h][0], gmin[h][1], gmin[h][2], gmin[h][3]);
          o[1] = make_float4(gmin[h][4], gmin[h][5], gmin[h][6], gmin[h][7]);
        }
      }
    }
  }
}
#endif

template <class T, class Op, int kCluster, int kBuckets, bool kSeed>
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
  } else if constexpr (kSeed) {
    consume_seed<T, Op, kCluster>(p, ring, norm_smem, wg - 1, cta_rank, cluster_id, clusters,
                                  chunks);
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

// After a seed run of consume_seed: query q's bound is the k-th smallest of its m seed values,
// written to all of its `buckets` words. Each value is the score of a distinct database row in
// the full run's bits, so k values at or below it are k rows at or below it: no row above it
// is in the query's final k (ties pass). NaN values (columns past the database, rows past the
// queries) are never counted; fewer than k others leave the words unset. One block a query: a
// radix select (8 bits a pass, most significant first) over order keys in shared memory.
constexpr int kSeedValuesMax = 8192;
constexpr int kSeedSelectThreads = 256;
__global__ void __launch_bounds__(kSeedSelectThreads)
    seed_select_kernel(const float* values, int m, int k, unsigned* keys, int buckets) {
  extern __shared__ unsigned s_keys[];
  __shared__ unsigned hist[256];
  __shared__ unsigned s_digit;
  __shared__ int s_rank;
  const int tid = static_cast<int>(threadIdx.x);
  const std::int64_t q = blockIdx.x;
  const float* v = values + q * m;
  for (int i = tid; i < m; i += kSeedSelectThreads) {
    const float f = __ldcg(v + i);
    s_keys[i] = f == f ? float_order_key(f) : ~0u;
  }
  unsigned prefix = 0, mask = 0;
  int rank = k;  // the wanted key's rank among the keys under the prefix, from 1
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = tid; i < 256; i += kSeedSelectThreads) hist[i] = 0;
    __syncthreads();  // also orders the keys' stores (first pass) before their reads
    for (int i = tid; i < m; i += kSeedSelectThreads) {
      const unsigned u = s_keys[i];
      if ((u & mask) == prefix) atomicAdd(&hist[(u >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (tid < 32) {  // the digit whose bin holds the rank: lane l sums bins 8 l .. 8 l + 7
      unsigned c[8], sum = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) sum += c[j] = hist[8 * tid + j];
      unsigned incl = sum;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const unsigned t = __shfl_up_sync(0xffffffffu, incl, o);
        if (tid >= o) incl += t;
      }
      const unsigned excl = incl - sum, r = static_cast<unsigned>(rank);
      if (excl < r && r <= incl) {  // one lane (the keys under the prefix number >= rank)
        unsigned left = r - excl;
        int j = 0;
        while (c[j] < left) left -= c[j++];
        s_digit = static_cast<unsigned>(8 * tid + j);
        s_rank = static_cast<int>(left);
      }
    }
    __syncthreads();
    prefix |= s_digit << shift;
    mask |= 255u << shift;
    rank = s_rank;
    __syncthreads();  // s_digit and s_rank read before the next pass writes them
  }
  if (prefix == ~0u) return;  // the k-th is no row (NaN)
  for (int b = tid; b < buckets; b += kSeedSelectThreads) keys[q * buckets + b] = prefix;
}

template <class T, class Op, int kCluster>
void launch_typed(const Sm90TopkJob& job, const TopkSm90Params& p, int sm_count,
                  cudaStream_t stream) {
  auto kernel = p.seed_values != nullptr ? topk_sm90_kernel<T, Op, kCluster, 1, true>
                : p.buckets == 1          ? topk_sm90_kernel<T, Op, kCluster, 1, false>
                                          : topk_sm90_kernel<T, Op, kCluster, kBoundBuckets, false>;
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

// One launch of the kernel with `p` (a seed run or the full one), by the job's metric.
void launch_params(const Sm90TopkJob& job, const TopkSm90Params& p, const Sm90TopkShape& shape,
                   int sm_count, cudaStream_t stream) {
  if (job.l2) {
    launch_cluster<L2Op>(job, p, shape.cluster, sm_count, stream);
  } else {
    launch_cluster<InnerProductOp>(job, p, shape.cluster, sm_count, stream);
  }
}

// The seed (before a launch's full run): without a bound, a chunk's first tiles pass nearly
// every score (all of the first: no k-th score yet), overflow the slots into the scratch areas
// and flush the row buffers again and again, every chunk of a query at once. So the kernel
// first runs over the database's first rows (about a chunk's worth, spread over kSeedChunks
// chunks of the same tiles and query blocks) with consume_seed's epilogue, which keeps only
// each thread's smallest scores (4 or 32 a row a tile, each a distinct row's score in the full
// run's bits); seed_select_kernel then makes the k-th smallest of a query's values its bound in
// every word, which the full run starts from. No list is built, so the seed costs little more
// than its MMAs (N=2M D=1024, Q=1024, k=100 on an H200: 0.17 ms for 224 tiles, against 0.33 ms
// for session 41's seed of 64 tiles keeping lists of 13; bench/RESULTS.md, session 48).
// The values live in the space of the lists' ids or the scratch areas (the larger of the two
// a query; both unused until the full run), at most kSeedValuesMax a query; fewer than k, or
// chunks shorter than 64 tiles (the seed's share of the work would grow), and there is none.
// MEGATAX_TOPK_SEED=force seeds every launch that has a tile to seed from (the kernel tests run
// so), =0 never (side-by-side benchmarks).
void seed_bounds(const Sm90TopkJob& job, const TopkSm90Params& p, const Sm90TopkShape& shape,
                 int sm_count, cudaStream_t stream) {
  constexpr int kSeedChunks = 16;
  static const int seed_mode = [] {  // 0 off, 1 long chunks, 2 always
    const char* e = std::getenv("MEGATAX_TOPK_SEED");
    if (e != nullptr && std::strcmp(e, "0") == 0) return 0;
    if (e != nullptr && std::strcmp(e, "force") == 0) return 2;
    return 1;
  }();
  if (seed_mode == 0) return;
  // Where the values go: [nq][m] floats.
  const std::int64_t list_values = 2 * static_cast<std::int64_t>(p.chunks) * p.k;  // int64 ids
  const std::int64_t area_values = Sm90TopkScratch::area_entries(sm_count) *
                                   static_cast<std::int64_t>(sizeof(Candidate) / sizeof(float)) /
                                   p.nq;
  float* values = list_values >= area_values ? reinterpret_cast<float*>(job.list_id)
                                             : reinterpret_cast<float*>(p.scratch);
  const std::int64_t cap =
      std::min<std::int64_t>(kSeedValuesMax, std::max(list_values, area_values));
  // A chunk's worth of rows (N=10M D=128: 4.7% faster than a quarter of it, bench/RESULTS.md).
  std::int64_t tiles_a_chunk = p.chunk_tiles / kSeedChunks;
  if (seed_mode == 1 && tiles_a_chunk < 4) return;
  tiles_a_chunk = std::max<std::int64_t>(tiles_a_chunk, 1);
  const int chunks_seeded = static_cast<int>(
      std::min<std::int64_t>({kSeedChunks, p.chunks, p.tiles / tiles_a_chunk}));
  if (chunks_seeded == 0) return;
  // 4 values a row a tile (each the smallest of 64 rows) while they number 8 k or more, else
  // 32 (of 8 rows each): the k-th of the values stays near the k-th of all the seed's rows.
  int per_tile = chunks_seeded * tiles_a_chunk * 4 >= 8 * static_cast<std::int64_t>(p.k) ? 4 : 32;
  if (per_tile == 32 && chunks_seeded * tiles_a_chunk * 32 > cap) per_tile = 4;
  tiles_a_chunk = std::min<std::int64_t>(tiles_a_chunk, cap / (per_tile * chunks_seeded));
  const std::int64_t m = chunks_seeded * tiles_a_chunk * per_tile;
  if (tiles_a_chunk == 0 || m < p.k) return;
  TopkSm90Params seed = p;
  seed.chunks = chunks_seeded;
  seed.chunk_tiles = tiles_a_chunk;
  seed.tiles = chunks_seeded * tiles_a_chunk;
  seed.n = std::min(p.n, seed.tiles * kBN);  // the database's first rows
  seed.items = shape.query_clusters * chunks_seeded;
  seed.seed_values = values;
  seed.seed_values_per_tile = per_tile;
  launch_params(job, seed, shape, sm_count, stream);
  seed_select_kernel<<<static_cast<unsigned>(p.nq), kSeedSelectThreads,
                       static_cast<std::size_t>(m) * sizeof(unsigned), stream>>>(
      values, static_cast<int>(m), p.k, p.tau_keys, p.buckets);
  MEGATAX_CUDA_CHECK_LAUNCH("seed_select_kernel");
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
    auto kernel = topk_sm90_kernel<__nv_bfloat16, L2Op, 2, 1, false>;
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
  MEGATAX_CUDA_CHECK(cudaMemsetAsync(
      p.tau_keys, 0xff, static_cast<std::size_t>(p.nq) * p.buckets * sizeof(unsigned), stream));
  seed_bounds(job, p, shape, sm_count, stream);
  if (p.union_bound) {
    // Unwritten list positions read as NaN (the union bound's contract, shared_bound.cuh).
    MEGATAX_CUDA_CHECK(cudaMemsetAsync(
        p.list_s, 0xff, static_cast<std::size_t>(p.nq) * p.chunks * p.k * sizeof(float), stream));
  }
  launch_params(job, p, shape, sm_count, stream);
}

}  // namespace megatax::cuda::detail
