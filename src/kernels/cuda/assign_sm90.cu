// Fused assign on Hopper: warpgroup MMA (wgmma) fed by TMA, argmin in registers.
//
// Block: 3 warpgroups (384 threads), one block per SM, a persistent grid walking work items,
// on the main loop of sm90_pipeline.cuh:
//   warpgroup 0  producer: one thread issues the TMA copies of the X tile (128 rows x 64 d)
//                and the centroid tile (BN rows x 64 d) of each d chunk into the ring of
//                shared-memory stages. Its registers are given to the consumers (setmaxnreg).
//   warpgroups 1, 2  consumers: each owns 64 of the 128 rows and all BN columns of the tile:
//                4 wgmma m64nBNk16 per chunk (f32 accumulators, BN / 2 registers a thread),
//                one chunk's MMAs in flight while the next chunk's are issued; when a
//                column tile is complete its scores fold into a running (score, index)
//                minimum of the thread's two rows, in registers.
// A row's columns live in the four lanes of one quad, so the end of a work item needs two
// shuffles, no shared memory. ||x||^2 (L2 distances) is summed from the X tiles of the first
// column tile while they are in shared memory and that chunk's MMAs run (no extra pass).
//
// Work items. Flat assign: (row block, split) with the split running fastest. One split (all
// column tiles) while the X blocks of the resident CTAs fit in L2, as at D = 1024: a CTA
// re-reads its rows once per column tile, from L2, odd tiles walking the d chunks backwards
// (the chunks read last are read again first) and the last tile marking them evict-first.
// More splits where they do not fit or the rows are too few to fill the GPU; splits merge
// with one packed 64-bit atomicMin per row (same winner, ties to the smaller index, whatever
// the split). Flat work runs in clusters of 2 CTAs (two row blocks against the same centroid
// tiles, each CTA loading half of the centroid tile and multicasting it to both). Grouped
// assign: one item per 128 rows of a group against that group's centroids (BN = 128: a
// 100-child node is one tile), no clusters.
//
// The FLOP floor: 2 n k d. Shared-memory stages: (128 + BN) * 128 bytes; BN = 256 gives
// 48 KiB a stage and 85 FLOPs per byte brought from L2 (128 with the multicast).
// Measured on an H100 (bench_cuda, bench/RESULTS.md, session 18): 84-93% of cuBLAS's bf16
// 8192^3 rate at N=4M K=1024 D=1024 bf16 (77-89% f16: f16 runs at lower clocks, cuBLAS's
// f16 GEMM too) and 90-92% at N=1M K=16384, with the tensor pipe active 83% / 88% of the
// cycles (ncu; cuBLAS 8192^3: 93%). What is left: the fold does not overlap the MMAs
// (both consumer warpgroups fold at the same time).
#include "kernels/cuda/assign_sm90.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cuda/assign_splits.cuh"
#include "kernels/cuda/check.h"
#include "kernels/cuda/distance_ops.cuh"
#include "kernels/cuda/hopper.cuh"
#include "kernels/cuda/sm90_pipeline.cuh"
#include "kernels/cuda/tensor_map.h"
#include "megatax/error.h"

