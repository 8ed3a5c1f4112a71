// tests/dist/rendezvous.h -- thread-ranks for tests of the callback executor: a coordinator
// that plays the Ray driver's part (allgather, one shard counter per run_shards round) and a
// runner that starts one thread per rank. No GoogleTest: the GPU tests use it too.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dist/callback_executor.h"
#include "megatax/error.h"

namespace megatax::testing_dist {

// The coordinator of the test: the k-th allgather of every rank meets the others' k-th; one
// fetch-and-add counter per run_shards round. abort() wakes every waiting rank with
// Error(kCancelled) and fails every later call. Thread-safe.
class Rendezvous {
 public:
  explicit Rendezvous(int workers)
      : workers_(workers), seq_(static_cast<std::size_t>(workers), 0) {}

  std::vector<std::string> allgather(int rank, const std::string& mine) {
    std::unique_lock<std::mutex> lock(mu_);
    check_aborted();
    const std::int64_t seq = seq_[static_cast<std::size_t>(rank)]++;
    Slot& slot = slots_[seq];
    if (slot.parts.empty()) slot.parts.resize(static_cast<std::size_t>(workers_));
    slot.parts[static_cast<std::size_t>(rank)] = mine;
    if (++slot.arrived == workers_) cv_.notify_all();
    cv_.wait(lock, [&] { return slot.arrived == workers_ || aborted_; });
    check_aborted();
    std::vector<std::string> out = slot.parts;
    if (++slot.taken == workers_) slots_.erase(seq);
    return out;
  }

  std::int64_t next_shard(std::int64_t round, std::int64_t n_shards) {
    std::lock_guard<std::mutex> lock(mu_);
    check_aborted();
    const std::int64_t s = counters_[round]++;
    return s < n_shards ? s : -1;
  }

  void abort() {
    std::lock_guard<std::mutex> lock(mu_);
    aborted_ = true;
    cv_.notify_all();
  }

  dist::CallbackExecutor executor(int rank) {
    return dist::CallbackExecutor(
        rank, workers_, [this](std::int64_t round, std::int64_t n) { return next_shard(round, n); },
        [this, rank](const std::string& mine) { return allgather(rank, mine); });
  }

 private:
  struct Slot {
    std::vector<std::string> parts;
    int arrived = 0, taken = 0;
  };
  void check_aborted() const {
    if (aborted_) throw_error(ErrorCode::kCancelled, "rendezvous aborted");
  }
  const int workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::int64_t, Slot> slots_;             // guarded by mu_
  std::vector<std::int64_t> seq_;                  // guarded by mu_: allgathers per rank
  std::map<std::int64_t, std::int64_t> counters_;  // guarded by mu_: round -> next shard
  bool aborted_ = false;                           // guarded by mu_
};

// Runs body(rank) on `workers` threads; a rank that throws aborts the rendezvous (so no
// other rank hangs) and its exception is kept. Returns the exceptions by rank.
inline std::vector<std::exception_ptr> run_ranks(int workers, Rendezvous& rv,
                                                 const std::function<void(int)>& body) {
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(workers));
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(workers));
  for (int r = 0; r < workers; ++r)
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
        rv.abort();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

}  // namespace megatax::testing_dist
