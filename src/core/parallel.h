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

// The threads a loop uses by default (>= 1): thread_share() of this process's CPUs, computed
// once. std::thread::hardware_concurrency() counts every online CPU, even for a process a
// launcher bound to a few (taskset, Slurm's --cpus-per-task, mpirun's default --bind-to
// core), and ranks of an MPI job sharing a node unbound each took all of it.
int hardware_threads() noexcept;
// The default thread count of a process allowed `allowed_cpus` of the node's `online_cpus`
// (its affinity mask), one of `local_ranks` processes of an MPI job on the node: its mask
// split evenly between the ranks taken to share it, local_ranks * allowed / online of them
// (rounded; at least 1): all ranks when unbound, a socket's when bound to sockets, none
// other when bound to cores or given CPUs of their own (Slurm's --cpus-per-task). >= 1.
int thread_share(int allowed_cpus, int online_cpus, int local_ranks) noexcept;
// The CPUs this process may run on (its affinity mask; every online CPU where that is unknown).
int allowed_cpus() noexcept;
// The processes of this MPI job on this node (OMPI_COMM_WORLD_LOCAL_SIZE, MPI_LOCALNRANKS,
// SLURM_NTASKS_PER_NODE; 1 outside a job or when none is set or valid).
int node_local_ranks() noexcept;
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
