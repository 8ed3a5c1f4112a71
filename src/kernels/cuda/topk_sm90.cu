// Fused top-k on Hopper, phase 1: wgmma + TMA dot products with the selection in the epilogue.
//
// Work items: (query-block cluster, database chunk), the chunk running slowest, so that the
// clusters working at one time share their chunk through L2. The main loop is assign's
// (sm90_pipeline.cuh): the queries are the A side (a CTA's 128 query rows; clusters of 2 CTAs
// take 2 query blocks and multicast each database tile to both), the database the B side,
// walked in BN-row tiles. After each tile a consumer thread holds its two query rows' dot
// products against BN / 4 database rows each (wgmma's register layout; a row's BN columns
// live in the four lanes of one quad), and the selection runs per row:
//
//   score    dot products become scores in place (column terms ||c||^2 from a shared copy
//            the consumer threads load while the MMAs run); each thread keeps the smallest
//            score of each of its rows. Two instructions a score, as assign's argmin fold.
//   filter   a row half whose smallest score does not beat the row's threshold is done: the
//            smaller of the row's own tau (its k-th best so far, +inf until k are known) and
//            the query's shared bound (shared_bound.cuh: the chunks' lists vouch for k scores
//            at or below it; read while the MMAs run); a register copy per thread. Most tiles
//            end here after the first few of a chunk.
//   slots    otherwise the thread appends the passing scores to its own kSlots slots per
//            half (shared memory, predicated stores, no branches); the warp then offers them
//            all at once: each lane compares its candidates with its row's threshold and
//            appends the survivors to the row's 32-entry buffer (shared atomic); full buffers
//            are merged into the row's sorted list (warp_select.cuh flush, the list being the
//            (query, chunk) slot of the output lists in global memory).
//   overflow a tile where some thread has more than kSlots candidates (the first tiles of a
//            chunk) goes through per-row scratch areas in global memory (kBN entries a row,
//            atomics) and row-by-row offers instead.
//
// Each warp owns its 16 query rows (the rows its wgmma fragments hold) for the whole work
// item, so the selection needs no synchronisation beyond __syncwarp (the column terms' double
// buffer takes one 256-thread barrier a tile). Candidates are ordered by (score, id), ties
// to the smaller id, as the portable kernel (the lists are the same whatever the tile order).
//
// Shared memory: the ring (3 stages of 48 KiB at BN = 256), 128 row states (408 bytes), the
// slots (8 warps x 2 halves x 32 lanes x kSlots x 8 bytes) and the column terms (2 KiB).
// Measured on an H100 (bench_cuda, bench/RESULTS.md): Q=1024 bf16 against cuBLAS's GEMM-only
// time of the same shape 1.09x (N=10M D=128 k=10), 1.9x (k=100), 1.3-1.7x (N=2M D=1024 k=10),
// 1.9x (k=100); the portable kernel took 2.9-5.9x. Without the selection (a diagnostic
// build) the main loop ran at 0.37x (D=128) and 0.93x (D=1024) of GEMM-only: the selection,
// which does not overlap the MMAs, is what is left (two accumulator sets to overlap them made
// ptxas serialise the wgmmas: C7518 / C7515).
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
#include "kernels/cuda/shared_bound.cuh"
#include "kernels/cuda/sm90_pipeline.cuh"
#include "kernels/cuda/tensor_map.h"
#include "kernels/cuda/warp_select.cuh"
#include "megatax/error.h"

