// Row gathers on the device (megatax/cuda.h, gather_rows and gather_rows_at): one warp per row, 16-byte pieces
// when the row size and both pointers allow it, else bytes. Memory-bound (reads and writes
// n * row_bytes); gather_rows_at may read over the bus (rows in page-locked host memory).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/cuda/check.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;

template <class Piece>
__global__ void __launch_bounds__(kThreads)
    gather_rows_kernel(const Piece* src, std::int64_t pieces_per_row, const std::int64_t* idx, std::int64_t n,
                       Piece* dst) {
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (t >= n) return;
  const Piece* from = src + idx[t] * pieces_per_row;
  Piece* to = dst + t * pieces_per_row;
  for (std::int64_t j = threadIdx.x % 32; j < pieces_per_row; j += 32) to[j] = from[j];
}

// One warp per row at a time, rows taken in a grid stride (a grid of any size covers them
// all); 16-byte pieces when the row's address and size allow, else bytes. A lane loads up to
// kPiecesInFlight pieces before it stores any (a warp has 2 KiB in flight: rows read over
// the bus wait microseconds for each load, so a few warps must keep many loads out).
constexpr int kPiecesInFlight = 4;
constexpr int kWideThreads = 1024;  // a block's threads when kept to a few SMs

__global__ void __launch_bounds__(kWideThreads)
    gather_rows_at_kernel(const void* const* rows, std::size_t row_bytes, std::int64_t n, unsigned char* dst) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * (blockDim.x / 32);
  for (std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; t < n;
       t += warps) {
    const auto* from = static_cast<const unsigned char*>(rows[t]);
    unsigned char* to = dst + static_cast<std::size_t>(t) * row_bytes;
    if (row_bytes % 16 == 0 && reinterpret_cast<std::uintptr_t>(from) % 16 == 0 &&
        reinterpret_cast<std::uintptr_t>(to) % 16 == 0) {
      const auto* f = reinterpret_cast<const uint4*>(from);
      auto* o = reinterpret_cast<uint4*>(to);
      const std::size_t pieces = row_bytes / 16;
      for (std::size_t j0 = 0; j0 < pieces; j0 += 32 * kPiecesInFlight) {
        uint4 v[kPiecesInFlight];
#pragma unroll
        for (int u = 0; u < kPiecesInFlight; ++u) {
          const std::size_t j = j0 + static_cast<std::size_t>(u * 32 + lane);
          if (j < pieces) v[u] = f[j];
        }
#pragma unroll
        for (int u = 0; u < kPiecesInFlight; ++u) {
          const std::size_t j = j0 + static_cast<std::size_t>(u * 32 + lane);
          if (j < pieces) o[j] = v[u];
        }
      }
    } else {
      for (std::size_t j = lane; j < row_bytes; j += 32) to[j] = from[j];
    }
  }
}

}  // namespace
}  // namespace detail

void gather_rows(Resources& res, const void* src, std::size_t row_bytes, const std::int64_t* idx, std::int64_t n,
                 void* dst) {
  if (n < 0) throw Error(ErrorCode::kInvalidArgument, "gather_rows: n = " + std::to_string(n) + " < 0");
  if (n == 0 || row_bytes == 0) return;
  if (src == nullptr || idx == nullptr || dst == nullptr)
    throw Error(ErrorCode::kInvalidArgument, "gather_rows: a device pointer is null");
  res.activate();
  const auto stream = static_cast<cudaStream_t>(res.stream());
  const auto blocks = static_cast<unsigned>((n + detail::kRowsPerBlock - 1) / detail::kRowsPerBlock);
  const bool vec = row_bytes % 16 == 0 && reinterpret_cast<std::uintptr_t>(src) % 16 == 0 &&
                   reinterpret_cast<std::uintptr_t>(dst) % 16 == 0;
  if (vec) {
    detail::gather_rows_kernel<uint4><<<blocks, detail::kThreads, 0, stream>>>(
        static_cast<const uint4*>(src), static_cast<std::int64_t>(row_bytes / 16), idx, n, static_cast<uint4*>(dst));
  } else {
    detail::gather_rows_kernel<unsigned char><<<blocks, detail::kThreads, 0, stream>>>(
        static_cast<const unsigned char*>(src), static_cast<std::int64_t>(row_bytes), idx, n,
        static_cast<unsigned char*>(dst));
  }
  MEGATAX_CUDA_CHECK_LAUNCH("gather_rows_kernel");
}

void gather_rows_at(Resources& res, const void* const* rows, std::size_t row_bytes, std::int64_t n, void* dst,
                    int max_sms) {
  if (n < 0) throw Error(ErrorCode::kInvalidArgument, "gather_rows_at: n = " + std::to_string(n) + " < 0");
  if (max_sms < 0) throw Error(ErrorCode::kInvalidArgument, "gather_rows_at: max_sms = " + std::to_string(max_sms) + " < 0");
  if (n == 0 || row_bytes == 0) return;
  if (rows == nullptr || dst == nullptr) throw Error(ErrorCode::kInvalidArgument, "gather_rows_at: a device pointer is null");
  res.activate();
  // The whole device: a block per 8 rows (a warp a row); kept to max_sms: one block of 32
  // warps on each (a warp a row at a time, the rows in a grid stride).
  const int threads = max_sms == 0 ? detail::kThreads : detail::kWideThreads;
  const std::int64_t warps = threads / 32;
  std::int64_t blocks = (n + warps - 1) / warps;
  if (max_sms > 0) blocks = std::min<std::int64_t>(blocks, max_sms);
  detail::gather_rows_at_kernel<<<static_cast<unsigned>(blocks), threads, 0, static_cast<cudaStream_t>(res.stream())>>>(
      rows, row_bytes, n, static_cast<unsigned char*>(dst));
  MEGATAX_CUDA_CHECK_LAUNCH("gather_rows_at_kernel");
}

}  // namespace megatax::cuda
