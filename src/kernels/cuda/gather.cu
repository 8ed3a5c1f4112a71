// Row gathers on the device (megatax/cuda.h, gather_rows and gather_rows_at): one warp per row, 16-byte pieces
// when the row size and both pointers allow it, else bytes. Memory-bound (reads and writes
// n * row_bytes); gather_rows_at may read over the bus (rows in page-locked host memory), as
// copy_by_sms does for one contiguous range.
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

// copy_by_sms: a grid of `sms` blocks, the range's 16-byte pieces taken in a grid stride, a
// thread loading kCopyInFlight of them before it stores any (a block has 32 KiB out: reads
// over the bus wait microseconds each). Few registers and no shared memory: the blocks of
// kernels running beside it still fit on the SMs it holds.
constexpr int kCopyThreads = 256;
constexpr int kCopyInFlight = 8;

__global__ void __launch_bounds__(kCopyThreads)
    copy_pieces_kernel(const uint4* __restrict__ src, std::size_t pieces, uint4* __restrict__ dst) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * kCopyThreads;
  for (std::size_t p0 = static_cast<std::size_t>(blockIdx.x) * kCopyThreads + threadIdx.x; p0 < pieces;
       p0 += stride * kCopyInFlight) {
    uint4 v[kCopyInFlight];
#pragma unroll
    for (int u = 0; u < kCopyInFlight; ++u) {
      const std::size_t p = p0 + u * stride;
      if (p < pieces) v[u] = src[p];
    }
#pragma unroll
    for (int u = 0; u < kCopyInFlight; ++u) {
      const std::size_t p = p0 + u * stride;
      if (p < pieces) dst[p] = v[u];
    }
  }
}

__global__ void __launch_bounds__(kCopyThreads)
    copy_bytes_kernel(const unsigned char* __restrict__ src, std::size_t bytes, unsigned char* __restrict__ dst) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * kCopyThreads;
  for (std::size_t b = static_cast<std::size_t>(blockIdx.x) * kCopyThreads + threadIdx.x; b < bytes; b += stride)
    dst[b] = src[b];
}

}  // namespace
}  // namespace detail

void copy_by_sms(Resources& res, void* dst, const void* src, std::size_t bytes, int sms) {
  if (sms < 1) throw Error(ErrorCode::kInvalidArgument, "copy_by_sms: sms = " + std::to_string(sms) + " < 1");
  if (bytes == 0) return;
  if (src == nullptr || dst == nullptr) throw Error(ErrorCode::kInvalidArgument, "copy_by_sms: a pointer is null");
  res.activate();
  const auto stream = static_cast<cudaStream_t>(res.stream());
  const bool vec = reinterpret_cast<std::uintptr_t>(src) % 16 == 0 && reinterpret_cast<std::uintptr_t>(dst) % 16 == 0;
  const std::size_t pieces = vec ? bytes / 16 : 0;
  if (pieces > 0) {
    const auto blocks = static_cast<unsigned>(
        std::min<std::size_t>(static_cast<std::size_t>(sms), (pieces + detail::kCopyThreads - 1) / detail::kCopyThreads));
    detail::copy_pieces_kernel<<<blocks, detail::kCopyThreads, 0, stream>>>(static_cast<const uint4*>(src), pieces,
                                                                            static_cast<uint4*>(dst));
    MEGATAX_CUDA_CHECK_LAUNCH("copy_pieces_kernel");
  }
  const std::size_t tail = bytes - pieces * 16;  // everything without 16-byte pieces, or their remainder
  if (tail > 0) {
    const auto blocks = static_cast<unsigned>(
        std::min<std::size_t>(static_cast<std::size_t>(sms), (tail + detail::kCopyThreads - 1) / detail::kCopyThreads));
    detail::copy_bytes_kernel<<<blocks, detail::kCopyThreads, 0, stream>>>(
        static_cast<const unsigned char*>(src) + pieces * 16, tail, static_cast<unsigned char*>(dst) + pieces * 16);
    MEGATAX_CUDA_CHECK_LAUNCH("copy_bytes_kernel");
  }
}

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
