// The first row holding a NaN or an infinity, found on the device (megatax/cuda.h,
// find_non_finite_row): for rows that reach the device without the host reading them (a
// shard file's registered page cache copied over the bus), whose check the host's readers
// would otherwise do as they copy. A value is not finite when its exponent bits are all
// ones (f32 0x7f800000, f16 0x7c00, bf16 0x7f80). Memory-bound: reads the rows once (a
// 256 MiB batch in ~0.1 ms on an H200), writes nothing unless a value is bad.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/launch.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;

// Word: the element's bits (uint32 for f32, uint16 for f16 / bf16); `mask` its exponent.
template <class Word>
__device__ __forceinline__ bool not_finite(Word w, Word mask) {
  return (w & mask) == mask;
}

// Dense rows (ld == d), 16-byte aligned, a whole number of 16-byte pieces: each thread a
// piece at a time over a grid stride; a piece with a bad element makes its first bad
// element's row an atomicMin candidate.
template <class Word>
__global__ void __launch_bounds__(kThreads)
    first_bad_row_dense(const uint4* x, std::int64_t pieces, std::int64_t d, Word mask,
                        unsigned long long* first_row) {
  constexpr int kPer = 16 / sizeof(Word);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  for (std::int64_t p = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; p < pieces; p += stride) {
    const uint4 v = x[p];
    Word w[kPer];
    static_assert(sizeof(w) == sizeof(v));
    memcpy(w, &v, sizeof v);
    bool any = false;
#pragma unroll
    for (int e = 0; e < kPer; ++e) any |= not_finite(w[e], mask);
    if (!any) continue;
    for (int e = 0; e < kPer; ++e) {
      if (!not_finite(w[e], mask)) continue;
      atomicMin(first_row, static_cast<unsigned long long>((p * kPer + e) / d));
      break;
    }
  }
}

// Any layout: element by element over a grid stride (rows of ld elements, d of them used).
template <class Word>
__global__ void __launch_bounds__(kThreads)
    first_bad_row_strided(const Word* x, std::int64_t n, std::int64_t ld, std::int64_t d, Word mask,
                          unsigned long long* first_row) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n * d; i += stride) {
    const std::int64_t r = i / d;
    if (not_finite(x[r * ld + i % d], mask)) atomicMin(first_row, static_cast<unsigned long long>(r));
  }
}

template <class Word>
void launch(const MatrixView& x, Word mask, unsigned long long* first_row, int sms, cudaStream_t stream) {
  const std::int64_t elements = x.rows * x.dim;
  const auto bytes = static_cast<std::size_t>(elements) * sizeof(Word);
  const bool dense = x.stride == x.dim && reinterpret_cast<std::uintptr_t>(x.data) % 16 == 0 && bytes % 16 == 0;
  const std::int64_t work = dense ? static_cast<std::int64_t>(bytes / 16) : elements;
  // Enough blocks to fill the device a few times over, no more (a grid stride does the rest).
  const std::int64_t blocks = std::max<std::int64_t>(1, std::min<std::int64_t>((work + kThreads - 1) / kThreads,
                                                                                 static_cast<std::int64_t>(sms) * 8));
  if (dense) {
    first_bad_row_dense<Word><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        static_cast<const uint4*>(x.data), work, x.dim, mask, first_row);
    MEGATAX_CUDA_CHECK_LAUNCH("first_bad_row_dense");
  } else {
    first_bad_row_strided<Word><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        static_cast<const Word*>(x.data), x.rows, x.stride, x.dim, mask, first_row);
    MEGATAX_CUDA_CHECK_LAUNCH("first_bad_row_strided");
  }
}

}  // namespace
}  // namespace detail

void find_non_finite_row(Resources& res, const MatrixView& x, std::int64_t* first_row) {
  if (first_row == nullptr)
    throw_error(ErrorCode::kInvalidArgument, "find_non_finite_row: first_row must be device memory, not null");
  if (x.rows < 0 || x.dim < 1 || x.stride < x.dim || (x.rows > 0 && x.data == nullptr))
    throw_error(ErrorCode::kInvalidArgument, "find_non_finite_row: rows " + std::to_string(x.rows) + ", dim " +
                                                 std::to_string(x.dim) + ", stride " + std::to_string(x.stride) +
                                                 (x.data == nullptr ? ", no data" : ""));
  res.activate();
  auto stream = static_cast<cudaStream_t>(res.stream());
  // All bits set: UINT64_MAX, which reads as -1 in an int64 when no row is bad.
  MEGATAX_CUDA_CHECK(cudaMemsetAsync(first_row, 0xff, sizeof(std::int64_t), stream));
  if (x.rows == 0) return;
  auto* out = reinterpret_cast<unsigned long long*>(first_row);
  switch (x.dtype) {
    case DType::kF32:
      detail::launch<std::uint32_t>(x, 0x7f800000u, out, res.sm_count(), stream);
      return;
    case DType::kF16:
      detail::launch<std::uint16_t>(x, std::uint16_t{0x7c00}, out, res.sm_count(), stream);
      return;
    case DType::kBF16:
      detail::launch<std::uint16_t>(x, std::uint16_t{0x7f80}, out, res.sm_count(), stream);
      return;
    default:
      throw_error(ErrorCode::kInvalidArgument,
                  std::string("find_non_finite_row: dtype ") + detail::dtype_label(x.dtype) + " (f32, f16 or bf16)");
  }
}

}  // namespace megatax::cuda
