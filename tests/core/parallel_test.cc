// WorkerPool against the contract of parallel_for: every task exactly once per run, worker
// ids in range, the first exception rethrown and the pool still usable, many short runs.
#include "core/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace megatax {
namespace {

// The default thread count: a launcher's binding is the process's share; an unbound rank
// gets its part of the node.
TEST(ThreadShare, BindingOrAnEvenSplitOfTheNode) {
  EXPECT_EQ(thread_share(32, 32, 1), 32);   // alone on the node
  EXPECT_EQ(thread_share(32, 32, 2), 16);   // two unbound ranks
  EXPECT_EQ(thread_share(32, 32, 3), 10);
  EXPECT_EQ(thread_share(2, 2, 4), 1);      // more ranks than CPUs: one each
  EXPECT_EQ(thread_share(1, 32, 2), 1);     // bound to a core (mpirun's default for 2 ranks)
  EXPECT_EQ(thread_share(8, 32, 4), 8);     // bound to 8 CPUs: already its share
  EXPECT_EQ(thread_share(16, 32, 2), 16);   // half the node each
  EXPECT_EQ(thread_share(64, 128, 8), 16);  // bound to a socket of 64 with 3 other ranks
  EXPECT_EQ(thread_share(4, 4, 0), 4);      // no ranks known: alone
  EXPECT_EQ(thread_share(0, 32, 1), 1);     // a mask that reads as empty: at least one
}

TEST(ThreadShare, LocalRanksFromTheLaunchersVariables) {
  const char* vars[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"};
  std::vector<std::string> saved;
  for (const char* v : vars) {
    const char* old = std::getenv(v);
    saved.push_back(old != nullptr ? old : std::string("\x01"));
    unsetenv(v);
  }
  EXPECT_EQ(node_local_ranks(), 1);
  setenv("SLURM_NTASKS_PER_NODE", "4", 1);
  EXPECT_EQ(node_local_ranks(), 4);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);  // Open MPI's first
  EXPECT_EQ(node_local_ranks(), 2);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2(x3)", 1);  // not a number: the next variable
  EXPECT_EQ(node_local_ranks(), 4);
  setenv("SLURM_NTASKS_PER_NODE", "0", 1);
  unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  EXPECT_EQ(node_local_ranks(), 1);
  for (std::size_t i = 0; i < saved.size(); ++i) {
    if (saved[i] == "\x01") {
      unsetenv(vars[i]);
    } else {
      setenv(vars[i], saved[i].c_str(), 1);
    }
  }
}

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
