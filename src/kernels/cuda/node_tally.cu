// A pass's per-node tallies on the device (megatax/cuda.h, tally_rows_by_node and
// take_node_tallies): each node's rows and the float64 sum of their distances, added in row
// order, so that a node's sum has the bits of the host's loop over the same rows
// (`inertia += dist[i]` row after row). The rows are grouped by node through a stable radix
// sort (CUB); one warp walks each node's rows in order from the node's running tally.
// Memory-bound and small beside the descent they follow (a pass's batch of ~125K rows: ~1 MB
// sorted).
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_select.cuh>

#include "kernels/cuda/check.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(std::int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// key[i]: row i's node when it is in [0, n_nodes), else n_nodes (sorted last, tallied
// nowhere); value[i] = i.
__global__ void __launch_bounds__(kThreads)
    node_keys_kernel(const std::int32_t* node, std::int32_t n, std::int32_t n_nodes, std::int32_t* keys,
                     std::int32_t* rows) {
  const std::int32_t i = static_cast<std::int32_t>(blockIdx.x) * kThreads + static_cast<std::int32_t>(threadIdx.x);
  if (i >= n) return;
  const std::int32_t nd = node[i];
  keys[i] = nd >= 0 && nd < n_nodes ? nd : n_nodes;
  rows[i] = i;
}

// flags[t]: whether sorted position t starts a run of equal keys (a node's rows); ids[t] = t.
__global__ void __launch_bounds__(kThreads)
    run_starts_kernel(const std::int32_t* keys, std::int32_t n, std::int32_t* ids, unsigned char* flags) {
  const std::int32_t t = static_cast<std::int32_t>(blockIdx.x) * kThreads + static_cast<std::int32_t>(threadIdx.x);
  if (t >= n) return;
  ids[t] = t;
  flags[t] = t == 0 || keys[t - 1] != keys[t] ? 1 : 0;
}

// One warp a run (a node's rows, in row order: starts[r] .. starts[r + 1]): the lanes load 32
// distances at a time, and every lane adds them in order to the node's running sum (the same
// sum on every lane: one chain of float64 additions in row order, as the host's loop).
__global__ void __launch_bounds__(kThreads)
    tally_runs_kernel(const std::int32_t* keys, const std::int32_t* rows, const float* dist, std::int32_t n,
                      std::int32_t n_nodes, const std::int32_t* starts, const std::int64_t* runs,
                      DeviceNodeTally* tally) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const std::int64_t n_runs = *runs;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * (kThreads / 32);
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32; r < n_runs;
       r += warps) {
    const std::int32_t b = starts[r], e = r + 1 < n_runs ? starts[r + 1] : n;
    const std::int32_t nd = keys[b];
    if (nd == n_nodes) continue;  // rows tallied nowhere
    DeviceNodeTally acc = tally[nd];
    for (std::int32_t j0 = b; j0 < e; j0 += 32) {
      const std::int32_t j = j0 + lane;
      const double v = j < e ? static_cast<double>(dist[rows[j]]) : 0.0;
      const int c = e - j0 < 32 ? e - j0 : 32;
      for (int k = 0; k < c; ++k) acc.inertia += __shfl_sync(0xffffffffu, v, k);
    }
    acc.count += e - b;
    if (lane == 0) tally[nd] = acc;
  }
}

__global__ void __launch_bounds__(kThreads)
    touched_flags_kernel(const DeviceNodeTally* tally, std::int64_t n_nodes, std::int32_t* ids,
                         unsigned char* flags) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= n_nodes) return;
  ids[i] = static_cast<std::int32_t>(i);
  flags[i] = tally[i].count > 0 ? 1 : 0;
}

// For the first *touched positions: the node's tally out, and zeroed.
__global__ void __launch_bounds__(kThreads)
    take_tallies_kernel(DeviceNodeTally* tally, const std::int32_t* nodes, const std::int64_t* touched,
                        std::int64_t* counts, double* inertia) {
  const std::int64_t u = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (u >= *touched) return;
  DeviceNodeTally& t = tally[nodes[u]];
  counts[u] = t.count;
  inertia[u] = t.inertia;
  t = DeviceNodeTally{};
}

void check_nodes(const char* what, std::int64_t n_nodes) {
  if (n_nodes < 1 || n_nodes >= INT_MAX)
    throw Error(ErrorCode::kInvalidArgument, std::string(what) + ": n_nodes = " + std::to_string(n_nodes) +
                                                 ", expected 1 .. " + std::to_string(INT_MAX - 1));
}

}  // namespace
}  // namespace detail

