// Per-cluster sums and counts without atomics on the sums (so no hot spot on a big cluster,
// and bit-identical results run to run):
//   1. keys: labels -> int32 keys (invalid labels flagged; with check_labels, checked before
//      anything is written, the one wait for the stream)
//   2. a stable radix sort of (key, row) pairs (CUB): rows grouped by cluster, in row order
//   3. offsets[c] = lower_bound(sorted keys, c); counts[c] += offsets[c+1] - offsets[c]
//   4. each cluster is cut into pieces of kPieceRows rows; one block per (piece, column slab)
//      sums its rows in order (f32 or f64 accumulators). A cluster of one piece adds its sum
//      straight into sums[c]; larger clusters write per-piece partials, and the block of the
//   5. cluster's last piece to finish (per column slab; a counter per cluster and slab) adds
//      them in piece order into sums[c] (the same bits whichever block that is).
// With `means` (Lloyd's update), the block that holds a cluster's whole sum (its one piece,
// or the last of its pieces) writes sum / count there instead of adding into sums.
// The work per block is bounded by kPieceRows rows, whatever the cluster sizes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/element.cuh"
#include "kernels/cuda/launch.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {
namespace {

constexpr int kPieceRows = 1024;       // rows summed by one block
constexpr int kSumThreads = 128;
constexpr int kColsPerThread = 8;      // 16 bytes of f16/bf16, 32 of f32
constexpr int kSlabCols = kSumThreads * kColsPerThread;

// Key k (sorted last, in no cluster's range) for a row that is summed nowhere: a bad label,
// or with skip_negative a negative one (not an error then).
template <class L>
__global__ void make_keys_kernel(const L* labels, std::int64_t n, std::int64_t k,
                                 bool skip_negative, int* keys, int* rows, int* bad) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const auto v = static_cast<std::int64_t>(labels[i]);
  const bool ok = v >= 0 && v < k;
  keys[i] = ok ? static_cast<int>(v) : static_cast<int>(k);
  rows[i] = static_cast<int>(i);
  if (!ok && !(skip_negative && v < 0))
    atomicMin(bad, static_cast<int>(i));  // the first bad row, for the message
}

// offsets[c] = first position of key c in the sorted keys (c in [0, k]); also the pieces per
// cluster (all, and those of clusters with more than one piece), and counts; zeroes the
// cluster's `done` counters (one a column slab).
__global__ void offsets_kernel(const int* sorted_keys, std::int64_t n, std::int64_t k,
                               int* offsets, int* pieces, int* multi_pieces,
                               std::int64_t* counts, int* done, int slabs) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c > k) return;
  if (c < k) {
    for (int j = 0; j < slabs; ++j) done[c * slabs + j] = 0;
  }
  auto lower = [&](std::int64_t key) {
    std::int64_t lo = 0, hi = n;
    while (lo < hi) {
      const std::int64_t mid = (lo + hi) / 2;
      if (sorted_keys[mid] < key) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  };
  const std::int64_t begin = lower(c);
  offsets[c] = static_cast<int>(begin);
  if (c == k) {
    pieces[c] = 0;
    multi_pieces[c] = 0;
    return;
  }
  const std::int64_t count = lower(c + 1) - begin;
  const int p = static_cast<int>((count + kPieceRows - 1) / kPieceRows);
  pieces[c] = p;
  multi_pieces[c] = p > 1 ? p : 0;
  if (counts != nullptr) counts[c] += count;
}

struct SumParams {
  const void* x = nullptr;
  std::int64_t ld = 0;
  std::int64_t d = 0;
  std::int64_t k = 0;
  bool aligned = false;
  const int* sorted_rows = nullptr;
  const int* offsets = nullptr;       // [k + 1]
  const int* piece_offsets = nullptr; // exclusive scan of pieces, [k + 1]
  const int* multi_offsets = nullptr; // exclusive scan of multi_pieces, [k + 1]
  void* sums = nullptr;               // [k][d]
  void* partials = nullptr;           // [multi pieces][d]
  int* done = nullptr;                // [k][slabs]: pieces finished (zeroed by offsets_kernel)
  // Means instead of sums (Acc = double): AccumulateArgs' means, keep, converted.
  float* means = nullptr;
  const std::uint8_t* keep = nullptr;
  void* converted = nullptr;
  DType converted_dtype = DType::kF32;
};