namespace megatax::cuda::detail {
namespace {

constexpr int kBM = kSm90BM;  // rows of X per work item

// Shared memory: the ring, then the fused norms of the item's rows.
template <int BN>
struct Sm90Shape {
  using Ring = Sm90Ring<BN>;  // 4 stages for BN 256, 6 for BN 128
  static constexpr int kSmemBytes = Ring::kBytes + kBM * 4;
  static_assert(kSmemBytes <= 227 * 1024, "fits the per-block shared-memory limit");
};

// A group's rows and centroids (grouped assign): rows [row0, row_end) are the group's rows
// in this item, its centroids [c_begin, c_begin + c_count).
struct GroupItem {
  std::int64_t row0;
  std::int64_t row_end;
  std::int64_t c_begin;
  std::int64_t c_count;
};

struct Sm90Params {
  std::int64_t n = 0, k = 0, d = 0;
  const float* c_norms = nullptr;
  const float* x_norms = nullptr;
  // c_norms + c_begin is 8-byte aligned for every item (full tiles load column pairs).
  bool c_norm_pairs = false;
  // Flat: work item w = (w / splits, w % splits).
  std::int64_t tiles = 0, tiles_per_split = 0, splits = 1, items = 0;
  // Grouped: the work items.
  const GroupItem* groups = nullptr;
  void* labels = nullptr;
  bool label64 = true;
  float* dist = nullptr;
  unsigned long long* packed = nullptr;  // splits > 1
  float* x_norms_out = nullptr;          // splits > 1, fused norms
};

// What one work item covers.
struct Work {
  std::int64_t row0, row_end;  // X rows [row0, min(row0 + 128, row_end)) are outputs
  std::int64_t c_begin, c_count;
  std::int64_t t0, t1;         // column tiles of BN
  bool first_split;
};

template <int BN, bool kGrouped, int kCluster>
__device__ __forceinline__ Work work_item(const Sm90Params& p, std::int64_t w, int cta_rank) {
  Work r;
  if constexpr (kGrouped) {
    const GroupItem g = p.groups[w];
    r.row0 = g.row0;
    r.row_end = g.row_end;
    r.c_begin = g.c_begin;
    r.c_count = g.c_count;
    r.t0 = 0;
    r.t1 = (g.c_count + BN - 1) / BN;
    r.first_split = true;
  } else {
    const std::int64_t split = w % p.splits;
    r.row0 = (w / p.splits * kCluster + cta_rank) * kBM;
    r.row_end = p.n;
    r.c_begin = 0;
    r.c_count = p.k;
    r.t0 = split * p.tiles_per_split;
    r.t1 = min(r.t0 + p.tiles_per_split, p.tiles);
    r.first_split = split == 0;
  }
  return r;
}

// Folds one BN-column tile of accumulators (a thread's two rows x BN / 4 columns, wgmma's
// register layout) into the thread's running (score, index) minima. kFull: every column of
// the tile exists and the column norms can be read in 8-byte pairs (no bounds tests, half
// the loads); the fold is on the critical path between tiles, so its instructions count.
template <int BN, class Op, bool kFull>
__device__ __forceinline__ void fold_tile(const float (&acc)[BN / 2], const float* c_norms,
                                          std::int64_t tile_col0, std::int64_t c_count, int lane,
                                          float (&best)[2], int (&best_idx)[2]) {
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
    const std::int64_t col = tile_col0 + j * 8 + (lane % 4) * 2;
    const bool ok0 = kFull || col < c_count, ok1 = kFull || col + 1 < c_count;
    float ct0 = 0.f, ct1 = 0.f;
    if constexpr (Op::kUsesNorms) {
      if constexpr (kFull) {
        const float2 ct = __ldg(reinterpret_cast<const float2*>(c_norms + col));
        ct0 = ct.x;
        ct1 = ct.y;
      } else {
        if (ok0) ct0 = __ldg(c_norms + col);
        if (ok1) ct1 = __ldg(c_norms + col + 1);
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float s0 = Op::score(acc[4 * j + 2 * h], ct0);
      const float s1 = Op::score(acc[4 * j + 2 * h + 1], ct1);
      if (ok0 && s0 < best[h]) {
        best[h] = s0;
        best_idx[h] = static_cast<int>(col);
      }
      if (ok1 && s1 < best[h]) {
        best[h] = s1;
        best_idx[h] = static_cast<int>(col + 1);
      }
    }
  }
}

template <class T, int BN, class Op, bool kGrouped, int kCluster>
__device__ __forceinline__ void consume(const Sm90Params& p,
                                        const RingView<typename Sm90Shape<BN>::Ring>& ring,
                                        float* xn_smem, int cw, int cta_rank,
                                        std::int64_t cluster_id, std::int64_t clusters,
                                        std::int64_t chunks);

template <class T, int BN, class Op, bool kGrouped, int kCluster>
__global__ void __launch_bounds__(kSm90Threads, 1)
    assign_sm90_kernel(const __grid_constant__ CUtensorMap map_x,
                       const __grid_constant__ CUtensorMap map_c, const Sm90Params p) {
#if defined(MEGATAX_SM90A)
  using Ring = typename Sm90Shape<BN>::Ring;
  extern __shared__ unsigned char smem_raw[];
  const RingView<Ring> ring(smem_raw);
  auto* xn_smem = reinterpret_cast<float*>(ring.end());

  const int wg = static_cast<int>(threadIdx.x) / 128;
  // Clusters of kCluster CTAs work on kCluster consecutive row blocks against the same
  // centroid tiles (sm90_pipeline.cuh).
  const int cta_rank = kCluster > 1 ? static_cast<int>(sm90::cluster_cta_rank()) : 0;
  const std::int64_t cluster_id = blockIdx.x / kCluster;
  const std::int64_t clusters = gridDim.x / kCluster;
  ring.template init<kCluster>();

  const std::int64_t chunks = (p.d + kSm90BK - 1) / kSm90BK;

  if (wg == 0) {
    // ---- producer ----
    sm90::setmaxnreg_dec<kSm90ProducerRegs>();
    if (threadIdx.x == 0) {
      // Flat items re-read their X rows once per column tile: serpentine chunk order and
      // dropping the rows from L2 after their last tile (sm90_pipeline.cuh).
      produce_items<Ring, BN, kCluster, /*kDropA=*/!kGrouped, /*kSerpentine=*/!kGrouped>(
          ring, &map_x, &map_c, cluster_id, clusters, p.items, chunks, cta_rank,
          [&](std::int64_t w) {
            const Work wk = work_item<BN, kGrouped, kCluster>(p, w, cta_rank);
            return ProducerItem{wk.row0, wk.c_begin, wk.t0, wk.t1};
          });
    }
  } else {
    consume<T, BN, Op, kGrouped, kCluster>(p, ring, xn_smem, wg - 1, cta_rank, cluster_id,
                                           clusters, chunks);
  }
  // No CTA may leave while a peer can still multicast into its shared memory or arrive on its
  // barriers.
  if constexpr (kCluster > 1) sm90::cluster_sync();
#else
  __trap();  // launched only on compute capability 9.0 with the sm_90a image (see usable())
#endif
}

// The consumer warpgroup `cw` (0 or 1) of assign_sm90_kernel.
template <class T, int BN, class Op, bool kGrouped, int kCluster>
__device__ __forceinline__ void consume(const Sm90Params& p,
                                        const RingView<typename Sm90Shape<BN>::Ring>& ring,
                                        float* xn_smem, int cw, int cta_rank,
                                        std::int64_t cluster_id, std::int64_t clusters,
                                        std::int64_t chunks) {
#if defined(MEGATAX_SM90A)
  using Ring = typename Sm90Shape<BN>::Ring;
  sm90::setmaxnreg_inc<kSm90ConsumerRegs>();
  const int tid = static_cast<int>(threadIdx.x) - 128 * (cw + 1);
  const int warp = tid / 32, lane = tid % 32;
  const int local_row = cw * 64 + warp * 16 + lane / 4;  // + 8 for the second row slot
  float acc[BN / 2];
  RingCursor cur;

  for (std::int64_t w = cluster_id; w < p.items; w += clusters) {
    const Work wk = work_item<BN, kGrouped, kCluster>(p, w, cta_rank);
    const bool fuse_norms = Op::kUsesNorms && (kGrouped || p.x_norms == nullptr) && wk.first_split;
    float best[2] = {__int_as_float(0x7f800000), __int_as_float(0x7f800000)};
    int best_idx[2] = {INT_MAX, INT_MAX};
    float xn_part = 0.f;

    for (std::int64_t t = wk.t0; t < wk.t1; ++t) {
      mma_tile<T, Ring, BN, kCluster>(
          acc, ring, cur, cw, lane, chunks, [&](std::uint32_t a, std::int64_t) {
            if (!fuse_norms || t != wk.t0) return;
            // Two threads a row, four 16-byte pieces each, in the row's own order: the
            // 128-byte swizzle stores logical piece j of row r at piece j ^ (r % 8) (the stage
            // is 1024-byte aligned), and summing them as stored made a row's norm depend on
            // its position in the tile (its batch and group) in the last bits. Zeros past d.
            const std::uint32_t row = a + (tid / 2) * (kSm90BK * 2);
            const int phase = (tid / 2) % 8;
#pragma unroll
            for (int v = 0; v < 4; ++v) {
              const uint4 u = sm90::lds128(row + 16 * (((tid % 2) * 4 + v) ^ phase));
              const std::uint32_t words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                float2 f;
                if constexpr (std::is_same_v<T, __nv_bfloat16>) {
                  __nv_bfloat162 h;
                  memcpy(&h, &words[e], 4);
                  f = __bfloat1622float2(h);
                } else {
                  __half2 h;
                  memcpy(&h, &words[e], 4);
                  f = __half22float2(h);
                }
                xn_part = fmaf(f.x, f.x, xn_part);
                xn_part = fmaf(f.y, f.y, xn_part);
              }
            }
          });

      // Fold the tile into the running minima. Within a thread the columns come in
      // increasing order, so "strictly smaller" keeps the smallest index among ties.
      const std::int64_t tile_col0 = t * BN;
      const float* c_norms = Op::kUsesNorms ? p.c_norms + wk.c_begin : nullptr;
      if (tile_col0 + BN <= wk.c_count && p.c_norm_pairs) {
        fold_tile<BN, Op, true>(acc, c_norms, tile_col0, wk.c_count, lane, best, best_idx);
      } else {
        fold_tile<BN, Op, false>(acc, c_norms, tile_col0, wk.c_count, lane, best, best_idx);
      }
    }

    // Row minima across the quad.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int o = 1; o < 4; o *= 2) {
        const float s = __shfl_xor_sync(0xffffffffu, best[h], o);
        const int i = __shfl_xor_sync(0xffffffffu, best_idx[h], o);
        if (MinScoreIndex::better(s, i, best[h], best_idx[h])) {
          best[h] = s;
          best_idx[h] = i;
        }
      }
    }
    if (fuse_norms) {
      xn_part += __shfl_xor_sync(0xffffffffu, xn_part, 1);
      if (tid % 2 == 0) xn_smem[cw * 64 + tid / 2] = xn_part;
    }
    sm90::named_barrier_sync(1 + cw, 128);
    if (lane % 4 == 0) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = local_row + 8 * h;
        const std::int64_t row = wk.row0 + r;
        if (row >= wk.row_end || row >= p.n) continue;
        const bool found = best_idx[h] != INT_MAX;
        if (kGrouped || p.splits == 1) {
          const float xn = !Op::kUsesNorms ? 0.f : (fuse_norms ? xn_smem[r] : p.x_norms[row]);
          write_label(p.labels, !kGrouped && p.label64, row, found ? best_idx[h] : -1);
          if (p.dist != nullptr)
            p.dist[row] = found ? Op::finalize(best[h], xn) : __int_as_float(0x7fc00000);
        } else {
          if (found) {
            atomicMin(&p.packed[row], pack_min(best[h], best_idx[h]));
          }
          if (fuse_norms) p.x_norms_out[row] = xn_smem[r];
        }
      }
    }
    sm90::named_barrier_sync(1 + cw, 128);  // xn_smem is rewritten by the next item
  }