void tally_rows_by_node(Resources& res, const std::int32_t* node, const float* dist, std::int64_t n,
                        std::int64_t n_nodes, DeviceNodeTally* tally) {
  if (n < 0 || n >= INT_MAX)
    throw Error(ErrorCode::kInvalidArgument, "tally_rows_by_node: n = " + std::to_string(n) + ", expected 0 .. " +
                                                 std::to_string(INT_MAX - 1));
  detail::check_nodes("tally_rows_by_node", n_nodes);
  if (n == 0) return;
  if (node == nullptr || dist == nullptr || tally == nullptr)
    throw Error(ErrorCode::kInvalidArgument, "tally_rows_by_node: a device pointer is null");
  res.activate();
  const auto stream = static_cast<cudaStream_t>(res.stream());
  int key_bits = 1;
  while ((std::int64_t{1} << key_bits) <= n_nodes) ++key_bits;  // keys are in [0, n_nodes]
  const auto count = static_cast<std::size_t>(n);
  std::size_t sort_temp = 0;
  MEGATAX_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_temp, static_cast<const std::int32_t*>(nullptr), static_cast<std::int32_t*>(nullptr),
      static_cast<const std::int32_t*>(nullptr), static_cast<std::int32_t*>(nullptr), static_cast<int>(n), 0,
      key_bits, stream));
  std::size_t select_temp = 0;
  MEGATAX_CUDA_CHECK(cub::DeviceSelect::Flagged(nullptr, select_temp, static_cast<const std::int32_t*>(nullptr),
                                                static_cast<const unsigned char*>(nullptr),
                                                static_cast<std::int32_t*>(nullptr),
                                                static_cast<std::int64_t*>(nullptr), static_cast<int>(n), stream));
  detail::Carver measure(nullptr);
  for (int a = 0; a < 5; ++a) measure.take<std::int32_t>(count);
  measure.take<unsigned char>(count);
  measure.take<std::int64_t>(1);
  measure.take<unsigned char>(std::max(sort_temp, select_temp));
  detail::Carver cv(res.workspace(measure.bytes()));
  auto* keys = cv.take<std::int32_t>(count);
  auto* rows = cv.take<std::int32_t>(count);
  auto* sorted_keys = cv.take<std::int32_t>(count);
  auto* sorted_rows = cv.take<std::int32_t>(count);
  auto* starts = cv.take<std::int32_t>(count);
  auto* flags = cv.take<unsigned char>(count);
  auto* runs = cv.take<std::int64_t>(1);
  void* temp = cv.take<unsigned char>(std::max(sort_temp, select_temp));
  const auto n32 = static_cast<std::int32_t>(n), nodes32 = static_cast<std::int32_t>(n_nodes);
  const unsigned blocks = detail::blocks_for(n);
  detail::node_keys_kernel<<<blocks, detail::kThreads, 0, stream>>>(node, n32, nodes32, keys, rows);
  MEGATAX_CUDA_CHECK_LAUNCH("node_keys_kernel");
  // LSD radix sort: stable, so each node's rows stay in row order.
  MEGATAX_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, sort_temp, keys, sorted_keys, rows, sorted_rows,
                                                     static_cast<int>(n), 0, key_bits, stream));
  // The runs' first positions (keys and rows are free again: `keys` holds the positions).
  detail::run_starts_kernel<<<blocks, detail::kThreads, 0, stream>>>(sorted_keys, n32, keys, flags);
  MEGATAX_CUDA_CHECK_LAUNCH("run_starts_kernel");
  MEGATAX_CUDA_CHECK(cub::DeviceSelect::Flagged(temp, select_temp, keys, flags, starts, runs, static_cast<int>(n),
                                                stream));
  // A warp a run, up to 16 warps per SM at once (the runs' count stays on the device).
  const unsigned run_blocks = static_cast<unsigned>(
      std::min<std::int64_t>((n + detail::kThreads / 32 - 1) / (detail::kThreads / 32), std::int64_t{2} * res.sm_count()));
  detail::tally_runs_kernel<<<run_blocks, detail::kThreads, 0, stream>>>(sorted_keys, sorted_rows, dist, n32, nodes32,
                                                                         starts, runs, tally);
  MEGATAX_CUDA_CHECK_LAUNCH("tally_runs_kernel");
}

void take_node_tallies(Resources& res, DeviceNodeTally* tally, std::int64_t n_nodes, std::int32_t* nodes,
                       std::int64_t* counts, double* inertia, std::int64_t* touched) {
  detail::check_nodes("take_node_tallies", n_nodes);
  if (tally == nullptr || nodes == nullptr || counts == nullptr || inertia == nullptr || touched == nullptr)
    throw Error(ErrorCode::kInvalidArgument, "take_node_tallies: a device pointer is null");
  res.activate();
  const auto stream = static_cast<cudaStream_t>(res.stream());
  const auto count = static_cast<std::size_t>(n_nodes);
  std::size_t select_temp = 0;
  MEGATAX_CUDA_CHECK(cub::DeviceSelect::Flagged(nullptr, select_temp, static_cast<const std::int32_t*>(nullptr),
                                                static_cast<const unsigned char*>(nullptr),
                                                static_cast<std::int32_t*>(nullptr),
                                                static_cast<std::int64_t*>(nullptr), static_cast<int>(n_nodes),
                                                stream));
  detail::Carver measure(nullptr);
  measure.take<std::int32_t>(count);
  measure.take<unsigned char>(count);
  measure.take<unsigned char>(select_temp);
  detail::Carver cv(res.workspace(measure.bytes()));
  auto* ids = cv.take<std::int32_t>(count);
  auto* flags = cv.take<unsigned char>(count);
  void* temp = cv.take<unsigned char>(select_temp);
  detail::touched_flags_kernel<<<detail::blocks_for(n_nodes), detail::kThreads, 0, stream>>>(tally, n_nodes, ids,
                                                                                             flags);
  MEGATAX_CUDA_CHECK_LAUNCH("touched_flags_kernel");
  // Stable: the touched nodes come out ascending.
  MEGATAX_CUDA_CHECK(cub::DeviceSelect::Flagged(temp, select_temp, ids, flags, nodes, touched,
                                                static_cast<int>(n_nodes), stream));
  detail::take_tallies_kernel<<<detail::blocks_for(n_nodes), detail::kThreads, 0, stream>>>(tally, nodes, touched,
                                                                                            counts, inertia);
  MEGATAX_CUDA_CHECK_LAUNCH("take_tallies_kernel");
}

}  // namespace megatax::cuda
