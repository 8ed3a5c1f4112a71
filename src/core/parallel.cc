#include "core/parallel.h"

#if defined(__linux__)
#include <sched.h>
#endif

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace megatax {

int thread_share(int allowed_cpus, int online_cpus, int local_ranks) noexcept {
  const std::int64_t allowed = std::max(allowed_cpus, 1), online = std::max<std::int64_t>(online_cpus, allowed);
  // The local ranks whose masks overlap this one, if the launcher spread them evenly: all of
  // them when unbound, those of one socket when bound to sockets, one when bound to cores.
  const std::int64_t sharing =
      std::max<std::int64_t>(1, (std::max(local_ranks, 1) * allowed + online / 2) / online);
  return static_cast<int>(std::max<std::int64_t>(allowed / sharing, 1));
}

int node_local_ranks() noexcept {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"}) {
    const char* v = std::getenv(var);
    if (v == nullptr || *v == '\0') continue;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    if (*end == '\0' && n >= 1 && n <= 1 << 20) return static_cast<int>(n);
  }
  return 1;
}

namespace {
int online_cpus() noexcept {
  const unsigned h = std::thread::hardware_concurrency();
  return h == 0 ? 1 : static_cast<int>(h);
}
}  // namespace

int allowed_cpus() noexcept {
  int allowed = online_cpus();
#if defined(__linux__)
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0 && CPU_COUNT(&mask) > 0) allowed = CPU_COUNT(&mask);
#endif
  return allowed;
}

int hardware_threads() noexcept {
  // Cached: the CPU counts read /sys or make a system call on every call (microseconds).
  static const int n = thread_share(allowed_cpus(), online_cpus(), node_local_ranks());
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

struct WorkerPool::State {
  std::mutex mu;
  std::condition_variable start, done;
  std::uint64_t generation = 0;  // bumped by run(); workers wait for a new one
  bool stop = false;
  int busy = 0;                  // workers still in the current run
  std::int64_t n_tasks = 0;
  const std::function<void(std::int64_t, int)>* fn = nullptr;
  std::atomic<std::int64_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first_error;
  std::vector<std::thread> workers;

  void work(int worker) {
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      const std::int64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n_tasks) return;
      try {
        (*fn)(i, worker);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!first_error) first_error = std::current_exception();
        failed.store(true, std::memory_order_relaxed);
        return;
      }
    }
  }
};

WorkerPool::WorkerPool(int threads) : threads_(threads <= 0 ? hardware_threads() : threads), state_(new State) {
  State* st = state_;
  for (int w = 1; w < threads_; ++w) {
    st->workers.emplace_back([st, w] {
      std::uint64_t seen = 0;
      for (;;) {
        {
          std::unique_lock<std::mutex> lock(st->mu);
          st->start.wait(lock, [&] { return st->stop || st->generation != seen; });
          if (st->stop) return;
          seen = st->generation;
        }
        st->work(w);
        std::lock_guard<std::mutex> lock(st->mu);
        if (--st->busy == 0) st->done.notify_one();
      }
    });
  }
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
  }
  state_->start.notify_all();
  for (auto& t : state_->workers) t.join();
  delete state_;
}

void WorkerPool::run(std::int64_t n_tasks, const std::function<void(std::int64_t, int)>& fn) {
  if (n_tasks <= 0) return;
  State& st = *state_;
  if (threads_ == 1 || n_tasks == 1) {
    for (std::int64_t i = 0; i < n_tasks; ++i) fn(i, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(st.mu);
    st.n_tasks = n_tasks;
    st.fn = &fn;
    st.next.store(0, std::memory_order_relaxed);
    st.failed.store(false, std::memory_order_relaxed);
    st.first_error = nullptr;
    st.busy = threads_ - 1;
    ++st.generation;
  }
  st.start.notify_all();
  st.work(0);
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(st.mu);
    st.done.wait(lock, [&] { return st.busy == 0; });
    error = st.first_error;
    st.fn = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace megatax
