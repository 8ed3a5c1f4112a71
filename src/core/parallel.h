// core/parallel.h -- run independent tasks on a bounded number of threads.
//
// parallel_for(threads, n_tasks, fn) calls fn(task, worker) exactly once for every task in
// [0, n_tasks), on up to `threads` threads (the calling thread is worker 0; the others are
// started for this call and joined before it returns: no hidden pool survives the call).
// Tasks are handed out dynamically in increasing order; callers that need deterministic
// results must make each task's output depend on `task` only, never on `worker`.
// If fn throws, the remaining tasks are skipped and the first exception is rethrown in the
// caller after every thread has joined.
//
// Thread-safety: fn runs concurrently with itself; it must be safe for that.
#pragma once

#include <cstdint>
#include <functional>

namespace megatax {

// Number of hardware threads (>= 1).
int hardware_threads() noexcept;
// threads <= 0 -> hardware_threads(); never more than n_tasks (and >= 1).
int resolve_threads(int threads, std::int64_t n_tasks) noexcept;

void parallel_for(int threads, std::int64_t n_tasks,
                  const std::function<void(std::int64_t task, int worker)>& fn);

// Threads kept for many short parallel loops: parallel_for starts its threads on every call
// (tens of microseconds), which dominates loops of a millisecond run thousands of times.
// run() has parallel_for's contract on the pool's threads (the caller is worker 0). One
// run() at a time; the workers stop when the pool is destroyed.
class WorkerPool {
 public:
  explicit WorkerPool(int threads);  // threads <= 0: hardware_threads()
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;
  int threads() const noexcept { return threads_; }
  void run(std::int64_t n_tasks, const std::function<void(std::int64_t task, int worker)>& fn);

 private:
  struct State;
  int threads_;
  State* state_;
};

}  // namespace megatax