#endif
}

template <class T, int BN, class Op, bool kGrouped, int kCluster>
void launch_kernel(const MatrixView& x, const MatrixView& c, const Sm90Params& p, int sm_count,
                   cudaStream_t stream) {
  auto kernel = assign_sm90_kernel<T, BN, Op, kGrouped, kCluster>;
  const CUtensorMap map_x = make_tensor_map_2d(x, x.rows, kBM, kSm90BK);
  const CUtensorMap map_c = make_tensor_map_2d(c, c.rows, BN / kCluster, kSm90BK);
  ClusterLaunch<kCluster> launch(kernel, Sm90Shape<BN>::kSmemBytes, stream);
  launch.launch(kernel, sm_count, p.items, map_x, map_c, p);
  MEGATAX_CUDA_CHECK_LAUNCH("assign_sm90_kernel");
}

template <int BN, class Op, bool kGrouped, int kCluster>
void launch_typed(const MatrixView& x, const MatrixView& c, const Sm90Params& p, int sm_count,
                  cudaStream_t stream) {
  if (x.dtype == DType::kBF16) {
    launch_kernel<__nv_bfloat16, BN, Op, kGrouped, kCluster>(x, c, p, sm_count, stream);
  } else {
    launch_kernel<__half, BN, Op, kGrouped, kCluster>(x, c, p, sm_count, stream);
  }
}