namespace megatax::cuda::detail {
namespace {

constexpr int kBN = kSm90TopkBN;
constexpr int kBM = kSm90BM;
[[maybe_unused]] constexpr int kWarpRows = 16;  // query rows a consumer warp owns

// A staged candidate: score and database row (n < 2^31: TMA's limit too).
struct Candidate {
  float s;
  std::int32_t id;
};

// The selection state of one query row (shared memory).
struct RowState {
  float buf_s[32];
  std::int64_t buf_id[32];
  std::int64_t tau_id;
  float tau_s;
  int m;
  int count;
  int staged;  // candidates in the row's scratch area
};
static_assert(sizeof(RowState) % 8 == 0, "row states stay 8-byte aligned");

// A thread's candidate slots per row half (the filter's fast path).
constexpr int kSlots = 7;

using Ring = Sm90Ring<kBN, 3 * (kBM + kBN) * kSm90BK * 2>;
constexpr int kSlotBytes =
    kSm90ConsumerWarps * 2 * 32 * kSlots * static_cast<int>(sizeof(Candidate));
constexpr int kSmemBytes = Ring::kBytes + kBM * static_cast<int>(sizeof(RowState)) + kSlotBytes +
                           2 * kBN * 4 /* column terms, double-buffered */;
static_assert(kSmemBytes <= 227 * 1024, "fits the per-block shared-memory limit");

struct TopkSm90Params {
  std::int64_t nq = 0, n = 0, d = 0;
  const float* db_norms = nullptr;
  int k = 0;
  std::int64_t tiles = 0, chunk_tiles = 0;
  int chunks = 0;
  std::int64_t query_clusters = 0, items = 0;
  float* list_s = nullptr;
  std::int64_t* list_id = nullptr;
  Candidate* scratch = nullptr;  // [grid CTAs][kBM][kBN]
  // [nq][buckets]: the shared bounds (shared_bound.cuh); kBoundBuckets for k >= 32, else 1.
  unsigned* tau_keys = nullptr;
  int buckets = 1;
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
  r.row0 = ((w % p.query_clusters) * kCluster + cta_rank) * kBM;
  r.t0 = r.chunk * p.chunk_tiles;
  r.t1 = min(r.t0 + p.chunk_tiles, p.tiles);
  return r;
}

#if defined(MEGATAX_SM90A)
// Turns one tile's dot products into scores in place (NaN for columns past the database,
// which then never pass a filter) and returns each of the thread's two rows' smallest score.
// tile_norms: the tile's column terms in shared memory (tile_norms[i]: column col0 + i).
// kFull: every column exists.
template <class Op, bool kFull>
__device__ __forceinline__ void score_tile(float (&acc)[kBN / 2], const float* tile_norms,
                                           std::int64_t n, std::int64_t col0, int lane,
                                           float (&lowest)[2]) {
  lowest[0] = lowest[1] = __int_as_float(0x7fc00000);  // fminf ignores NaN operands
#pragma unroll
  for (int j = 0; j < kBN / 8; ++j) {
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
      lowest[h] = fminf(lowest[h], fminf(s0, s1));
    }
  }
}

// Appends the scores of row half h that pass the threshold to the thread's own candidate
// slots (kSlots of them; `count` goes on counting past them: an overflow). Branch-free:
// predicated stores.
template <int h>
__device__ __forceinline__ void slot_candidates(const float (&acc)[kBN / 2], std::int64_t col0,
                                                int lane, float thr, Candidate* slots,
                                                int& count) {
#pragma unroll
  for (int j = 0; j < kBN / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float s = acc[4 * j + 2 * h + e];
      const bool pass = s <= thr;
      if (pass && count < kSlots) {
        slots[count] = Candidate{s, static_cast<std::int32_t>(col0 + j * 8 + (lane % 4) * 2 + e)};
      }
      count += pass ? 1 : 0;
    }
  }
}

// The exhaustive form (a tile where some thread's slots overflowed): every passing score is
// appended to its row's scratch area (kBN entries a row) at the row's shared counter.
__device__ __forceinline__ void stage_candidates(const float (&acc)[kBN / 2], std::int64_t col0,
                                                 int lane, const float (&thr)[2], RowState* rows,
                                                 Candidate* areas) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    RowState* row = rows + lane / 4 + 8 * h;
    Candidate* area = areas + (lane / 4 + 8 * h) * kBN;
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float s = acc[4 * j + 2 * h + e];
        if (s <= thr[h]) {
          const int pos = atomicAdd(&row->staged, 1);
          area[pos] = Candidate{s, static_cast<std::int32_t>(col0 + j * 8 + (lane % 4) * 2 + e)};
        }
      }
    }
  }
}

__device__ __forceinline__ RowSelect row_select(const TopkSm90Params& p, const TopkWork& wk,
                                                RowState& rs, std::int64_t q) {
  RowSelect st;
  const std::int64_t slot = (q * p.chunks + wk.chunk) * p.k;
  st.list_s = p.list_s + slot;
  st.list_id = p.list_id + slot;
  st.buf_s = rs.buf_s;
  st.buf_id = rs.buf_id;
  st.k = p.k;
  st.m = rs.m;
  st.count = rs.count;
  st.tau_s = rs.tau_s;
  st.tau_id = rs.tau_id;
  st.short_merge = true;  // few warps an SM: a flush's latency is exposed
  st.bound_j = bound_rank(p.k, p.buckets);
  return st;
}

