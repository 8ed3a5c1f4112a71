// BackgroundJobs against its contract: every job runs once, never more than `depth` at a time,
// the first failure comes back from wait() (or from the submit that waits for it), and the
// destructor finishes what is pending.
#include "core/background_jobs.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

namespace megatax {
namespace {

TEST(BackgroundJobs, EveryJobOnceAndAtMostDepthAtATime) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (int depth : {1, 2, 3}) {
    const int n = 20 + static_cast<int>(rng() % 20);
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
    std::atomic<int> running{0}, most{0};
    {
      BackgroundJobs jobs(depth);
      for (int j = 0; j < n; ++j) {
        const auto sleep_us = static_cast<int>(rng() % 2000);
        jobs.submit([&, j, sleep_us] {
          const int now = running.fetch_add(1) + 1;
          int seen = most.load();
          while (now > seen && !most.compare_exchange_weak(seen, now)) {
          }
          std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
          hits[static_cast<std::size_t>(j)].fetch_add(1);
          running.fetch_sub(1);
        });
        ASSERT_LE(jobs.pending(), depth);
      }
      jobs.wait();
      EXPECT_EQ(jobs.pending(), 0);
    }
    for (int j = 0; j < n; ++j) EXPECT_EQ(hits[static_cast<std::size_t>(j)].load(), 1) << "job " << j;
    EXPECT_LE(most.load(), depth);
    EXPECT_GE(most.load(), 1);
  }
}

TEST(BackgroundJobs, FirstFailureComesBackAndTheOthersStillRun) {
  std::atomic<int> ran{0};
  BackgroundJobs jobs(4);
  for (int j = 0; j < 4; ++j) {
    jobs.submit([&, j] {
      std::this_thread::sleep_for(std::chrono::milliseconds(j == 0 ? 20 : 1));
      ran.fetch_add(1);
      if (j == 0 || j == 2) throw std::runtime_error("job " + std::to_string(j));
    });
  }
  try {
    jobs.wait();
    FAIL() << "wait() returned without the failure";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "job 0");  // the first submitted of the failures
  }
  EXPECT_EQ(ran.load(), 4);
  EXPECT_EQ(jobs.pending(), 0);
  jobs.submit([&] { ran.fetch_add(1); });  // still usable
  jobs.wait();
  EXPECT_EQ(ran.load(), 5);
}

TEST(BackgroundJobs, SubmitRethrowsTheFailureItWaitsFor) {
  BackgroundJobs jobs(1);
  jobs.submit([] { throw std::runtime_error("boom"); });
  EXPECT_THROW(jobs.submit([] {}), std::runtime_error);
  jobs.wait();  // the second job ran and did not fail
}

TEST(BackgroundJobs, DestructorFinishesPendingJobs) {
  std::atomic<int> ran{0};
  {
    BackgroundJobs jobs(3);
    for (int j = 0; j < 3; ++j) {
      jobs.submit([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        ran.fetch_add(1);
      });
    }
  }
  EXPECT_EQ(ran.load(), 3);
}

}  // namespace
}  // namespace megatax
