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

}  // namespace megatax