constexpr int kFlatBN = 256;  // 128 measured 1.4x slower (more L2 traffic per FLOP)
constexpr int kGroupBN = 128;
// MEGATAX_SM90_CLUSTER=1 (nvcc -D) turns the multicast off, for side-by-side runs.
#ifndef MEGATAX_SM90_CLUSTER
#define MEGATAX_SM90_CLUSTER 2
#endif
constexpr int kFlatCluster = MEGATAX_SM90_CLUSTER;  // CTAs sharing (multicasting) centroid tiles

}  // namespace

bool sm90_assign_usable(const MatrixView& x, const MatrixView& c) {
  if (const char* force = std::getenv("MEGATAX_CUDA_ASSIGN"); force != nullptr && std::strcmp(force, "mma") == 0)
    return false;
  return tma_compatible(x) && tma_compatible(c) && device_is_sm90();
}

void launch_assign_sm90(const Sm90AssignJob& job, int sm_count, std::size_t l2_bytes,
                        cudaStream_t stream) {
  const std::int64_t n = job.x.rows, k = job.c.rows, d = job.x.dim;
  Sm90Params p;
  p.n = n;
  p.k = k;
  p.d = d;
  p.c_norms = job.c_norms;
  p.c_norm_pairs = reinterpret_cast<std::uintptr_t>(job.c_norms) % 8 == 0;
  p.x_norms = job.x_norms;
  p.labels = job.labels;
  p.label64 = job.label64;
  p.dist = job.dist;
  const std::int64_t row_blocks = (n + kBM - 1) / kBM;
  const std::int64_t tiles = (k + kFlatBN - 1) / kFlatBN;
  // One split while the X blocks of all resident CTAs fit in L2 (33 MB at D = 1024): each
  // CTA then re-reads its own rows once per column tile, from L2. (A quarter of L2, as the
  // portable kernel uses, gave 4 splits at K = 1024: the blocks sharing a row block drifted
  // apart and X came from HBM 3.3 times; 77 -> 90% of peak at K = 16384, bench/RESULTS.md.)
  const std::int64_t tps = tiles_per_split(row_blocks, tiles, sm_count, kBM * d * 2, l2_bytes,
                                           /*l2_share=*/1);
  p.tiles = tiles;
  p.tiles_per_split = tps;
  p.splits = (tiles + tps - 1) / tps;
  p.items = (row_blocks + kFlatCluster - 1) / kFlatCluster * p.splits;
  if (p.splits > 1) {
    p.packed = job.packed_ws;
    p.x_norms_out = job.xn_ws;
    MEGATAX_CUDA_CHECK(cudaMemsetAsync(p.packed, 0xff, n * sizeof(unsigned long long), stream));
  }
  if (job.l2) {
    launch_typed<kFlatBN, L2Op, false, kFlatCluster>(job.x, job.c, p, sm_count, stream);
  } else {
    launch_typed<kFlatBN, InnerProductOp, false, kFlatCluster>(job.x, job.c, p, sm_count, stream);
  }
  if (p.splits > 1) {
    const float* xn = job.x_norms != nullptr ? job.x_norms : job.xn_ws;
    if (job.l2) {
      launch_unpack_splits<L2Op>(p.packed, n, xn, job.labels, job.label64, job.dist, stream);
    } else {
      launch_unpack_splits<InnerProductOp>(p.packed, n, xn, job.labels, job.label64, job.dist,
                                           stream);
    }
  }
}