// Cluster c's mean from its whole float64 sum (this thread's columns from col0): means()'
// arithmetic (float(sum / count)), and its converted copy.
template <class Acc>
__device__ __forceinline__ void write_means(const SumParams& p, std::int64_t c, std::int64_t col0,
                                            const Acc (&sum)[kColsPerThread]) {
  if (p.keep != nullptr && p.keep[c] != 0) return;
  const auto count = static_cast<double>(p.offsets[c + 1] - p.offsets[c]);  // > 0: it has a piece
  float* cen = p.means + c * p.d;
#pragma unroll
  for (int e = 0; e < kColsPerThread; ++e) {
    const std::int64_t j = col0 + e;
    if (j >= p.d) continue;
    const auto v = static_cast<float>(static_cast<double>(sum[e]) / count);
    cen[j] = v;
    if (p.converted == nullptr) continue;
    switch (p.converted_dtype) {
      case DType::kF16: store_f32(static_cast<__half*>(p.converted) + c * p.d + j, v); break;
      case DType::kBF16: store_f32(static_cast<__nv_bfloat16*>(p.converted) + c * p.d + j, v); break;
      default: store_f32(static_cast<float*>(p.converted) + c * p.d + j, v); break;
    }
  }
}

// Block (item, slab): item = piece number over all clusters. The block of a many-piece
// cluster's last piece to finish also adds the cluster's partials into sums (step 5).
template <class T, class Acc>
__global__ void __launch_bounds__(kSumThreads) piece_sum_kernel(const SumParams p) {
  const int item = blockIdx.x;
  // The cluster of this item: the last c with piece_offsets[c] <= item.
  std::int64_t lo = 0, hi = p.k;  // piece_offsets[k] = total items
  if (item >= p.piece_offsets[p.k]) return;
  while (hi - lo > 1) {
    const std::int64_t mid = (lo + hi) / 2;
    if (p.piece_offsets[mid] <= item) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const std::int64_t c = lo;
  const int piece = item - p.piece_offsets[c];
  const int r_begin = p.offsets[c] + piece * kPieceRows;
  const int r_end = min(p.offsets[c + 1], r_begin + kPieceRows);
  const bool single = p.piece_offsets[c + 1] - p.piece_offsets[c] == 1;

  const std::int64_t col0 =
      static_cast<std::int64_t>(blockIdx.y) * kSlabCols + threadIdx.x * kColsPerThread;
  // Threads past d add nothing but stay for the block's barriers below.
  Acc acc[kColsPerThread];
#pragma unroll
  for (int e = 0; e < kColsPerThread; ++e) acc[e] = Acc(0);
  const T* x = static_cast<const T*>(p.x);
  const bool vec = p.aligned && col0 + kColsPerThread <= p.d;
  // Rows in order; 4 rows' loads in flight before they are added (in order).
  constexpr int kUnroll = 4;
  int r = col0 < p.d ? r_begin : r_end;
  for (; r + kUnroll <= r_end; r += kUnroll) {
    T v[kUnroll][kColsPerThread];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const T* row = x + static_cast<std::int64_t>(p.sorted_rows[r + u]) * p.ld + col0;
      if (vec) {
        constexpr int kVecs = kColsPerThread * sizeof(T) / 16;
#pragma unroll
        for (int w = 0; w < kVecs; ++w) {
          *reinterpret_cast<uint4*>(&v[u][w * 16 / sizeof(T)]) =
              *reinterpret_cast<const uint4*>(row + w * 16 / sizeof(T));
        }
      } else {
#pragma unroll
        for (int e = 0; e < kColsPerThread; ++e) v[u][e] = col0 + e < p.d ? row[e] : T(0.f);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int e = 0; e < kColsPerThread; ++e) acc[e] += static_cast<Acc>(to_f32(v[u][e]));
  }
  for (; r < r_end; ++r) {
    const T* row = x + static_cast<std::int64_t>(p.sorted_rows[r]) * p.ld + col0;
#pragma unroll
    for (int e = 0; e < kColsPerThread; ++e) {
      if (col0 + e < p.d) acc[e] += static_cast<Acc>(to_f32(row[e]));
    }
  }
  if (single && p.means != nullptr) {
    if (col0 < p.d) write_means(p, c, col0, acc);
    return;
  }
  Acc* out = single ? static_cast<Acc*>(p.sums) + c * p.d
                    : static_cast<Acc*>(p.partials) +
                          static_cast<std::int64_t>(p.multi_offsets[c] + piece) * p.d;
#pragma unroll
  for (int e = 0; e < kColsPerThread; ++e) {
    if (col0 + e < p.d) {
      if (single) {
        out[col0 + e] += acc[e];
      } else {
        out[col0 + e] = acc[e];
      }
    }
  }
  if (single) return;
  // Step 5: the last of the cluster's pieces (for this slab) to count itself done adds the
  // partials, in piece order, into sums[c]. (A separate kernel over the clusters did this,
  // reading every partial back from memory: 0.14 ms at N = 4M, K = 1K, D = 1024.)
  __shared__ int last;
  __threadfence();  // this block's partial is visible before its count
  __syncthreads();
  const int pieces = p.piece_offsets[c + 1] - p.piece_offsets[c];
  if (threadIdx.x == 0) last = atomicAdd(&p.done[c * gridDim.y + blockIdx.y], 1) == pieces - 1;
  __syncthreads();
  if (!last || col0 >= p.d) return;
  __threadfence();  // the other pieces' partials are read after their counts
  const Acc* partials =
      static_cast<const Acc*>(p.partials) + static_cast<std::int64_t>(p.multi_offsets[c]) * p.d;
  Acc total[kColsPerThread];
#pragma unroll
  for (int e = 0; e < kColsPerThread; ++e) total[e] = Acc(0);
  for (int i = 0; i < pieces; ++i) {
#pragma unroll
    for (int e = 0; e < kColsPerThread; ++e) {
      // __ldcg: from L2, where the other blocks' stores went (never a stale L1 line).
      if (col0 + e < p.d) total[e] += __ldcg(partials + static_cast<std::int64_t>(i) * p.d + col0 + e);
    }
  }
  if (p.means != nullptr) {
    write_means(p, c, col0, total);
    return;
  }
  Acc* sums = static_cast<Acc*>(p.sums) + c * p.d;
#pragma unroll
  for (int e = 0; e < kColsPerThread; ++e) {
    if (col0 + e < p.d) sums[col0 + e] += total[e];
  }
}

template <class T, class Acc>
void launch_sums(const SumParams& p, std::int64_t items, std::int64_t slabs,
                 cudaStream_t stream) {
  piece_sum_kernel<T, Acc><<<dim3(static_cast<unsigned>(items), static_cast<unsigned>(slabs)),
                             kSumThreads, 0, stream>>>(p);
  MEGATAX_CUDA_CHECK_LAUNCH("piece_sum_kernel");
}

template <class Acc>
void launch_sums_dtype(DType dtype, const SumParams& p, std::int64_t items, std::int64_t slabs,
                       cudaStream_t stream) {
  switch (dtype) {
    case DType::kF32: launch_sums<float, Acc>(p, items, slabs, stream); break;
    case DType::kF16: launch_sums<__half, Acc>(p, items, slabs, stream); break;
    default: launch_sums<__nv_bfloat16, Acc>(p, items, slabs, stream); break;
  }
}

}  // namespace
}  // namespace detail

