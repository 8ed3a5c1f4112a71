// Fused assign: label[i] = argmin_j dist(x_i, c_j) without an [n, k] matrix anywhere.
//
// Kernel shape (f16/bf16, AssignMmaPolicy): a block of 256 threads owns 128 rows of X and
// streams the centroid tiles (128 columns each) through the tensor-core main loop of
// gemm_core.cuh. After each tile, every thread folds its 8 x 8 accumulators into a running
// (score, index) minimum per row slot held in registers (ArgMinEpilogue); at the end the row
// minima are combined across the quad (shuffles) and the 4 warps of a row (shared memory) and
// written out. ||x||^2 is summed from the shared-memory A tiles during the first tile (no
// extra pass over X) unless the caller passes it.
//
// The centroid tiles of a row block are usually split over several blocks ("splits"), for two
// reasons: (1) L2 reuse -- the blocks of one row block are launched next to each other (the
// split index runs fastest in the 1-D grid), so X's row block is read from DRAM once and
// shared through L2 while they run; a block that walked all tiles alone would re-read it
// once per tile, from DRAM as soon as the resident blocks' row blocks outgrow L2 (measured:
// 69 GB of DRAM traffic for an 8 GB X at N=4M, K=1024, D=1024); (2) small n, large k: fill
// the GPU. Split results are merged with one 64-bit atomicMin per row and split on a packed
// (order-preserving score key, index) word, so the winner is the same (ties to the smaller
// index) whatever the split, and a small kernel unpacks it.
//
// f32 takes the same structure with the FFMA core (F32SimtPolicy).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "kernels/cuda/assign_sm90.h"
#include "kernels/cuda/assign_splits.cuh"
#include "kernels/cuda/check.h"
#include "kernels/cuda/distance_ops.cuh"
#include "kernels/cuda/gemm_core.cuh"
#include "kernels/cuda/launch.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {
namespace {

// One argument struct, passed by value.
struct AssignParams {
  Operand x;                        // n rows
  Operand c;                        // k rows
  std::int64_t d = 0;
  bool aligned = false;             // 16-byte copies allowed (f16/bf16)
  const float* x_norms = nullptr;   // null: fused (summed in the kernel) or unused (IP)
  const float* c_norms = nullptr;   // required for L2
  std::int64_t tiles = 0;           // column tiles in total
  std::int64_t tiles_per_split = 0; // column tiles per block
  std::int64_t splits = 1;          // blocks per row block (block b: row block b / splits)
  // Direct output (splits == 1).
  void* labels = nullptr;
  bool label64 = true;
  float* dist = nullptr;
  // Split output (splits > 1): packed minima, initialised to all ones, and the fused
  // x norms (written by split 0) for the unpacking kernel.
  unsigned long long* packed = nullptr;
  float* x_norms_out = nullptr;
};

// Running (score, index) minimum per row slot, across tiles, in registers.
template <class Core, class Op>
struct ArgMinEpilogue {
  float best[Core::kRowSlots];
  int best_idx[Core::kRowSlots];
  const float* c_norms;
  std::int64_t k;

  __device__ ArgMinEpilogue(const float* c_norms_, std::int64_t k_) : c_norms(c_norms_), k(k_) {
#pragma unroll
    for (int rs = 0; rs < Core::kRowSlots; ++rs) {
      best[rs] = __int_as_float(0x7f800000);  // +inf
      best_idx[rs] = INT_MAX;
    }
  }

  __device__ void prefetch(const Core&, std::int64_t) {}