// Stores the row's selection state and publishes query q's shared bound (shared_bound.cuh).
__device__ __forceinline__ void keep_row_select(const TopkSm90Params& p, const TopkWork& wk,
                                                RowState& rs, const RowSelect& st, int lane,
                                                std::int64_t q) {
  __syncwarp();
  if (lane == 0) {
    rs.m = st.m;
    rs.count = st.count;
    rs.tau_s = st.tau_s;
    rs.tau_id = st.tau_id;
    rs.staged = 0;
    publish_bound(p.tau_keys, p.buckets, q, wk.chunk, st);
  }
  __syncwarp();
}

// The warp offers the candidates in its threads' slots (this thread's: `slots`, half h at
// h * 32 * kSlots, count[h] of them, none above kSlots) to their rows' selections. Every lane
// offers its own candidates at once: one compare with the row's threshold and, for those that
// pass, an append to the row's 32-entry buffer (shared atomic); a row whose buffer is full is
// flushed by the whole warp and its waiting candidates are offered again.
__device__ __forceinline__ void drain_slots(const TopkSm90Params& p, const TopkWork& wk,
                                            RowState* rows, const Candidate* slots,
                                            const int (&count)[2], int warp_row0, int lane) {
  int h = 0, i = 0;  // this lane's next candidate
  while (true) {
    while (h < 2 && i >= count[h]) {
      ++h;
      i = 0;
    }
    const bool have = h < 2;
    RowState* rs = rows + lane / 4 + 8 * (h & 1);
    bool waits = false;
    if (have) {
      const Candidate c = slots[h * 32 * kSlots + i];
      if (key_less(c.s, c.id, rs->tau_s, rs->tau_id)) {
        const int pos = atomicAdd(&rs->count, 1);
        if (pos < 32) {
          rs->buf_s[pos] = c.s;
          rs->buf_id[pos] = c.id;
        } else {
          waits = true;  // offered again after the row's flush
        }
      }
      if (!waits) ++i;
    }
    __syncwarp();
    if (!__any_sync(0xffffffffu, have)) break;
    // Rows with a full buffer: flush them one by one.
    const int row_count = lane < kWarpRows ? rows[lane].count : 0;
    unsigned full = __ballot_sync(0xffffffffu, row_count >= 32);
    while (full != 0) {
      const int r = __ffs(full) - 1;
      full &= full - 1;
      __syncwarp();
      if (lane == 0) rows[r].count = 32;
      __syncwarp();
      RowSelect st = row_select(p, wk, rows[r], wk.row0 + warp_row0 + r);
      flush(st);
      keep_row_select(p, wk, rows[r], st, lane, wk.row0 + warp_row0 + r);
    }
  }
}

// The warp offers its rows' staged candidates (scratch areas) to their selections.
__device__ __forceinline__ void drain_staged(const TopkSm90Params& p, const TopkWork& wk,
                                             RowState* rows, const Candidate* areas,
                                             int warp_row0, int lane) {
  __syncwarp();  // staged candidates and counters of the other lanes are visible after this
  const int mine = lane < kWarpRows ? rows[lane].staged : 0;
  unsigned pending = __ballot_sync(0xffffffffu, mine > 0);
  while (pending != 0) {
    const int i = __ffs(pending) - 1;
    pending &= pending - 1;
    const int staged = __shfl_sync(0xffffffffu, mine, i);
    RowSelect st = row_select(p, wk, rows[i], wk.row0 + warp_row0 + i);
    const Candidate* area = areas + i * kBN;
    for (int b = 0; b < staged; b += 32) {
      const bool valid = b + lane < staged;
      const Candidate c = valid ? area[b + lane] : Candidate{kInfScore, 0};
      offer(st, c.s, c.id, valid);
    }
    keep_row_select(p, wk, rows[i], st, lane, wk.row0 + warp_row0 + i);
  }
}

