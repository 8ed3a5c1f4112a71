// dist/executor.h -- how the work of a fit is spread over workers, and what they exchange.
//
// The taxonomy driver is written once, SPMD style: every worker runs the same level loop and
// meets the others at collectives (barrier, all-reduce, all-to-all, all-gather of byte
// messages); worker 0 is also the driver (it alone writes the manifest and the model files).
// An executor only moves work and messages; it never changes results: tasks write their
// outputs to per-shard places and reductions that decide the tree are exact (integer sums,
// bottom-k merges) or done in shard order.
//
// Executors (make_executor picks the first two; the third is built by its caller):
//   local     one process, shards in order on the calling thread (below);
//   mpi       one process per rank (mpirun/srun), shards claimed through a one-sided
//             fetch-and-add counter, collectives are MPI's (mpi_executor.cc);
//   callback  the transport is two functions of the caller -- next_shard (a fetch-and-add
//             per run_shards round) and allgather of bytes -- and every other collective is
//             built from allgather, reductions summed in rank order (callback_executor.h).
//             The Ray executor of the Python package (python/mega_taxonomy/ray.py) runs one
//             per worker actor, with a coordinator actor behind the callbacks; docs/ray.md.
//
// Errors: when one of several workers fails, TaxonomyEngine::fit calls abort(): the MPI
// executor prints the message and aborts every rank (no collective can then hang); with one
// worker the error is simply thrown. TaxonomyEngine::fit_with never aborts: it throws on the
// failing worker, and the callback executor's caller (the Ray driver) unblocks the others
// and decides whether to retry from the last committed level.
//
// Thread-safety: an Executor is used by one driver thread per worker.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace megatax::dist {

class Executor {
 public:
  virtual ~Executor() = default;
  virtual std::string name() const = 0;
  virtual int rank() const = 0;     // this worker, 0 = the driver
  virtual int workers() const = 0;  // >= 1
  bool is_driver() const { return rank() == 0; }

  // Collective. Hands the shards [0, n_shards) out dynamically: each worker calls
  // task(shard) for the shards it claims, claiming the next one when it is free, until all
  // are claimed. Returns the shards this worker ran, in order.
  std::vector<std::int64_t> run_shards(std::int64_t n_shards, const std::function<void(std::int64_t)>& task);
  // Called by a task of run_shards_ahead: claims now the shard this worker runs after the
  // current one and returns it (-1: none left); later calls return the same shard. A task
  // that knows its successor can start reading it while it finishes (the load stays
  // balanced: a worker holds one claim ahead at most).
  using ClaimNext = std::function<std::int64_t()>;
  // run_shards, the task also given the means to claim its successor early.
  std::vector<std::int64_t> run_shards_ahead(std::int64_t n_shards,
                                             const std::function<void(std::int64_t, const ClaimNext&)>& task);
  // Collectives: every worker calls them in the same order.
  virtual void barrier() = 0;
  virtual void allreduce_sum(std::span<std::int64_t> values) = 0;  // exact
  virtual void allreduce_sum(std::span<double> values) = 0;        // order: by rank
  // Worker w receives send[w] from this worker; returns, by source rank, what it received.
  virtual std::vector<std::string> alltoall(const std::vector<std::string>& send) = 0;
  // Every worker receives every worker's message, by rank.
  virtual std::vector<std::string> allgather(const std::string& mine) = 0;
  // Broadcast from worker 0: its `message` replaces everyone's.
  virtual void broadcast(std::string* message) = 0;
  // Stops every worker after this one failed with `message` (MPI: prints it with the rank
  // and aborts the job, exit status 1; callback: throws Error(kCancelled), its caller stops
  // the others). Only called when workers() > 1.
  [[noreturn]] virtual void abort(const std::string& message) = 0;

 protected:
  // run_shards' transport. Collective: a new round of n_shards shards begins (none of the
  // last round's is claimed any more).
  virtual void begin_round(std::int64_t n_shards) = 0;
  // The next unclaimed shard of the round, claimed for this worker, or -1 when none is left.
  virtual std::int64_t claim(std::int64_t n_shards) = 0;
};

// One process, one worker: shards run in order on the calling thread (the kernels use the
// process's threads inside each task).
class LocalExecutor final : public Executor {
 public:
  std::string name() const override { return "local"; }
  int rank() const override { return 0; }
  int workers() const override { return 1; }
  void barrier() override {}
  void allreduce_sum(std::span<std::int64_t>) override {}
  void allreduce_sum(std::span<double>) override {}
  std::vector<std::string> alltoall(const std::vector<std::string>& send) override { return send; }
  std::vector<std::string> allgather(const std::string& mine) override { return {mine}; }
  void broadcast(std::string*) override {}
  [[noreturn]] void abort(const std::string& message) override;

 protected:
  void begin_round(std::int64_t) override { next_ = 0; }
  std::int64_t claim(std::int64_t n_shards) override { return next_ < n_shards ? next_++ : -1; }

 private:
  std::int64_t next_ = 0;
};

// The executor named by `kind`: "local"; "mpi" (needs a build with MPI; initialises MPI on
// first use and finalises it at exit); "auto" = mpi when this process was started by mpirun
// or srun with more than one rank (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK), else local.
// Throws Error(kUnimplemented) for "mpi" in a build without MPI, kInvalidArgument otherwise.
std::unique_ptr<Executor> make_executor(const std::string& kind);

// True when this build has the MPI executor.
bool have_mpi() noexcept;

}  // namespace megatax::dist