  __device__ void on_tile(Core& core, std::int64_t t) {
    // The column terms (L1-resident: every block reads the same k floats) are loaded first,
    // all together, so their latencies overlap.
    float cterm[Core::kColSlots];
#pragma unroll
    for (int cs = 0; cs < Core::kColSlots; ++cs) {
      const std::int64_t col = t * Core::kBN + core.col_of(cs);
      cterm[cs] = (Op::kUsesNorms && col < k) ? Op::col_term(c_norms, col) : 0.f;
    }
#pragma unroll
    for (int cs = 0; cs < Core::kColSlots; ++cs) {
      const std::int64_t col = t * Core::kBN + core.col_of(cs);
      if (col >= k) continue;
      const int ci = static_cast<int>(col);
#pragma unroll
      for (int rs = 0; rs < Core::kRowSlots; ++rs) {
        const float s = Op::score(core.at(rs, cs), cterm[cs]);
        if (MinScoreIndex::better(s, ci, best[rs], best_idx[rs])) {
          best[rs] = s;
          best_idx[rs] = ci;
        }
      }
    }
  }
};

template <class Core>
constexpr int min_blocks_per_sm() {
  return Core::Policy::kMinBlocks;
}

// Dynamic shared memory: the pipeline, then kBM floats of fused row norms.
template <class Core>
constexpr int assign_smem_bytes() {
  return Core::kSmemBytes + Core::kBM * static_cast<int>(sizeof(float));
}

// Ends a block: combines the per-thread running minima of the block's kBM rows across the
// lanes (shuffles) and warps (shared memory; the pipeline must be drained) that share a row,
// then calls emit(r, score, index) once per row r < kBM (index INT_MAX: no finite score).
template <class Core, class Epi, class Emit>
__device__ void reduce_block_minima(Core& core, Epi& epi, unsigned char* smem, Emit emit) {
  constexpr int kBM = Core::kBM;
#pragma unroll
  for (int rs = 0; rs < Core::kRowSlots; ++rs) {
#pragma unroll
    for (int o = 1; o < Core::kLanesPerRow; o *= 2) {
      const float s = __shfl_xor_sync(0xffffffffu, epi.best[rs], o);
      const int i = __shfl_xor_sync(0xffffffffu, epi.best_idx[rs], o);
      if (MinScoreIndex::better(s, i, epi.best[rs], epi.best_idx[rs])) {
        epi.best[rs] = s;
        epi.best_idx[rs] = i;
      }
    }
  }
  float* red_s = reinterpret_cast<float*>(smem);
  int* red_i = reinterpret_cast<int*>(red_s + Core::kWarpsPerRow * kBM);
  static_assert(Core::kWarpsPerRow * kBM * 8 <= Core::kSmemBytes, "reduction fits");
  const int lane = threadIdx.x % 32;
  if (lane % Core::kLanesPerRow == 0) {
    const int w = core.row_warp_index();
#pragma unroll
    for (int rs = 0; rs < Core::kRowSlots; ++rs) {
      const int r = core.row_of(rs);
      red_s[w * kBM + r] = epi.best[rs];
      red_i[w * kBM + r] = epi.best_idx[rs];
    }
  }
  __syncthreads();
  for (int r = threadIdx.x; r < kBM; r += Core::kThreads) {
    float s = red_s[r];
    int idx = red_i[r];
#pragma unroll
    for (int w = 1; w < Core::kWarpsPerRow; ++w) {
      const float s2 = red_s[w * kBM + r];
      const int i2 = red_i[w * kBM + r];
      if (MinScoreIndex::better(s2, i2, s, idx)) {
        s = s2;
        idx = i2;
      }
    }
    emit(r, s, idx);
  }
}

template <class Core, class Op>
__global__ void __launch_bounds__(Core::kThreads, min_blocks_per_sm<Core>())
    assign_kernel(const AssignParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kBM = Core::kBM;
  Core core(smem, p.aligned);
  ArgMinEpilogue<Core, Op> epi(p.c_norms, p.c.rows);

  const std::int64_t split = static_cast<std::int64_t>(blockIdx.x) % p.splits;
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) / p.splits * kBM;
  const std::int64_t t0 = split * p.tiles_per_split;
  const std::int64_t t1 = min(t0 + p.tiles_per_split, p.tiles);
  // The fused x norms are needed once per row: split 0 sums them.
  const bool fuse_norms = Op::kUsesNorms && p.x_norms == nullptr && split == 0;
  float* xn_smem = reinterpret_cast<float*>(smem + Core::kSmemBytes);

