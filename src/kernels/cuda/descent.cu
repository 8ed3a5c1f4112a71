// A level's descent on the device (megatax/cuda.h, order_rows_by_parent, count_sorted_parents
// and scatter_descent): rows grouped by their parent through a stable radix sort (CUB), the
// groups counted as runs of the sorted parents (CUB's run-length encoding), and the
// grouped assignment's results put back in row order. Both memory-bound and small beside the
// assignment they serve (a pass's batch of ~125K rows: ~2 MB sorted, ~3 MB scattered).
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <string>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_run_length_encode.cuh>

#include "kernels/cuda/check.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;

// key[i]: row i's parent when it has children at this level, else n_parents (sorted last);
// value[i] = i.
__global__ void __launch_bounds__(kThreads)
    parent_keys_kernel(const std::int32_t* parent, std::int64_t n, const std::int64_t* child_begin,
                       std::int32_t n_parents, std::int32_t* keys, std::int64_t* rows) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= n) return;
  const std::int32_t p = parent[i];
  const bool active = p >= 0 && p < n_parents && child_begin[p + 1] > child_begin[p];
  keys[i] = active ? p : n_parents;
  rows[i] = i;
}

__global__ void __launch_bounds__(kThreads)
    scatter_descent_kernel(const std::int64_t* order, const std::int32_t* sorted_parent,
                           const std::int32_t* labels, const float* distances, std::int64_t m,
                           std::int64_t n, const std::int64_t* child_begin, std::int32_t* node,
                           std::int32_t* child, float* dist) {
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (t >= n) return;
  const std::int64_t i = order[t];
  if (t < m) {
    const std::int32_t c = labels[t];
    child[i] = c;
    node[i] = static_cast<std::int32_t>(child_begin[sorted_parent[t]] + c);
    dist[i] = distances[t];
  } else {
    child[i] = -1;
    node[i] = -1;
    dist[i] = 0.f;
  }
}

unsigned blocks_for(std::int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace
}  // namespace detail

void order_rows_by_parent(Resources& res, const std::int32_t* parent, std::int64_t n,
                          const std::int64_t* child_begin, std::int64_t n_parents, std::int64_t* order,
                          std::int32_t* sorted_parent) {
  if (n < 0 || n >= INT_MAX)
    throw Error(ErrorCode::kInvalidArgument, "order_rows_by_parent: n = " + std::to_string(n) +
                                                 ", expected 0 .. " + std::to_string(INT_MAX - 1));
  if (n_parents < 1 || n_parents >= INT_MAX)
    throw Error(ErrorCode::kInvalidArgument, "order_rows_by_parent: n_parents = " + std::to_string(n_parents) +
                                                 ", expected 1 .. " + std::to_string(INT_MAX - 1));
  if (n == 0) return;
  if (parent == nullptr || child_begin == nullptr || order == nullptr || sorted_parent == nullptr)
    throw Error(ErrorCode::kInvalidArgument, "order_rows_by_parent: a device pointer is null");
  res.activate();
  const auto stream = static_cast<cudaStream_t>(res.stream());
  int key_bits = 1;
  while ((std::int64_t{1} << key_bits) <= n_parents) ++key_bits;  // keys are in [0, n_parents]
  std::size_t sort_temp = 0;
  MEGATAX_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_temp, static_cast<const std::int32_t*>(nullptr), static_cast<std::int32_t*>(nullptr),
      static_cast<const std::int64_t*>(nullptr), static_cast<std::int64_t*>(nullptr), static_cast<int>(n), 0,
      key_bits, stream));
  detail::Carver measure(nullptr);
  measure.take<std::int32_t>(static_cast<std::size_t>(n));
  measure.take<std::int64_t>(static_cast<std::size_t>(n));
  measure.take<unsigned char>(sort_temp);
  detail::Carver cv(res.workspace(measure.bytes()));
  auto* keys = cv.take<std::int32_t>(static_cast<std::size_t>(n));
  auto* rows = cv.take<std::int64_t>(static_cast<std::size_t>(n));
  void* temp = cv.take<unsigned char>(sort_temp);
  detail::parent_keys_kernel<<<detail::blocks_for(n), detail::kThreads, 0, stream>>>(
      parent, n, child_begin, static_cast<std::int32_t>(n_parents), keys, rows);
  MEGATAX_CUDA_CHECK_LAUNCH("parent_keys_kernel");
  // LSD radix sort: stable, so each parent's rows stay in row order.
  MEGATAX_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, sort_temp, keys, sorted_parent, rows, order,
                                                     static_cast<int>(n), 0, key_bits, stream));
}

void count_sorted_parents(Resources& res, const std::int32_t* sorted_parent, std::int64_t n, std::int32_t* parents,
                          std::int32_t* counts, std::int64_t* runs) {
  if (n < 0 || n >= INT_MAX)
    throw Error(ErrorCode::kInvalidArgument, "count_sorted_parents: n = " + std::to_string(n) +
                                                 ", expected 0 .. " + std::to_string(INT_MAX - 1));
  if (sorted_parent == nullptr || parents == nullptr || counts == nullptr || runs == nullptr)
    throw Error(ErrorCode::kInvalidArgument, "count_sorted_parents: a device pointer is null");
  res.activate();
  const auto stream = static_cast<cudaStream_t>(res.stream());
  if (n == 0) {
    MEGATAX_CUDA_CHECK(cudaMemsetAsync(runs, 0, sizeof(std::int64_t), stream));
    return;
  }
  std::size_t temp_bytes = 0;
  MEGATAX_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(nullptr, temp_bytes, sorted_parent, parents, counts, runs,
                                                        static_cast<int>(n), stream));
  MEGATAX_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(res.workspace(temp_bytes), temp_bytes, sorted_parent, parents,
                                                        counts, runs, static_cast<int>(n), stream));
}

void scatter_descent(Resources& res, const std::int64_t* order, const std::int32_t* sorted_parent,
                     const std::int32_t* labels, const float* distances, std::int64_t m, std::int64_t n,
                     const std::int64_t* child_begin, std::int32_t* node, std::int32_t* child, float* dist) {
  if (n < 0 || m < 0 || m > n)
    throw Error(ErrorCode::kInvalidArgument, "scatter_descent: expected 0 <= m <= n, got m = " +
                                                 std::to_string(m) + ", n = " + std::to_string(n));
  if (n == 0) return;
  if (order == nullptr || child_begin == nullptr || node == nullptr || child == nullptr || dist == nullptr ||
      (m > 0 && (sorted_parent == nullptr || labels == nullptr || distances == nullptr)))
    throw Error(ErrorCode::kInvalidArgument, "scatter_descent: a device pointer is null");
  res.activate();
  detail::scatter_descent_kernel<<<detail::blocks_for(n), detail::kThreads, 0,
                                   static_cast<cudaStream_t>(res.stream())>>>(
      order, sorted_parent, labels, distances, m, n, child_begin, node, child, dist);
  MEGATAX_CUDA_CHECK_LAUNCH("scatter_descent_kernel");
}

}  // namespace megatax::cuda