// The consumer warpgroup `cw` (0 or 1) of topk_sm90_kernel.
template <class T, class Op, int kCluster, int kBuckets>
__device__ __forceinline__ void consume(const TopkSm90Params& p, const RingView<Ring>& ring,
                                        RowState* row_states, Candidate* slot_smem,
                                        float* norm_smem, int cw, int cta_rank,
                                        std::int64_t cluster_id, std::int64_t clusters,
                                        std::int64_t chunks) {
  sm90::setmaxnreg_inc<kSm90ConsumerRegs>();
  const int tid = static_cast<int>(threadIdx.x) - 128 * (cw + 1);
  const int warp = tid / 32, lane = tid % 32;
  const int warp_row0 = cw * 64 + warp * kWarpRows;  // the warp's first row in the block
  RowState* rows = row_states + warp_row0;
  const int ctid = cw * 128 + tid;  // 0..255 over both consumer warpgroups
  Candidate* warp_slots = slot_smem + (cw * 4 + warp) * 2 * 32 * kSlots;  // [2][32][kSlots]
  float acc[kBN / 2];
  RingCursor cur;

  for (std::int64_t w = cluster_id; w < p.items; w += clusters) {
    const TopkWork wk = topk_work<kCluster>(p, w, cta_rank);
    if (lane < kWarpRows) {
      RowState& rs = rows[lane];
      rs.m = 0;
      rs.count = 0;
      rs.staged = 0;
      rs.tau_s = kInfScore;
      rs.tau_id = kNoId;
    }
    __syncwarp();
    // Rows past the queries never pass the filter (NaN compares false).
    float thr[2];
    std::int64_t my_query[2];  // the thread's rows' queries (clamped: rows past them read q 0)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const std::int64_t q = wk.row0 + warp_row0 + lane / 4 + 8 * h;
      thr[h] = q < p.nq ? kInfScore : __int_as_float(0x7fc00000);
      my_query[h] = q < p.nq ? q : 0;
    }

    for (std::int64_t t = wk.t0; t < wk.t1; ++t) {
      const std::int64_t col0 = t * kBN;
      // The tile's column terms: one per consumer thread, read while the MMAs run, then
      // shared through a double buffer (the barrier orders this tile's writes after every
      // thread's reads of the buffer two tiles ago).
      float norm = 0.f;
      if (Op::kUsesNorms && col0 + ctid < p.n) norm = __ldg(p.db_norms + col0 + ctid);
      // The queries' shared bounds (shared_bound.cuh), read while the MMAs run; of 8 buckets,
      // the four lanes of a row's quad read two each, then take the largest over the quad.
      unsigned shared_key[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if constexpr (kBuckets == 1) {
          shared_key[h] = __ldcg(p.tau_keys + my_query[h]);
        } else {
          const uint2 b = __ldcg(reinterpret_cast<const uint2*>(p.tau_keys +
                                                                my_query[h] * kBoundBuckets) +
                                 lane % 4);
          shared_key[h] = max(b.x, b.y);
        }
      }
      mma_tile<T, Ring, kBN, kCluster>(acc, ring, cur, cw, lane, chunks,
                                       [](std::uint32_t, std::int64_t) {});
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if constexpr (kBuckets > 1) {
          shared_key[h] = max(shared_key[h], __shfl_xor_sync(0xffffffffu, shared_key[h], 1));
          shared_key[h] = max(shared_key[h], __shfl_xor_sync(0xffffffffu, shared_key[h], 2));
        }
        // fminf ignores the NaN of "none yet"; rows past the queries keep their NaN.
        if (thr[h] == thr[h]) thr[h] = fminf(thr[h], float_from_order_key(shared_key[h]));
      }
      float* tile_norms = norm_smem + (t & 1) * kBN;
      if constexpr (Op::kUsesNorms) {
        tile_norms[ctid] = norm;
        sm90::named_barrier_sync(1, 256);
      }
      float lowest[2];
      if (col0 + kBN <= p.n) {
        score_tile<Op, true>(acc, tile_norms, p.n, col0, lane, lowest);
      } else {
        score_tile<Op, false>(acc, tile_norms, p.n, col0, lane, lowest);
      }
      // Most tiles end here: no score of the thread's rows beats its threshold.
      int count[2] = {0, 0};
      if (lowest[0] <= thr[0]) {
        slot_candidates<0>(acc, col0, lane, thr[0], warp_slots + lane * kSlots, count[0]);
      }
      if (lowest[1] <= thr[1]) {
        slot_candidates<1>(acc, col0, lane, thr[1], warp_slots + (32 + lane) * kSlots, count[1]);
      }
      const bool overflow = count[0] > kSlots || count[1] > kSlots;
      if (__any_sync(0xffffffffu, overflow)) {
        Candidate* areas =
            p.scratch + (static_cast<std::int64_t>(blockIdx.x) * kBM + warp_row0) * kBN;
        stage_candidates(acc, col0, lane, thr, rows, areas);
        drain_staged(p, wk, rows, areas, warp_row0, lane);
      } else if (__any_sync(0xffffffffu, count[0] + count[1] > 0)) {
        drain_slots(p, wk, rows, warp_slots + lane * kSlots, count, warp_row0, lane);
      } else {
        continue;
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (thr[h] == thr[h]) thr[h] = rows[lane / 4 + 8 * h].tau_s;  // NaN: past the queries
      }
    }

    // The item's lists: flush the buffers, pad to k with (+inf, -1).
    for (int i = 0; i < kWarpRows; ++i) {
      const std::int64_t q = wk.row0 + warp_row0 + i;
      if (q >= p.nq) break;
      RowSelect st = row_select(p, wk, rows[i], q);
      if (st.count > 0) flush(st);
      for (int j = st.m + lane; j < st.k; j += 32) {
        st.list_s[j] = kInfScore;
        st.list_id[j] = -1;
      }
    }
    __syncwarp();
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
  auto* row_states = reinterpret_cast<RowState*>(ring.end());
  auto* slot_smem = reinterpret_cast<Candidate*>(row_states + kBM);
  auto* norm_smem = reinterpret_cast<float*>(slot_smem + kSm90ConsumerWarps * 2 * 32 * kSlots);
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
    consume<T, Op, kCluster, kBuckets>(p, ring, row_states, slot_smem, norm_smem, wg - 1,
                                       cta_rank, cluster_id, clusters, chunks);
  }
  // No CTA may leave while a peer can still multicast into its shared memory or arrive on its
  // barriers.
  if constexpr (kCluster > 1) sm90::cluster_sync();