  run_tiles(core, epi, p.x, p.c, p.d, row0, t0, t1, fuse_norms ? xn_smem : nullptr);

  const std::int64_t n = p.x.rows;
  reduce_block_minima<Core>(core, epi, smem, [&](int r, float s, int idx) {
    const std::int64_t row = row0 + r;
    if (row >= n) return;
    if (p.splits == 1) {
      const float xn = !Op::kUsesNorms ? 0.f : (fuse_norms ? xn_smem[r] : p.x_norms[row]);
      const bool found = idx != INT_MAX;
      write_label(p.labels, p.label64, row, found ? idx : -1);
      if (p.dist != nullptr) p.dist[row] = found ? Op::finalize(s, xn) : __int_as_float(0x7fc00000);
    } else {
      if (idx != INT_MAX) {
        atomicMin(&p.packed[row], pack_min(s, idx));
      }
      if (fuse_norms) p.x_norms_out[row] = xn_smem[r];
    }
  });
}

template <class Core, class Op>
void launch_assign(const AssignParams& p, int sm_count, std::size_t l2_bytes, std::size_t elem,
                   cudaStream_t stream, unsigned long long* packed_ws, float* xn_ws,
                   const float* x_norms_given) {
  constexpr int kBM = Core::kBM, kBN = Core::kBN;
  auto kernel = assign_kernel<Core, Op>;
  constexpr int kSmem = assign_smem_bytes<Core>();
  MEGATAX_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  int per_sm = 0;
  MEGATAX_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, Core::kThreads, kSmem));
  const std::int64_t n = p.x.rows, k = p.c.rows;
  const std::int64_t row_blocks = (n + kBM - 1) / kBM;
  const std::int64_t tiles = (k + kBN - 1) / kBN;
  const std::int64_t resident = static_cast<std::int64_t>(sm_count) * (per_sm > 0 ? per_sm : 1);
  const auto x_block_bytes = static_cast<std::int64_t>(kBM) * p.d * static_cast<std::int64_t>(elem);
  const std::int64_t tps = tiles_per_split(row_blocks, tiles, resident, x_block_bytes, l2_bytes);
  AssignParams q = p;
  q.tiles = tiles;
  q.tiles_per_split = tps;
  const std::int64_t splits = (tiles + tps - 1) / tps;
  q.splits = splits;
  if (splits > 1) {
    q.packed = packed_ws;
    q.x_norms_out = xn_ws;
    MEGATAX_CUDA_CHECK(cudaMemsetAsync(packed_ws, 0xff, n * sizeof(unsigned long long), stream));
  }
  if (row_blocks * splits > INT_MAX) throw Error(ErrorCode::kInvalidArgument, "assign: n too large");
  kernel<<<static_cast<unsigned>(row_blocks * splits), Core::kThreads, kSmem, stream>>>(q);
  MEGATAX_CUDA_CHECK_LAUNCH("assign_kernel");
  if (splits > 1) {
    const float* xn = x_norms_given != nullptr ? x_norms_given : xn_ws;
    launch_unpack_splits<Op>(q.packed, n, xn, p.labels, p.label64, p.dist, stream);
  }
}

template <class Core>
void launch_assign_metric(Metric metric, const AssignParams& p, const Resources& res,
                          std::size_t elem, cudaStream_t stream, unsigned long long* packed_ws,
                          float* xn_ws) {
  if (metric == Metric::kL2) {
    launch_assign<Core, L2Op>(p, res.sm_count(), res.l2_cache_bytes(), elem, stream, packed_ws,
                              xn_ws, p.x_norms);
  } else {
    launch_assign<Core, InnerProductOp>(p, res.sm_count(), res.l2_cache_bytes(), elem, stream,
                                        packed_ws, xn_ws, p.x_norms);
  }
}

