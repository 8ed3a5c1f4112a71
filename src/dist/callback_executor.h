// dist/callback_executor.h -- an executor whose transport is two functions of the caller.
//
// For executors that live outside this library: the Ray executor of the Python package
// (python/mega_taxonomy/ray.py) holds one CallbackExecutor per worker actor, and a
// coordinator actor behind the two callbacks. The caller gives this worker's rank, the
// number of workers and:
//
//   next_shard(round, n_shards) -> int64
//       The next unclaimed shard of run_shards call number `round` (0, 1, 2, ... counted on
//       every worker: run_shards is collective), or -1 when all n_shards are claimed. It
//       must be one fetch-and-add shared by all workers of the round: every shard in
//       [0, n_shards) is returned to exactly one worker, in increasing order.
//   allgather(bytes) -> std::vector<std::string>
//       Every worker's bytes, by rank (workers() strings, [rank()] == bytes). Every worker
//       calls it the same number of times, in the same order, so the k-th call of each
//       worker meets the k-th call of the others.
//
// Every collective of Executor is built from these two, so the results are those of any
// other executor (the tree is the same bit for bit):
//   barrier       = allgather("");
//   allreduce_sum = allgather of the raw values, summed in rank order: int64 exact; double
//                   rank 0 + rank 1 + ... left to right (the same bits on every worker);
//   alltoall      = allgather of this worker's framed send vector, keeping the parts
//                   addressed to this worker (R^2 bytes moved in all: fine for the few
//                   workers of a Ray fit, not meant for thousands);
//   broadcast     = allgather of rank 0's message (the others send nothing);
//   run_shards    = next_shard until -1 (run_shards_ahead: a task may call it once for its
//                   successor); it is not a barrier (the fit's own collectives order the
//                   passes).
//
// Errors: an exception thrown by a callback (the caller's transport failed, or the attempt
// was aborted) passes through unchanged and ends the collective; callbacks should throw
// megatax::Error (kUnavailable for a transport failure: retrying may succeed). A result
// that breaks the contract (a wrong number of parts, our own bytes changed, a shard outside
// [0, n_shards)) throws Error(kInternal). abort() cannot stop the other workers by itself:
// it throws Error(kCancelled) naming this worker, and the caller tells the others (the Ray
// coordinator's abort). A failed fit_with leaves the storage at its last committed level.
//
// Test hook (as the MPI executor): MEGATAX_TEST_SLOW_RANK=r makes worker r sleep 300 ms
// as it claims each shard.
//
// Thread-safety: used by one thread per worker (Executor's contract); the callbacks are
// called on that thread and must be safe to call from it.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "dist/executor.h"

namespace megatax::dist {

class CallbackExecutor final : public Executor {
 public:
  using NextShard = std::function<std::int64_t(std::int64_t round, std::int64_t n_shards)>;
  using Allgather = std::function<std::vector<std::string>(const std::string& mine)>;

  // Requires 0 <= rank < workers and both callbacks set (else Error(kInvalidArgument)).
  CallbackExecutor(int rank, int workers, NextShard next_shard, Allgather allgather);

  std::string name() const override { return "callback"; }
  int rank() const override { return rank_; }
  int workers() const override { return workers_; }

  void barrier() override;
  void allreduce_sum(std::span<std::int64_t> values) override;
  void allreduce_sum(std::span<double> values) override;
  std::vector<std::string> alltoall(const std::vector<std::string>& send) override;
  std::vector<std::string> allgather(const std::string& mine) override;
  void broadcast(std::string* message) override;
  [[noreturn]] void abort(const std::string& message) override;

 protected:
  void begin_round(std::int64_t) override { round_ = next_round_++; }
  std::int64_t claim(std::int64_t n_shards) override;

 private:
  int rank_;
  int workers_;
  NextShard next_shard_;
  Allgather allgather_;
  std::int64_t round_ = -1, next_round_ = 0;  // the current run_shards call's number, the next's
  int slow_rank_ = -1;      // test hook: MEGATAX_TEST_SLOW_RANK
};

}  // namespace megatax::dist
