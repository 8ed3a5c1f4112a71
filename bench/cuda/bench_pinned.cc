// bench_pinned: page-locking host memory for the GPU, ours (cuda::PinnedBuffer: fresh mapped
// pages with transparent huge pages asked for, faulted in on up to 16 threads, then
// cudaHostRegister) against cudaMallocHost, in the same run: allocation, host -> device copy
// rate out of it, release; and a pageable buffer's copy rate for scale.
//
//   bench_pinned [MiB]   (default 1280: a wide level's group of training samples)
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "megatax/cuda.h"
#include "megatax/error.h"

namespace mc = megatax::cuda;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// GB/s of one host -> device copy of `bytes` from `src`.
double copy_rate(mc::Resources& res, void* dev, const void* src, std::size_t bytes) {
  const auto t = Clock::now();
  mc::copy_to_device(res, dev, src, bytes);
  res.synchronize();
  return static_cast<double>(bytes) / since(t) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1280;
  const std::size_t bytes = mib << 20;
  try {
    mc::Resources res(0);
    mc::DeviceBuffer dev(bytes);
    std::printf("bench_pinned: %zu MiB on %s\n", mib, res.device_name().c_str());
    std::printf("%-28s %10s %12s %10s\n", "", "alloc s", "copy GB/s", "free s");
    double ours_alloc = 0, theirs_alloc = 0;
    for (int rep = 0; rep < 2; ++rep) {
      {
        auto t = Clock::now();
        void* p = nullptr;
        if (cudaMallocHost(&p, bytes) != cudaSuccess) throw megatax::Error(megatax::ErrorCode::kResourceExhausted, "cudaMallocHost");
        const double a = since(t);
        const double r = copy_rate(res, dev.data(), p, bytes);
        t = Clock::now();
        cudaFreeHost(p);
        std::printf("%-28s %10.3f %12.1f %10.3f\n", "cudaMallocHost", a, r, since(t));
        theirs_alloc += a;
      }
      {
        auto t = Clock::now();
        auto buf = std::make_unique<mc::PinnedBuffer>(bytes);
        const double a = since(t);
        const double r = copy_rate(res, dev.data(), buf->data(), bytes);
        t = Clock::now();
        buf.reset();
        std::printf("%-28s %10.3f %12.1f %10.3f\n", "ours (PinnedBuffer)", a, r, since(t));
        ours_alloc += a;
      }
    }
    std::vector<unsigned char> pageable(bytes, 1);
    std::printf("%-28s %10s %12.1f %10s\n", "pageable (std::vector)", "-", copy_rate(res, dev.data(), pageable.data(), bytes), "-");
    std::printf("bench_pinned: allocation, cudaMallocHost / ours: %.1fx\n", theirs_alloc / ours_alloc);
  } catch (const std::exception& e) {
    std::printf("bench_pinned: %s\n", e.what());
    return 1;
  }
  return 0;
}