// ---- grouped assign: every row against its own group's centroids ------------------------
// One block per work item: kBM rows of one group (rows [row0, row_end), sorted by group by
// the caller) against all of that group's centroids; no splits, so labels are written
// directly (as an index within the group's centroids).
struct GroupTile {
  std::int64_t row0;     // first row of the block
  std::int64_t row_end;  // end of the block's group (rows >= row_end are not the group's)
  std::int64_t c_begin;  // the group's centroids: [c_begin, c_begin + c_count)
  std::int64_t c_count;
};

struct GroupedParams {
  Operand x;
  Operand c;                      // all groups' centroids
  std::int64_t d = 0;
  std::int64_t elem = 0;          // bytes per element
  bool aligned = false;
  const float* c_norms = nullptr; // [c.rows] (L2)
  const GroupTile* tiles = nullptr;
  std::int32_t* labels = nullptr;
  float* dist = nullptr;
};

template <class Core, class Op>
__global__ void __launch_bounds__(Core::kThreads, min_blocks_per_sm<Core>())
    assign_grouped_kernel(const GroupedParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const GroupTile tile = p.tiles[blockIdx.x];
  Core core(smem, p.aligned);
  const Operand c{static_cast<const char*>(p.c.ptr) + tile.c_begin * p.c.ld * p.elem, tile.c_count,
                  p.c.ld};
  const Operand x{p.x.ptr, tile.row_end, p.x.ld};
  ArgMinEpilogue<Core, Op> epi(p.c_norms == nullptr ? nullptr : p.c_norms + tile.c_begin,
                               tile.c_count);
  const bool fuse_norms = Op::kUsesNorms;
  float* xn_smem = reinterpret_cast<float*>(smem + Core::kSmemBytes);
  const std::int64_t tiles = (tile.c_count + Core::kBN - 1) / Core::kBN;
  run_tiles(core, epi, x, c, p.d, tile.row0, 0, tiles, fuse_norms ? xn_smem : nullptr);
  reduce_block_minima<Core>(core, epi, smem, [&](int r, float s, int idx) {
    const std::int64_t row = tile.row0 + r;
    if (row >= tile.row_end) return;
    const float xn = fuse_norms ? xn_smem[r] : 0.f;
    const bool found = idx != INT_MAX;
    p.labels[row] = found ? idx : -1;
    if (p.dist != nullptr) p.dist[row] = found ? Op::finalize(s, xn) : __int_as_float(0x7fc00000);
  });
}

// Queues the grouped kernel: one work item per kBM rows of each group.
template <class Core, class Op>
void launch_assign_grouped(const GroupedParams& p, const std::vector<std::int64_t>& row_begin,
                           const std::vector<std::int64_t>& centroid_begin,
                           const std::vector<std::int64_t>& centroid_end, const std::uint8_t* skip,
                           GroupTile* tiles_dev, cudaStream_t stream) {
  constexpr int kBM = Core::kBM;
  auto kernel = assign_grouped_kernel<Core, Op>;
  constexpr int kSmem = assign_smem_bytes<Core>();
  MEGATAX_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  std::vector<GroupTile> tiles;
  for (std::size_t g = 0; g + 1 < row_begin.size(); ++g) {
    if (skip != nullptr && skip[g] != 0) continue;
    for (std::int64_t r = row_begin[g]; r < row_begin[g + 1]; r += kBM)
      tiles.push_back(GroupTile{r, row_begin[g + 1], centroid_begin[g],
                                centroid_end[g] - centroid_begin[g]});
  }
  if (tiles.empty()) return;
  if (tiles.size() > static_cast<std::size_t>(INT_MAX))
    throw Error(ErrorCode::kInvalidArgument, "assign_grouped: too many rows");
  // Pageable source: the copy is complete (staged) when cudaMemcpyAsync returns.
  MEGATAX_CUDA_CHECK(cudaMemcpyAsync(tiles_dev, tiles.data(), tiles.size() * sizeof(GroupTile),
                                     cudaMemcpyHostToDevice, stream));
  GroupedParams q = p;
  q.tiles = tiles_dev;
  kernel<<<static_cast<unsigned>(tiles.size()), Core::kThreads, kSmem, stream>>>(q);
  MEGATAX_CUDA_CHECK_LAUNCH("assign_grouped_kernel");
}

