// The CUDA backend's resources handle, device buffers and copies (host code only).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "kernels/cuda/check.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::cuda {
namespace detail {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  ErrorCode code = ErrorCode::kInternal;
  switch (err) {
    case cudaErrorMemoryAllocation: code = ErrorCode::kResourceExhausted; break;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorNoKernelImageForDevice: code = ErrorCode::kFailedPrecondition; break;
    default: break;
  }
  std::string where = file;
  const auto slash = where.find_last_of('/');
  if (slash != std::string::npos) where = where.substr(slash + 1);
  throw Error(code, std::string("CUDA error in ") + call + " (" + where + ":" +
                        std::to_string(line) + "): " + cudaGetErrorString(err) + " [" +
                        cudaGetErrorName(err) + "]");
}

}  // namespace detail

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" status
    return 0;
  }
  return n;
}

struct Resources::Impl {
  int device = 0;
  cudaStream_t stream = nullptr;
  cudaDeviceProp prop{};
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;

  ~Impl() {
    // Destructors never throw: errors here are dropped on purpose (the process may be
    // tearing down after a CUDA failure that was already reported).
    if (stream != nullptr || workspace != nullptr) (void)cudaSetDevice(device);
    if (stream != nullptr) (void)cudaStreamSynchronize(stream);
    if (workspace != nullptr) (void)cudaFree(workspace);
    if (stream != nullptr) (void)cudaStreamDestroy(stream);
  }
};

Resources::Resources(int device) : impl_(std::make_unique<Impl>()) {
  const int count = device_count();
  if (device < 0 || device >= count) {
    throw Error(ErrorCode::kFailedPrecondition,
                "CUDA device " + std::to_string(device) + " does not exist (" +
                    std::to_string(count) + " visible)");
  }
  impl_->device = device;
  MEGATAX_CUDA_CHECK(cudaSetDevice(device));
  MEGATAX_CUDA_CHECK(cudaGetDeviceProperties(&impl_->prop, device));
  MEGATAX_CUDA_CHECK(cudaStreamCreateWithFlags(&impl_->stream, cudaStreamNonBlocking));
}

Resources::~Resources() = default;
Resources::Resources(Resources&&) noexcept = default;
Resources& Resources::operator=(Resources&&) noexcept = default;

int Resources::device() const noexcept { return impl_->device; }
int Resources::sm_count() const noexcept { return impl_->prop.multiProcessorCount; }
std::size_t Resources::max_smem_per_block() const noexcept {
  return impl_->prop.sharedMemPerBlockOptin;
}
std::pair<std::size_t, std::size_t> Resources::memory_info() const {
  activate();
  std::size_t free_bytes = 0, total_bytes = 0;
  MEGATAX_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return {free_bytes, total_bytes};
}
std::size_t Resources::l2_cache_bytes() const noexcept {
  return static_cast<std::size_t>(impl_->prop.l2CacheSize);
}
std::string Resources::device_name() const { return impl_->prop.name; }
void* Resources::stream() const noexcept { return impl_->stream; }

void Resources::activate() const { MEGATAX_CUDA_CHECK(cudaSetDevice(impl_->device)); }

void Resources::synchronize() const {
  activate();
  MEGATAX_CUDA_CHECK(cudaStreamSynchronize(impl_->stream));
}

void* Resources::workspace(std::size_t bytes) {
  if (bytes <= impl_->workspace_bytes) return impl_->workspace;
  activate();
  if (impl_->workspace != nullptr) {
    MEGATAX_CUDA_CHECK(cudaStreamSynchronize(impl_->stream));
    MEGATAX_CUDA_CHECK(cudaFree(impl_->workspace));
    impl_->workspace = nullptr;
    impl_->workspace_bytes = 0;
  }
  // Grow by at least 1.5x so that a sequence of slightly larger calls does not reallocate
  // every time.
  const std::size_t want = std::max(bytes, impl_->workspace_bytes + impl_->workspace_bytes / 2);
  MEGATAX_CUDA_CHECK(cudaMalloc(&impl_->workspace, want));
  impl_->workspace_bytes = want;
  return impl_->workspace;
}

