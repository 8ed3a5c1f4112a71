// bench_register: shard files registered with the GPU where they lie in the page cache
// (cudaHostRegisterReadOnly of each file's read-only mapping: how a fit keeps X in host
// memory without a copy of its own), and what a pass over them costs: the registration's
// rate with the mapping's page tables cold (as the fit maps a file: the driver faults every
// page in) and filled first (madvise MADV_POPULATE_READ, on one thread or several), files
// registered on one thread or two at once, the bus copy out of registered files alone, and a
// pass that registers the next file while the current one is copied (the fit's level 1) -- so
// the floor of that pass and what holds it up are measured, not guessed.
//
//   bench_register FILE...   (files already in the page cache, e.g. a fit's shards)
#include <cuda_runtime_api.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "megatax/cuda.h"
#include "megatax/error.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif

namespace mc = megatax::cuda;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct File {
  std::string path;
  std::size_t bytes = 0;
  void* map = nullptr;
};

void map_all(std::vector<File>& files) {
  for (File& f : files) {
    const int fd = ::open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0) throw megatax::Error(megatax::ErrorCode::kNotFound, "cannot open " + f.path);
    f.bytes = static_cast<std::size_t>(st.st_size);
    f.map = ::mmap(nullptr, f.bytes, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (f.map == MAP_FAILED) throw megatax::Error(megatax::ErrorCode::kInternal, "cannot map " + f.path);
  }
}

void unmap_all(std::vector<File>& files) {
  for (File& f : files) {
    if (f.map != nullptr && f.map != MAP_FAILED) ::munmap(f.map, f.bytes);
    f.map = nullptr;
  }
}

// The mapping's page tables filled on `threads` threads (each a contiguous piece).
bool populate(const File& f, int threads) {
  const std::size_t page = 4096;
  const std::size_t pages = (f.bytes + page - 1) / page;
  std::vector<std::future<int>> parts;
  for (int t = 0; t < threads; ++t) {
    const std::size_t b = pages * t / threads * page, e = std::min(f.bytes, pages * (t + 1) / threads * page);
    parts.push_back(std::async(std::launch::async, [&f, b, e] {
      return e > b ? ::madvise(static_cast<unsigned char*>(f.map) + b, e - b, MADV_POPULATE_READ) : 0;
    }));
  }
  bool ok = true;
  for (auto& p : parts) ok = p.get() == 0 && ok;
  return ok;
}

void reg(const File& f) {
  const cudaError_t e = cudaHostRegister(f.map, f.bytes, cudaHostRegisterPortable | cudaHostRegisterMapped |
                                                             cudaHostRegisterReadOnly);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw megatax::Error(megatax::ErrorCode::kInternal,
                         std::string("cudaHostRegister ") + f.path + ": " + cudaGetErrorString(e));
  }
}

void unreg_all(const std::vector<File>& files) {
  for (const File& f : files) (void)cudaHostUnregister(f.map);
}

double gb(std::size_t bytes, double s) { return static_cast<double>(bytes) / s / 1e9; }

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_register FILE...\n");
    return 2;
  }
  try {
    std::vector<File> files;
    for (int i = 1; i < argc; ++i) files.push_back({argv[i]});
    mc::Resources res(0);
    map_all(files);
    std::size_t total = 0, largest = 0;
    for (const File& f : files) total += f.bytes, largest = std::max(largest, f.bytes);
    unmap_all(files);
    mc::DeviceBuffer dev(largest);
    std::printf("bench_register: %zu files, %.2f GB, on %s\n", files.size(), total / 1e9, res.device_name().c_str());
    std::printf("%-62s %9s %9s\n", "", "s", "GB/s");
    auto row = [&](const char* what, double s) { std::printf("%-62s %9.3f %9.1f\n", what, s, gb(total, s)); };
    auto copy_file = [&](const File& f) {
      mc::copy_to_device(res, dev.data(), f.map, f.bytes);
      res.synchronize();
    };
    for (int round = 1; round <= 2; ++round) {
      std::printf("round %d\n", round);
      // 1. Cold page tables: the registration faults every page in.
      map_all(files);
      auto t = Clock::now();
      for (const File& f : files) reg(f);
      row("register, page tables cold, one thread", since(t));
      t = Clock::now();
      for (const File& f : files) copy_file(f);
      row("copy to the device out of the registered files", since(t));
      t = Clock::now();
      unreg_all(files);
      row("unregister", since(t));
      unmap_all(files);
      // 2. Page tables filled first (one thread, then eight), then registered.
      for (const int threads : {1, 8}) {
        map_all(files);
        t = Clock::now();
        bool ok = true;
        for (const File& f : files) ok = populate(f, threads) && ok;
        const std::string what = "populate (MADV_POPULATE_READ) on " + std::to_string(threads) + " thread(s)" +
                                 (ok ? "" : " [madvise FAILED]");
        row(what.c_str(), since(t));
        t = Clock::now();
        for (const File& f : files) reg(f);
        row("  then register, one thread", since(t));
        unreg_all(files);
        unmap_all(files);
      }
      // 3. Two files registered at once (cold), on two threads.
      map_all(files);
      t = Clock::now();
      {
        auto other = std::async(std::launch::async, [&] {
          for (std::size_t i = 1; i < files.size(); i += 2) reg(files[i]);
        });
        for (std::size_t i = 0; i < files.size(); i += 2) reg(files[i]);
        other.get();
      }
      row("register, cold, two threads at once", since(t));
      unreg_all(files);
      unmap_all(files);
      // 4. The fit's level 1: file i copied while file i + 1 is registered (cold; then with
      // its page tables filled on 8 threads ahead of the registration, by a third thread).
      for (const bool filled : {false, true}) {
        map_all(files);
        t = Clock::now();
        std::vector<std::shared_future<void>> populated(files.size());
        std::future<void> filler;
        if (filled) {
          std::vector<std::promise<void>> done(files.size());
          for (std::size_t i = 0; i < files.size(); ++i) populated[i] = done[i].get_future().share();
          filler = std::async(std::launch::async, [&files, done = std::move(done)]() mutable {
            for (std::size_t i = 0; i < files.size(); ++i) {
              populate(files[i], 8);
              done[i].set_value();
            }
          });
        }
        auto register_one = [&](std::size_t i) {
          if (filled) populated[i].wait();
          reg(files[i]);
        };
        double waited = 0;
        std::future<void> next = std::async(std::launch::async, register_one, 0);
        for (std::size_t i = 0; i < files.size(); ++i) {
          const auto w = Clock::now();
          next.get();
          waited += since(w);
          if (i + 1 < files.size()) next = std::async(std::launch::async, register_one, i + 1);
          copy_file(files[i]);
        }
        if (filler.valid()) filler.get();
        const double s = since(t);
        char what[128];
        std::snprintf(what, sizeof what, "pass: copy i while registering i+1%s (waited %.3f s)",
                      filled ? ", tables filled ahead" : ", cold", waited);
        row(what, s);
        unreg_all(files);
        unmap_all(files);
      }
    }
  } catch (const std::exception& e) {
    std::printf("bench_register: %s\n", e.what());
    return 1;
  }
  return 0;
}