// Upper bound of the work items of a grouped launch (any core: kBM >= 32).
std::int64_t max_group_tiles(const std::vector<std::int64_t>& row_begin, int bm) {
  std::int64_t t = 0;
  for (std::size_t g = 0; g + 1 < row_begin.size(); ++g)
    t += (row_begin[g + 1] - row_begin[g] + bm - 1) / bm;
  return t;
}

template <class Core>
void launch_grouped_metric(Metric metric, const GroupedParams& p,
                           const std::vector<std::int64_t>& row_begin,
                           const std::vector<std::int64_t>& centroid_begin,
                           const std::vector<std::int64_t>& centroid_end, const std::uint8_t* skip,
                           Carver& cv, cudaStream_t stream) {
  GroupTile* tiles = cv.take<GroupTile>(static_cast<std::size_t>(max_group_tiles(row_begin, Core::kBM)));
  if (metric == Metric::kL2) {
    launch_assign_grouped<Core, L2Op>(p, row_begin, centroid_begin, centroid_end, skip, tiles,
                                      stream);
  } else {
    launch_assign_grouped<Core, InnerProductOp>(p, row_begin, centroid_begin, centroid_end, skip,
                                                tiles, stream);
  }
}

}  // namespace
}  // namespace detail

void assign(Resources& res, const AssignArgs& args) {
  using namespace detail;
  validate_operand_pair(args.x, args.centroids, "assign", "x", "centroids", "are");
  const MatrixView& x = args.x;
  const MatrixView& c = args.centroids;
  if (c.rows < 1 || c.rows >= INT_MAX) {
    throw Error(ErrorCode::kInvalidArgument,
                "assign: k = " + std::to_string(c.rows) + ", expected 1 <= k < 2^31");
  }
  if (args.metric != Metric::kL2 && args.metric != Metric::kInnerProduct) {
    throw Error(ErrorCode::kInvalidArgument, "assign: unknown metric");
  }
  if (x.rows == 0) return;
  if (args.labels == nullptr) throw Error(ErrorCode::kInvalidArgument, "assign: labels is null");

  res.activate();
  auto stream = static_cast<cudaStream_t>(res.stream());
  const bool l2 = args.metric == Metric::kL2;
  const bool tensor = x.dtype != DType::kF32;
  const std::int64_t n = x.rows, k = c.rows;

  // Workspace: centroid norms, split minima + fused x norms.
  const bool need_cn = l2 && args.c_norms == nullptr;
  auto carve = [&](Carver& cv, float** cn, unsigned long long** packed, float** xn_out) {
    *cn = need_cn ? cv.take<float>(k) : nullptr;
    *packed = cv.take<unsigned long long>(n);
    *xn_out = cv.take<float>(n);
  };
  float *cn = nullptr, *xn_out = nullptr;
  unsigned long long* packed = nullptr;
  Carver measure(nullptr);
  carve(measure, &cn, &packed, &xn_out);
  Carver cv(res.workspace(measure.bytes()));
  carve(cv, &cn, &packed, &xn_out);

  AssignParams p;
  p.x = Operand{x.data, x.rows, x.stride};
  p.c = Operand{c.data, c.rows, c.stride};
  p.d = x.dim;
  p.aligned = tensor && vector_aligned(x) && vector_aligned(c);
  p.labels = args.labels;
  p.label64 = args.label_type == IndexType::kI64;
  p.dist = args.distances;
  if (l2) {
    if (need_cn) launch_row_norms(c, cn, stream);
    p.c_norms = need_cn ? cn : args.c_norms;
    p.x_norms = args.x_norms;  // null: summed inside the kernel from the first tile's A tiles
  }

  if (tensor && sm90_assign_usable(x, c)) {
    Sm90AssignJob job;
    job.x = x;
    job.c = c;
    job.l2 = l2;
    job.c_norms = p.c_norms;
    job.x_norms = p.x_norms;
    job.labels = p.labels;
    job.label64 = p.label64;
    job.dist = p.dist;
    job.packed_ws = packed;
    job.xn_ws = xn_out;
    launch_assign_sm90(job, res.sm_count(), res.l2_cache_bytes(), stream);
    return;
  }
  const std::size_t elem = dtype_size(x.dtype);
  switch (x.dtype) {
    case DType::kBF16:
      launch_assign_metric<MmaCore<AssignMmaPolicy, __nv_bfloat16>>(args.metric, p, res, elem,
                                                                     stream, packed, xn_out);
      break;
    case DType::kF16:
      launch_assign_metric<MmaCore<AssignMmaPolicy, __half>>(args.metric, p, res, elem, stream,
                                                              packed, xn_out);
      break;
    default:
      // 3xTF32 on tensor cores; MEGATAX_CUDA_F32=ffma: FFMA on 8 x 8 micro tiles
      // (MEGATAX_CUDA_F32_TILES=4x4: the 64 x 64 tiles of 4 x 4, for side-by-side runs; the
      // same bits either way: the sums run over d in the same order).
      if (f32_tensor_cores()) {
        p.aligned = vector_aligned(x) && vector_aligned(c);
        launch_assign_metric<MmaCore<AssignTf32Policy, float>>(args.metric, p, res, elem,
                                                                stream, packed, xn_out);
      } else if (f32_wide_tiles()) {
        launch_assign_metric<SimtCore<F32SimtWidePolicy>>(args.metric, p, res, elem, stream,
                                                           packed, xn_out);
      } else {
        launch_assign_metric<SimtCore<F32SimtPolicy>>(args.metric, p, res, elem, stream, packed,
                                                       xn_out);
      }
      break;
  }
}