namespace detail {

void* DeviceMemory::allocate(std::size_t bytes) {
  void* p = nullptr;
  MEGATAX_CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}
void DeviceMemory::release(void* p, std::size_t) noexcept { (void)cudaFree(p); }

namespace {

// Below this, cudaMallocHost (a map and a registration per buffer would cost more than they
// save).
constexpr std::size_t kMappedPinnedBytes = std::size_t{4} << 20;

// Writes one byte of every 4 KiB page of [p, p + bytes) on up to 16 threads (64 MiB or more
// each): the kernel zeroes each page as it faults, one thread at a time otherwise. (The CPU
// library's populate_pages, core/memory.h, does this too, but megatax_cuda does not link it.)
void touch_pages(unsigned char* p, std::size_t bytes) {
  constexpr std::size_t kPage = 4096, kPerThread = std::size_t{64} << 20;
  const std::size_t hw = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t threads = std::min({hw, std::size_t{16}, (bytes + kPerThread - 1) / kPerThread});
  auto touch = [p, bytes, threads](std::size_t t) {
    const std::size_t b = bytes * t / threads / kPage * kPage, e = bytes * (t + 1) / threads;
    for (std::size_t i = b; i < e; i += kPage) p[i] = 0;
  };
  std::vector<std::thread> pool;
  std::size_t started = 1;
  try {
    for (; started < threads; ++started) pool.emplace_back(touch, started);
  } catch (...) {  // no more threads: this one does the rest
  }
  for (std::size_t t = started; t < threads; ++t) touch(t);
  touch(0);
  for (auto& th : pool) th.join();
}

}  // namespace

void* PinnedMemory::allocate(std::size_t bytes) {
  void* p = nullptr;
#if defined(__linux__)
  if (bytes >= kMappedPinnedBytes) {
    p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      throw Error(ErrorCode::kResourceExhausted,
                  "page-locked host buffer: mmap of " + std::to_string(bytes) + " bytes failed");
    (void)madvise(p, bytes, MADV_HUGEPAGE);  // a hint: ignored where THP is off
    try {
      touch_pages(static_cast<unsigned char*>(p), bytes);
      MEGATAX_CUDA_CHECK(cudaHostRegister(p, bytes, cudaHostRegisterPortable | cudaHostRegisterMapped));
    } catch (...) {
      munmap(p, bytes);
      throw;
    }
    return p;
  }
#endif
  MEGATAX_CUDA_CHECK(cudaMallocHost(&p, bytes));
  return p;
}

void PinnedMemory::release(void* p, std::size_t bytes) noexcept {
#if defined(__linux__)
  if (bytes >= kMappedPinnedBytes) {
    (void)cudaHostUnregister(p);
    munmap(p, bytes);
    return;
  }
#endif
  (void)cudaFreeHost(p);
}

}  // namespace detail

void copy_device_to_device(Resources& res, void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  res.activate();
  MEGATAX_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice,
                                     static_cast<cudaStream_t>(res.stream())));
}

void copy_to_device(Resources& res, void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  res.activate();
  MEGATAX_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice,
                                     static_cast<cudaStream_t>(res.stream())));
}

void copy_to_host(Resources& res, void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  res.activate();
  auto stream = static_cast<cudaStream_t>(res.stream());
  MEGATAX_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
  MEGATAX_CUDA_CHECK(cudaStreamSynchronize(stream));
}

const void* device_address(const void* pinned) {
  void* d = nullptr;
  MEGATAX_CUDA_CHECK(cudaHostGetDevicePointer(&d, const_cast<void*>(pinned), 0));
  return d;
}

