// bench_pinned: page-locking host memory for the GPU, ours (cuda::PinnedBuffer: fresh mapped
// pages with transparent huge pages asked for, faulted in on up to 16 threads, then
// cudaHostRegister) against cudaMallocHost, in the same run: allocation, host -> device copy
// rate out of it, release; and a pageable buffer's copy rate for scale. Then rows gathered
// out of page-locked host memory by a kernel reading them over the bus (cuda::gather_rows_at
// at device_address()es: how a fit's training takes samples kept on the host), 2 KiB rows in
// random order, against the one-copy rate above; that gather beside an f16 assign on
// another stream (a training's other lane), on the whole device or kept to a few SMs; and
// a file's read-only mapping registered where it lies in the page cache
// (cudaHostRegisterReadOnly), the same gather out of it.
//
//   bench_pinned [MiB [COUNT [EACH_MiB]]]   (default 1280: a wide level's group of training
//   samples; then COUNT (40) buffers of EACH_MiB (256) kept at once)
#include <cuda_runtime_api.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
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
    // Many buffers kept at once (a fit keeping every batch on the host): does the cost of
    // one grow with what is already page-locked?
    {
      const int count = argc > 2 ? std::atoi(argv[2]) : 40;
      const std::size_t each = (argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 256) << 20;
      std::vector<mc::PinnedBuffer> kept;
      std::vector<double> secs;
      const auto all = Clock::now();
      for (int i = 0; i < count; ++i) {
        const auto t = Clock::now();
        kept.emplace_back(each);
        secs.push_back(since(t));
      }
      const double total = since(all);
      std::printf("bench_pinned: %d buffers of %zu MiB kept: %.3f s (%.1f GB/s); first %.4f, middle %.4f, last %.4f s\n",
                  count, each >> 20, total, static_cast<double>(each) * count / total / 1e9, secs.front(),
                  secs[secs.size() / 2], secs.back());
    }
    // Rows gathered over the bus: 2 KiB rows (1024 x 16 bits) in random order, three rounds.
    {
      constexpr std::size_t kRow = 2048;
      const std::size_t rows = bytes / kRow;
      mc::PinnedBuffer host(rows * kRow);
      std::memset(host.data(), 3, rows * kRow);
      const auto* base = static_cast<const unsigned char*>(mc::device_address(host.data()));
      std::vector<std::size_t> order(rows);
      std::iota(order.begin(), order.end(), std::size_t{0});
      std::shuffle(order.begin(), order.end(), std::mt19937_64(1));
      std::vector<const void*> at(rows);
      for (std::size_t i = 0; i < rows; ++i) at[i] = base + order[i] * kRow;
      mc::DeviceBuffer at_dev(rows * sizeof(void*));
      mc::copy_to_device(res, at_dev.data(), at.data(), rows * sizeof(void*));
      res.synchronize();
      const double one_copy = copy_rate(res, dev.data(), host.data(), rows * kRow);
      // Seconds of `rounds` gathers of every row on `on` (max_sms: gather_rows_at's).
      auto gather = [&](mc::Resources& on, int max_sms, int rounds) {
        const auto t = Clock::now();
        for (int r = 0; r < rounds; ++r)
          mc::gather_rows_at(on, at_dev.as<const void*>(), kRow, static_cast<std::int64_t>(rows), dev.data(), max_sms);
        on.synchronize();
        return since(t);
      };
      gather(res, 0, 1);  // (warm-up)
      for (int rep = 0; rep < 3; ++rep) {
        const double rate = static_cast<double>(rows * kRow) / gather(res, 0, 1) / 1e9;
        std::printf("bench_pinned: %zu rows of 2 KiB gathered over the bus in random order: %.1f GB/s (one copy "
                    "%.1f GB/s: %.2fx)\n",
                    rows, rate, one_copy, rate / one_copy);
      }
      // The same gather beside a compute-bound kernel on another stream (a training's two
      // lanes: one gathers its batch's samples while the other's kernels run): an f16 assign
      // of 262,144 x 1024 rows to 1024 centroids, looped for about as long as the gathers
      // take alone. The gather on the whole device (max_sms 0) or kept to a few SMs.
      mc::Resources other(0);
      constexpr std::int64_t kN = 262144, kK = 1024, kD = 1024;
      std::vector<std::uint16_t> h(static_cast<std::size_t>(kN * kD));
      std::mt19937_64 rng(7);
      for (auto& v : h) v = static_cast<std::uint16_t>(0x3000 + rng() % 0x0c00);  // f16 in [0.125, 1)
      mc::DeviceBuffer x(h.size() * 2), c(static_cast<std::size_t>(kK * kD) * 2), labels(static_cast<std::size_t>(kN) * 8);
      mc::copy_to_device(other, x.data(), h.data(), h.size() * 2);
      mc::copy_to_device(other, c.data(), h.data(), static_cast<std::size_t>(kK * kD) * 2);
      mc::AssignArgs a;
      a.x = megatax::MatrixView(x.data(), kN, kD, megatax::DType::kF16);
      a.centroids = megatax::MatrixView(c.data(), kK, kD, megatax::DType::kF16);
      a.labels = labels.data();
      auto assigns = [&](int count) {
        const auto t = Clock::now();
        for (int i = 0; i < count; ++i) mc::assign(other, a);
        other.synchronize();
        return since(t);
      };
      assigns(3);
      const double one_assign = assigns(20) / 20;
      std::printf("bench_pinned: beside an f16 assign %lld x %lld to %lld (%.3f ms, %.0f TFLOP/s alone), on two "
                  "streams:\n",
                  static_cast<long long>(kN), static_cast<long long>(kD), static_cast<long long>(kK), one_assign * 1e3,
                  2.0 * kN * kK * kD / one_assign / 1e12);
      std::printf("%-12s %12s %12s %14s %12s %10s\n", "gather SMs", "gather GB/s", "together s", "gather alone s",
                  "assigns s", "overlap");
      for (const int sms : {0, 4, 8, 16, 32}) {
        const int rounds = 4;
        const double g = gather(res, sms, rounds);
        const int count = std::max(1, static_cast<int>(g / one_assign));
        const double alone = assigns(count);
        // Both at once: the gathers queued on res, the assigns on `other`, then both waited for.
        const auto t = Clock::now();
        for (int r = 0; r < rounds; ++r)
          mc::gather_rows_at(res, at_dev.as<const void*>(), kRow, static_cast<std::int64_t>(rows), dev.data(), sms);
        for (int i = 0; i < count; ++i) mc::assign(other, a);
        res.synchronize();
        other.synchronize();
        const double both = since(t);
        // overlap: 1 = together as long as the longer alone; 0 = as long as both one after the other.
        std::printf("%-12d %12.1f %12.4f %14.4f %12.4f %10.2f\n", sms,
                    static_cast<double>(rows * kRow) * rounds / g / 1e9, both, g, alone,
                    (g + alone - both) / std::min(g, alone));
      }
      // A file's read-only mapping registered for the GPU where it lies in the page cache
      // (cudaHostRegisterReadOnly: no copy into page-locked memory of our own): the
      // registration's rate, and the same gather out of it over the bus (8 SMs). Shards kept
      // this way would cost the host no second copy of X.
      {
        const char* path = "/tmp/bench_pinned_mapping.bin";
        const int fd = ::open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        std::size_t written = 0;
        while (fd >= 0 && written < rows * kRow) {
          const ssize_t w = ::write(fd, static_cast<const unsigned char*>(host.data()) + written, rows * kRow - written);
          if (w <= 0) break;
          written += static_cast<std::size_t>(w);
        }
        void* map = written == rows * kRow ? ::mmap(nullptr, written, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
        int supported = 0;
        cudaDeviceGetAttribute(&supported, cudaDevAttrHostRegisterReadOnlySupported, res.device());
        if (map == MAP_FAILED) {
          std::printf("bench_pinned: a file's read-only mapping: could not write or map %s\n", path);
        } else {
          volatile unsigned char touch = 0;
          for (std::size_t i = 0; i < written; i += 4096) touch = touch + static_cast<const unsigned char*>(map)[i];
          const auto t = Clock::now();
          const cudaError_t e = cudaHostRegister(map, written, cudaHostRegisterMapped | cudaHostRegisterReadOnly);
          const double reg = since(t);
          if (e != cudaSuccess) {
            (void)cudaGetLastError();
            std::printf("bench_pinned: a file's read-only mapping: cudaHostRegister refused it: %s "
                        "(cudaDevAttrHostRegisterReadOnlySupported %d)\n",
                        cudaGetErrorString(e), supported);
          } else {
            void* mapped_dev = nullptr;
            if (cudaHostGetDevicePointer(&mapped_dev, map, 0) == cudaSuccess) {
              const auto* fbase = static_cast<const unsigned char*>(mapped_dev);
              for (std::size_t i = 0; i < rows; ++i) at[i] = fbase + order[i] * kRow;
              mc::copy_to_device(res, at_dev.data(), at.data(), rows * sizeof(void*));
              res.synchronize();
              gather(res, 8, 1);
              const double g = gather(res, 8, 3) / 3;
              std::printf("bench_pinned: a file's read-only mapping of %zu MiB registered in %.3f s (%.1f GB/s); "
                          "its rows gathered over the bus on 8 SMs: %.1f GB/s (one copy from our buffer %.1f GB/s)\n",
                          written >> 20, reg, static_cast<double>(written) / reg / 1e9,
                          static_cast<double>(written) / g / 1e9, one_copy);
            }
            cudaHostUnregister(map);
          }
          ::munmap(map, written);
        }
        if (fd >= 0) ::close(fd);
        ::unlink(path);
      }
    }
  } catch (const std::exception& e) {
    std::printf("bench_pinned: %s\n", e.what());
    return 1;
  }
  return 0;
}