void assign_grouped(Resources& res, const GroupedAssignArgs& args) {
  using namespace detail;
  validate_operand_pair(args.x, args.centroids, "assign_grouped", "x", "centroids", "are");
  const MatrixView& x = args.x;
  const MatrixView& c = args.centroids;
  if (args.metric != Metric::kL2 && args.metric != Metric::kInnerProduct)
    throw Error(ErrorCode::kInvalidArgument, "assign_grouped: unknown metric");
  const auto& rb = args.row_begin;
  const auto& cb = args.centroid_begin;
  const auto& ce = args.centroid_end;
  if (rb.empty() || cb.size() + 1 != rb.size() || ce.size() != cb.size())
    throw Error(ErrorCode::kInvalidArgument,
                "assign_grouped: expected row_begin of groups + 1 entries and centroid_begin / "
                "centroid_end of groups entries, got " + std::to_string(rb.size()) + ", " +
                    std::to_string(cb.size()) + " and " + std::to_string(ce.size()));
  if (rb.front() != 0 || rb.back() != x.rows)
    throw Error(ErrorCode::kInvalidArgument, "assign_grouped: row_begin must run from 0 to x.rows = " +
                                                 std::to_string(x.rows));
  for (std::size_t g = 0; g < cb.size(); ++g) {
    if (rb[g + 1] < rb[g])
      throw Error(ErrorCode::kInvalidArgument,
                  "assign_grouped: row_begin decreases at group " + std::to_string(g));
    if (cb[g] < 0 || ce[g] <= cb[g] || ce[g] > c.rows || ce[g] - cb[g] >= INT_MAX)
      throw Error(ErrorCode::kInvalidArgument,
                  "assign_grouped: group " + std::to_string(g) + " has centroids [" +
                      std::to_string(cb[g]) + ", " + std::to_string(ce[g]) +
                      "), expected a non-empty range within [0, " + std::to_string(c.rows) + ")");
  }
  if (!args.skip.empty() && args.skip.size() != cb.size())
    throw Error(ErrorCode::kInvalidArgument,
                "assign_grouped: skip has " + std::to_string(args.skip.size()) +
                    " entries, expected none or one per group (" + std::to_string(cb.size()) + ")");
  if (x.rows == 0) return;
  if (args.labels == nullptr)
    throw Error(ErrorCode::kInvalidArgument, "assign_grouped: labels is null");
  const std::uint8_t* skip = args.skip.empty() ? nullptr : args.skip.data();

  res.activate();
  auto stream = static_cast<cudaStream_t>(res.stream());
  const bool l2 = args.metric == Metric::kL2;
  const bool tensor = x.dtype != DType::kF32;
  const bool need_cn = l2 && args.c_norms == nullptr;
  // Workspace: centroid norms, then the work items (bounded by rows / 32 + groups; the
  // Hopper kernel's items, rows / 128 + groups of the same 32 bytes, fit in the same space).
  const std::int64_t max_tiles = max_group_tiles(rb, 32);
  static_assert(sizeof(GroupTile) == 32, "work item size");
  Carver measure(nullptr);
  measure.take<float>(need_cn ? c.rows : 0);
  measure.take<GroupTile>(static_cast<std::size_t>(max_tiles));
  Carver cv(res.workspace(measure.bytes()));
  float* cn = cv.take<float>(need_cn ? c.rows : 0);

  GroupedParams p;
  p.x = Operand{x.data, x.rows, x.stride};
  p.c = Operand{c.data, c.rows, c.stride};
  p.d = x.dim;
  p.elem = static_cast<std::int64_t>(dtype_size(x.dtype));
  p.aligned = tensor && vector_aligned(x) && vector_aligned(c);
  p.labels = args.labels;
  p.dist = args.distances;
  if (l2) {
    if (need_cn) launch_row_norms(c, cn, stream);
    p.c_norms = need_cn ? cn : args.c_norms;
  }
  if (tensor && sm90_assign_usable(x, c)) {
    Sm90GroupedJob job;
    job.x = x;
    job.c = c;
    job.l2 = l2;
    job.c_norms = p.c_norms;
    job.labels = p.labels;
    job.dist = p.dist;
    void* items = cv.take<GroupTile>(static_cast<std::size_t>(max_tiles));
    launch_assign_grouped_sm90(job, rb.data(), cb.data(), ce.data(), skip, cb.size(), items,
                               res.sm_count(), stream);
    return;
  }
  switch (x.dtype) {
    case DType::kBF16:
      launch_grouped_metric<MmaCore<AssignMmaPolicy, __nv_bfloat16>>(args.metric, p, rb, cb, ce, skip, cv, stream);
      break;
    case DType::kF16:
      launch_grouped_metric<MmaCore<AssignMmaPolicy, __half>>(args.metric, p, rb, cb, ce, skip, cv, stream);
      break;
    default:
      if (f32_tensor_cores()) {
        p.aligned = vector_aligned(x) && vector_aligned(c);
        launch_grouped_metric<MmaCore<AssignTf32Policy, float>>(args.metric, p, rb, cb, ce, skip,
                                                                cv, stream);
      } else {
        launch_grouped_metric<SimtCore<F32SimtPolicy>>(args.metric, p, rb, cb, ce, skip, cv,
                                                       stream);
      }
      break;
  }
}

}  // namespace megatax::cuda
