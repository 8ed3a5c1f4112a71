#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace megatax {

int hardware_threads() noexcept {
  // Cached: std::thread::hardware_concurrency() reads /sys on every call (microseconds).
  static const int n = [] {
    const unsigned h = std::thread::hardware_concurrency();
    return h == 0 ? 1 : static_cast<int>(h);
  }();
  return n;
}

int resolve_threads(int threads, std::int64_t n_tasks) noexcept {
  std::int64_t t = threads <= 0 ? hardware_threads() : threads;
  t = std::min<std::int64_t>(t, std::max<std::int64_t>(n_tasks, 1));
  return static_cast<int>(std::max<std::int64_t>(t, 1));
}

void parallel_for(int threads, std::int64_t n_tasks,
                  const std::function<void(std::int64_t task, int worker)>& fn) {
  if (n_tasks <= 0) return;
  const int t = resolve_threads(threads, n_tasks);
  if (t == 1) {
    for (std::int64_t i = 0; i < n_tasks; ++i) fn(i, 0);
    return;
  }
  std::atomic<std::int64_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first_error;
  std::mutex error_mu;
  auto work = [&](int worker) {
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      const std::int64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n_tasks) return;
      try {
        fn(i, worker);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!first_error) first_error = std::current_exception();
        failed.store(true, std::memory_order_relaxed);
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(t - 1));
  for (int w = 1; w < t; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& th : pool) th.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace megatax
