// kernels/cuda/check.h -- every CUDA runtime call goes through MEGATAX_CUDA_CHECK, which turns
// a failure into megatax::Error naming the call, the source line and CUDA's error string.
//
// Internal header (CUDA types allowed); not part of the public API.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace megatax::cuda::detail {

// Throws Error: kResourceExhausted for allocation failures, kFailedPrecondition when no usable
// device/driver, kInternal otherwise. The message reads
// "CUDA error in <call> (<file>:<line>): <cudaGetErrorString> [<cudaGetErrorName>]".
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);

inline void check(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess) throw_cuda_error(err, call, file, line);
}

// Carves one workspace allocation into 256-byte aligned pieces. Usage: first pass with a null
// base to measure (`bytes()`), then a second with the real base to hand out pointers.
class Carver {
 public:
  explicit Carver(void* base) : base_(static_cast<char*>(base)) {}
  template <class T>
  T* take(std::size_t count) {
    const std::size_t at = offset_;
    offset_ += (count * sizeof(T) + 255) / 256 * 256;
    return base_ == nullptr ? nullptr : reinterpret_cast<T*>(base_ + at);
  }
  std::size_t bytes() const { return offset_; }

 private:
  char* base_;
  std::size_t offset_ = 0;
};

}  // namespace megatax::cuda::detail

#define MEGATAX_CUDA_CHECK(call) ::megatax::cuda::detail::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: reports launch-configuration errors (and earlier asynchronous ones).
#define MEGATAX_CUDA_CHECK_LAUNCH(kernel_name) \
  ::megatax::cuda::detail::check(cudaGetLastError(), "launch of " kernel_name, __FILE__, __LINE__)