std::int64_t max_sm90_group_items(const std::int64_t* row_begin, std::size_t groups) {
  std::int64_t items = 0;
  for (std::size_t g = 0; g < groups; ++g) items += (row_begin[g + 1] - row_begin[g] + kBM - 1) / kBM;
  return items;
}

void launch_assign_grouped_sm90(const Sm90GroupedJob& job, const std::int64_t* row_begin,
                                const std::int64_t* centroid_begin,
                                const std::int64_t* centroid_end, const std::uint8_t* skip,
                                std::size_t groups, void* items_ws, int sm_count,
                                cudaStream_t stream) {
  std::vector<GroupItem> items;
  for (std::size_t g = 0; g < groups; ++g) {
    if (skip != nullptr && skip[g] != 0) continue;
    for (std::int64_t r = row_begin[g]; r < row_begin[g + 1]; r += kBM)
      items.push_back(GroupItem{r, row_begin[g + 1], centroid_begin[g],
                                centroid_end[g] - centroid_begin[g]});
  }
  if (items.empty()) return;
  auto* items_dev = static_cast<GroupItem*>(items_ws);
  // Pageable source: the copy is staged when cudaMemcpyAsync returns.
  MEGATAX_CUDA_CHECK(cudaMemcpyAsync(items_dev, items.data(), items.size() * sizeof(GroupItem),
                                     cudaMemcpyHostToDevice, stream));
  Sm90Params p;
  p.n = job.x.rows;
  p.k = job.c.rows;
  p.d = job.x.dim;
  p.c_norms = job.c_norms;
  p.c_norm_pairs = reinterpret_cast<std::uintptr_t>(job.c_norms) % 8 == 0 &&
                   std::all_of(centroid_begin, centroid_begin + groups,
                               [](std::int64_t b) { return b % 2 == 0; });
  p.groups = items_dev;
  p.items = static_cast<std::int64_t>(items.size());
  p.labels = job.labels;
  p.label64 = false;
  p.dist = job.dist;
  if (job.l2) {
    launch_typed<kGroupBN, L2Op, true, 1>(job.x, job.c, p, sm_count, stream);
  } else {
    launch_typed<kGroupBN, InnerProductOp, true, 1>(job.x, job.c, p, sm_count, stream);
  }
}

}  // namespace megatax::cuda::detail