void accumulate(Resources& res, const AccumulateArgs& args) {
  using namespace detail;
  validate_device_view(args.x, "accumulate: x");
  const std::int64_t n = args.x.rows, d = args.x.dim, k = args.k;
  if (k < 1 || k >= INT_MAX) {
    throw Error(ErrorCode::kInvalidArgument,
                "accumulate: k = " + std::to_string(k) + ", expected 1 <= k < 2^31");
  }
  if (n >= INT_MAX) {
    throw Error(ErrorCode::kInvalidArgument,
                "accumulate: n = " + std::to_string(n) + ", expected < 2^31 (split the batch)");
  }
  if (n == 0) return;
  const bool to_means = args.means != nullptr;
  if (args.labels == nullptr || (args.sums == nullptr && !to_means)) {
    throw Error(ErrorCode::kInvalidArgument, "accumulate: labels and sums (or means) must not be null");
  }
  if (to_means && (args.sum_type != SumType::kF64 ||
                   (args.converted != nullptr && args.converted_dtype != DType::kF32 &&
                    args.converted_dtype != DType::kF16 && args.converted_dtype != DType::kBF16))) {
    throw Error(ErrorCode::kInvalidArgument,
                "accumulate: means need float64 sums and a converted copy of f32, f16 or bf16");
  }
  if (k * d > (std::int64_t{1} << 40)) {
    throw Error(ErrorCode::kInvalidArgument, "accumulate: k * d too large");
  }
  res.activate();
  auto stream = static_cast<cudaStream_t>(res.stream());
  const std::size_t acc_size = args.sum_type == SumType::kF64 ? 8 : 4;

  int key_bits = 1;
  while ((std::int64_t{1} << key_bits) <= k) ++key_bits;  // keys are in [0, k]
  const std::int64_t max_items = n / kPieceRows + std::min(n, k) + 1;
  const std::int64_t slabs = (d + kSlabCols - 1) / kSlabCols;
  const std::int64_t max_multi = 2 * n / kPieceRows + 1;

  std::size_t sort_temp = 0, scan_temp = 0;
  MEGATAX_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_temp, static_cast<const int*>(nullptr), static_cast<int*>(nullptr),
      static_cast<const int*>(nullptr), static_cast<int*>(nullptr), static_cast<int>(n), 0,
      key_bits, stream));
  MEGATAX_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_temp,
                                                   static_cast<const int*>(nullptr),
                                                   static_cast<int*>(nullptr),
                                                   static_cast<int>(k + 1), stream));
  struct Ptrs {
    int *keys, *rows, *sorted_keys, *sorted_rows, *offsets, *pieces, *multi, *piece_off,
        *multi_off, *bad, *done;
    void *partials, *temp;
  } w{};
  auto carve = [&](Carver& cv) {
    w.keys = cv.take<int>(n);
    w.rows = cv.take<int>(n);
    w.sorted_keys = cv.take<int>(n);
    w.sorted_rows = cv.take<int>(n);
    w.offsets = cv.take<int>(k + 1);
    w.pieces = cv.take<int>(k + 1);
    w.multi = cv.take<int>(k + 1);
    w.piece_off = cv.take<int>(k + 1);
    w.multi_off = cv.take<int>(k + 1);
    w.bad = cv.take<int>(1);
    w.done = cv.take<int>(k * slabs);
    w.partials = cv.take<char>(static_cast<std::size_t>(max_multi) * d * acc_size);
    w.temp = cv.take<char>(std::max(sort_temp, scan_temp));
  };
  Carver measure(nullptr);
  carve(measure);
  Carver cv(res.workspace(measure.bytes()));
  carve(cv);

  // 1. keys, and the label check (before anything is written to sums / counts).
  const int no_bad = INT_MAX;
  if (args.check_labels) {
    MEGATAX_CUDA_CHECK(
        cudaMemcpyAsync(w.bad, &no_bad, sizeof(int), cudaMemcpyHostToDevice, stream));
  }
  const auto blocks_n = static_cast<unsigned>((n + 255) / 256);
  if (args.label_type == IndexType::kI64) {
    make_keys_kernel<<<blocks_n, 256, 0, stream>>>(static_cast<const std::int64_t*>(args.labels),
                                                   n, k, args.skip_negative, w.keys, w.rows,
                                                   w.bad);
  } else {
    make_keys_kernel<<<blocks_n, 256, 0, stream>>>(static_cast<const std::int32_t*>(args.labels),
                                                   n, k, args.skip_negative, w.keys, w.rows,
                                                   w.bad);
  }
  MEGATAX_CUDA_CHECK_LAUNCH("make_keys_kernel");
  int bad = INT_MAX;
  if (args.check_labels) {  // the wait: 0.01-0.07 ms at N = 4M on an H100 (the GPU idles)
    MEGATAX_CUDA_CHECK(cudaMemcpyAsync(&bad, w.bad, sizeof(int), cudaMemcpyDeviceToHost, stream));
    MEGATAX_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  if (bad != INT_MAX) {
    throw Error(ErrorCode::kInvalidArgument,
                "accumulate: label of row " + std::to_string(bad) + " is outside [0, " +
                    std::to_string(k) + ")" + (args.skip_negative ? " (and not negative)" : ""));
  }

  // 2. stable sort by key.
  MEGATAX_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(w.temp, sort_temp, w.keys, w.sorted_keys,
                                                     w.rows, w.sorted_rows, static_cast<int>(n),
                                                     0, key_bits, stream));
  // 3. offsets, pieces, counts; scans of the pieces.
  offsets_kernel<<<static_cast<unsigned>((k + 1 + 255) / 256), 256, 0, stream>>>(
      w.sorted_keys, n, k, w.offsets, w.pieces, w.multi, args.counts, w.done,
      static_cast<int>(slabs));
  MEGATAX_CUDA_CHECK_LAUNCH("offsets_kernel");
  MEGATAX_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(w.temp, scan_temp, w.pieces, w.piece_off,
                                                   static_cast<int>(k + 1), stream));
  MEGATAX_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(w.temp, scan_temp, w.multi, w.multi_off,
                                                   static_cast<int>(k + 1), stream));
  // 4-5. piece sums and the combination of many-piece clusters.
  SumParams p;
  p.x = args.x.data;
  p.ld = args.x.stride;
  p.d = d;
  p.k = k;
  p.aligned = vector_aligned(args.x);
  p.sorted_rows = w.sorted_rows;
  p.offsets = w.offsets;
  p.piece_offsets = w.piece_off;
  p.multi_offsets = w.multi_off;
  p.sums = args.sums;
  p.partials = w.partials;
  p.done = w.done;
  p.means = args.means;
  p.keep = args.keep;
  p.converted = args.converted;
  p.converted_dtype = args.converted_dtype;
  if (args.sum_type == SumType::kF64) {
    launch_sums_dtype<double>(args.x.dtype, p, max_items, slabs, stream);
  } else {
    launch_sums_dtype<float>(args.x.dtype, p, max_items, slabs, stream);
  }
}

}  // namespace megatax::cuda
