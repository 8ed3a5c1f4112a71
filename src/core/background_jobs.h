// core/background_jobs.h -- jobs that run off the calling thread, a bounded number at a time
// (e.g. a pass's state files written while it goes on with the next shard).
//
// submit(job) starts job on a thread of its own once fewer than `depth` jobs are pending
// (waiting for the oldest first, and rethrowing its failure if it failed). wait() finishes
// every pending job and rethrows the first failure among them; drain() finishes them and
// drops failures (for error paths that must not leave a job running). The destructor drains.
//
// Thread-safety: one thread submits and waits; the jobs run concurrently with it and with
// each other, so what they touch must be safe for that.
#pragma once

#include <algorithm>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <utility>

namespace megatax {

class BackgroundJobs {
 public:
  explicit BackgroundJobs(int depth) : depth_(std::max(depth, 1)) {}
  BackgroundJobs(const BackgroundJobs&) = delete;
  BackgroundJobs& operator=(const BackgroundJobs&) = delete;
  ~BackgroundJobs() { drain(); }

  void submit(std::function<void()> job) {
    while (static_cast<int>(pending_.size()) >= depth_) finish_oldest();
    pending_.push_back(std::async(std::launch::async, std::move(job)));
  }

  void wait() {
    std::exception_ptr first;
    while (!pending_.empty()) {
      try {
        finish_oldest();
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    if (first) std::rethrow_exception(first);
  }

  void drain() noexcept {
    while (!pending_.empty()) {
      pending_.front().wait();
      pending_.pop_front();
    }
  }

  int pending() const noexcept { return static_cast<int>(pending_.size()); }

 private:
  void finish_oldest() {
    std::future<void> f = std::move(pending_.front());
    pending_.pop_front();
    f.get();
  }

  int depth_;
  std::deque<std::future<void>> pending_;
};

}  // namespace megatax