#else
  __trap();  // launched only on compute capability 9.0 with the sm_90a image (see usable())
#endif
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

Sm90TopkShape sm90_topk_shape(std::int64_t query_rows, int sm_count) {
  Sm90TopkShape s;
  const std::int64_t blocks = (query_rows + kBM - 1) / kBM;
  s.cluster = blocks >= 2 ? 2 : 1;
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
  return static_cast<std::size_t>(std::max(sm_count, 1)) * kBM * kBN * sizeof(Candidate) +
         static_cast<std::size_t>(std::max<std::int64_t>(query_rows, 1)) * kBoundBuckets *
             sizeof(unsigned);
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
  const Sm90TopkShape shape = sm90_topk_shape(p.nq, sm_count);
  p.query_clusters = shape.query_clusters;
  p.items = shape.query_clusters * job.chunks;
  p.list_s = job.list_s;
  p.list_id = job.list_id;
  p.scratch = static_cast<Candidate*>(job.scratch);
  const std::int64_t areas = static_cast<std::int64_t>(std::max(sm_count, 1)) * kBM * kBN;
  p.tau_keys = reinterpret_cast<unsigned*>(p.scratch + areas);
  // Buckets for larger k only: at k = 10 their reads cost more than the tighter bound saves
  // (N=10M D=128: 11.0 vs 10.2 ms; k = 100: 13.9 vs 17.8 ms).
  p.buckets = p.k >= 32 ? kBoundBuckets : 1;
  if (p.nq > 0) {
    MEGATAX_CUDA_CHECK(cudaMemsetAsync(
        p.tau_keys, 0xff, static_cast<std::size_t>(p.nq) * p.buckets * sizeof(unsigned), stream));
  }
  if (p.items == 0 || p.nq == 0) return;
  if (job.l2) {
    launch_cluster<L2Op>(job, p, shape.cluster, sm_count, stream);
  } else {
    launch_cluster<InnerProductOp>(job, p, shape.cluster, sm_count, stream);
  }
}

}  // namespace megatax::cuda::detail
