// WorkerPool against the contract of parallel_for: every task exactly once per run, worker
// ids in range, the first exception rethrown and the pool still usable, many short runs.
#include "core/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <stdexcept>
#include <vector>

namespace megatax {
namespace {

TEST(WorkerPool, EveryTaskOnceOverManyRuns) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (int threads : {1, 2, 4, 7}) {
    WorkerPool pool(threads);
    ASSERT_EQ(pool.threads(), threads);
    for (int r = 0; r < 2000; ++r) {
      const std::int64_t n = static_cast<std::int64_t>(rng() % 40);
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
      std::atomic<int> bad_worker{0};
      pool.run(n, [&](std::int64_t t, int w) {
        hits[static_cast<std::size_t>(t)].fetch_add(1);
        if (w < 0 || w >= threads) bad_worker.fetch_add(1);
      });
      for (std::int64_t t = 0; t < n; ++t) ASSERT_EQ(hits[static_cast<std::size_t>(t)].load(), 1) << "run " << r;
      ASSERT_EQ(bad_worker.load(), 0);
    }
  }
}

TEST(WorkerPool, FirstExceptionIsRethrownAndThePoolGoesOn) {
  WorkerPool pool(4);
  for (int r = 0; r < 50; ++r) {
    std::atomic<int> ran{0};
    EXPECT_THROW(pool.run(100, [&](std::int64_t t, int) {
                   ran.fetch_add(1);
                   if (t == 10) throw std::runtime_error("task 10");
                 }),
                 std::runtime_error);
    EXPECT_GE(ran.load(), 11);
    std::atomic<std::int64_t> sum{0};
    pool.run(100, [&](std::int64_t t, int) { sum.fetch_add(t); });
    EXPECT_EQ(sum.load(), 4950);
  }
}

}  // namespace
}  // namespace megatax
