// Row gathers on the device (megatax/cuda.h, gather_rows and gather_rows_at): one warp per row, 16-byte pieces
// when the row size and both pointers allow it, else bytes. Memory-bound (reads and writes
// n * row_bytes).
#include <cuda_runtime.h>

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

// One warp per row; 16-byte pieces when the row's address and size allow, else bytes.
__global__ void __launch_bounds__(kThreads)
    gather_rows_at_kernel(const void* const* rows, std::size_t row_bytes, std::int64_t n, unsigned char* dst) {
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (t >= n) return;
  const auto* from = static_cast<const unsigned char*>(rows[t]);
  unsigned char* to = dst + static_cast<std::size_t>(t) * row_bytes;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (row_bytes % 16 == 0 && reinterpret_cast<std::uintptr_t>(from) % 16 == 0 &&
      reinterpret_cast<std::uintptr_t>(to) % 16 == 0) {
    const auto* f = reinterpret_cast<const uint4*>(from);
    auto* o = reinterpret_cast<uint4*>(to);
    for (std::size_t j = lane; j < row_bytes / 16; j += 32) o[j] = f[j];
  } else {
    for (std::size_t j = lane; j < row_bytes; j += 32) to[j] = from[j];
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

void gather_rows_at(Resources& res, const void* const* rows, std::size_t row_bytes, std::int64_t n, void* dst) {
  if (n < 0) throw Error(ErrorCode::kInvalidArgument, "gather_rows_at: n = " + std::to_string(n) + " < 0");
  if (n == 0 || row_bytes == 0) return;
  if (rows == nullptr || dst == nullptr) throw Error(ErrorCode::kInvalidArgument, "gather_rows_at: a device pointer is null");
  res.activate();
  const auto blocks = static_cast<unsigned>((n + detail::kRowsPerBlock - 1) / detail::kRowsPerBlock);
  detail::gather_rows_at_kernel<<<blocks, detail::kThreads, 0, static_cast<cudaStream_t>(res.stream())>>>(
      rows, row_bytes, n, static_cast<unsigned char*>(dst));
  MEGATAX_CUDA_CHECK_LAUNCH("gather_rows_at_kernel");
}

}  // namespace megatax::cuda