HostRegistration::HostRegistration(const void* data, std::size_t bytes, bool read_only) {
  if (bytes == 0) return;
#if defined(__linux__)
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
#else
  const std::uintptr_t page = 4096;
#endif
  const auto first = reinterpret_cast<std::uintptr_t>(data) / page * page;
  const auto end = (reinterpret_cast<std::uintptr_t>(data) + bytes + page - 1) / page * page;
  unsigned flags = cudaHostRegisterPortable | cudaHostRegisterMapped;
  if (read_only) {
    int device = 0, supported = 0;
    MEGATAX_CUDA_CHECK(cudaGetDevice(&device));
    MEGATAX_CUDA_CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrHostRegisterReadOnlySupported, device));
    if (supported == 0)
      throw Error(ErrorCode::kUnimplemented, "cuda: device " + std::to_string(device) +
                                                 " cannot register read-only host memory (a file's mapping)");
    flags |= cudaHostRegisterReadOnly;
  }
  MEGATAX_CUDA_CHECK(cudaHostRegister(reinterpret_cast<void*>(first), end - first, flags));
  base_ = reinterpret_cast<void*>(first);
  span_ = end - first;
}

HostRegistration::~HostRegistration() {
  if (base_ != nullptr) (void)cudaHostUnregister(base_);
}

HostRegistration& HostRegistration::operator=(HostRegistration&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) (void)cudaHostUnregister(base_);
    base_ = std::exchange(other.base_, nullptr);
    span_ = std::exchange(other.span_, 0);
  }
  return *this;
}

void copy_to_host_async(Resources& res, void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  res.activate();
  MEGATAX_CUDA_CHECK(
      cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(res.stream())));
}

Event::Event() = default;

Event::~Event() {
  if (event_ != nullptr) (void)cudaEventDestroy(static_cast<cudaEvent_t>(event_));
}

Event::Event(Event&& other) noexcept
    : event_(std::exchange(other.event_, nullptr)), device_(other.device_) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (event_ != nullptr) (void)cudaEventDestroy(static_cast<cudaEvent_t>(event_));
    event_ = std::exchange(other.event_, nullptr);
    device_ = other.device_;
  }
  return *this;
}

void Event::record(Resources& res) {
  res.activate();
  if (event_ != nullptr && device_ != res.device()) {
    (void)cudaEventDestroy(static_cast<cudaEvent_t>(event_));
    event_ = nullptr;
  }
  if (event_ == nullptr) {
    cudaEvent_t e = nullptr;
    MEGATAX_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    event_ = e;
    device_ = res.device();
  }
  MEGATAX_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), static_cast<cudaStream_t>(res.stream())));
}

void Event::synchronize() const {
  if (event_ == nullptr) return;
  MEGATAX_CUDA_CHECK(cudaSetDevice(device_));  // (any thread: its own current device)
  MEGATAX_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
}

void Event::enqueue_wait(Resources& res) const {
  if (event_ == nullptr) return;
  res.activate();
  MEGATAX_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(res.stream()), static_cast<cudaEvent_t>(event_), 0));
}

void upload_rows_staged(Resources& res, PinnedBuffer& staging, void* dst, std::int64_t rows, std::size_t row_bytes,
                        std::size_t half_bytes, const RowFill& fill) {
  if (rows <= 0 || row_bytes == 0) return;
  const std::int64_t chunk_rows = std::max<std::int64_t>(1, static_cast<std::int64_t>(half_bytes / row_bytes));
  const std::size_t half = static_cast<std::size_t>(std::min(rows, chunk_rows)) * row_bytes;
  staging.reserve(2 * half);
  int which = 0;
  for (std::int64_t r0 = 0; r0 < rows; r0 += chunk_rows, which ^= 1) {
    const std::int64_t r1 = std::min(rows, r0 + chunk_rows);
    auto* stage = static_cast<unsigned char*>(staging.data()) + static_cast<std::size_t>(which) * half;
    fill(r0, r1, stage);
    // The other half's copy (queued last round) and this half's previous one (two rounds
    // ago) are done past this wait; then this half's copy is queued.
    res.synchronize();
    copy_to_device(res, static_cast<unsigned char*>(dst) + static_cast<std::size_t>(r0) * row_bytes, stage,
                   static_cast<std::size_t>(r1 - r0) * row_bytes);
  }
  res.synchronize();
}

void fill_zero(Resources& res, void* dst, std::size_t bytes) {
  if (bytes == 0) return;
  res.activate();
  MEGATAX_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, static_cast<cudaStream_t>(res.stream())));
}

}  // namespace megatax::cuda
