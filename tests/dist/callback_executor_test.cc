// CallbackExecutor: every collective built from next_shard + allgather, checked on threads
// acting as ranks (an in-process rendezvous plays the Ray coordinator), and the real fit on
// 2 and 3 thread-ranks against the single-process fit, byte for byte; a rank failing
// mid-level leaves the last committed level, and a resume on another rank count ends with
// the same tree.
#include "dist/callback_executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dist/rendezvous.h"
#include "io/io_test_util.h"
#include "megatax/error.h"
#include "megatax/storage.h"
#include "megatax/taxonomy.h"
#include "megatax/vector_format.h"
#include "taxonomy/taxonomy_test_util.h"

namespace megatax {
namespace {

using dist::CallbackExecutor;
using testing_dist::Rendezvous;
using testing_dist::run_ranks;
using testing_io::ScratchDir;
using namespace testing_taxonomy;

void expect_no_errors(const std::vector<std::exception_ptr>& errors) {
  for (std::size_t r = 0; r < errors.size(); ++r) {
    if (!errors[r]) continue;
    try {
      std::rethrow_exception(errors[r]);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "rank " << r << ": " << e.what();
    }
  }
}

TEST(CallbackExecutor, CollectivesOnThreeRanks) {
  constexpr int R = 3;
  Rendezvous rv(R);
  std::vector<std::vector<std::int64_t>> ran(R * 2);
  std::vector<double> f64(R);
  expect_no_errors(run_ranks(R, rv, [&](int me) {
    CallbackExecutor ex = rv.executor(me);
    EXPECT_EQ(ex.rank(), me);
    EXPECT_EQ(ex.workers(), R);
    EXPECT_EQ(ex.is_driver(), me == 0);
    ex.barrier();
    // int64: exact, large values included.
    std::vector<std::int64_t> v = {me + 1, std::int64_t{1} << 60, -me};
    ex.allreduce_sum(std::span<std::int64_t>(v));
    EXPECT_EQ(v, (std::vector<std::int64_t>{6, std::int64_t{3} << 60, -3}));
    // double: rank 0 + rank 1 + rank 2, left to right. 2^53 + 1 rounds back to 2^53, so this
    // order gives 0 where the order (0 + 2) + 1 would give 1.
    const double big = std::ldexp(1.0, 53);
    std::vector<double> d = {me == 0 ? big : me == 1 ? 1.0 : -big, 0.25 * me};
    ex.allreduce_sum(std::span<double>(d));
    f64[static_cast<std::size_t>(me)] = d[0];
    EXPECT_EQ(d[1], 0.75);
    // Empty reductions are collectives too.
    ex.allreduce_sum(std::span<std::int64_t>());
    // alltoall: worker w gets "me->w" (empty to itself), any length.
    std::vector<std::string> send(R);
    for (int w = 0; w < R; ++w)
      send[static_cast<std::size_t>(w)] =
          w == me
              ? ""
              : std::string(static_cast<std::size_t>(me * 1000 + w), 'a' + static_cast<char>(me)) +
                    std::to_string(me) + "->" + std::to_string(w);
    const auto got = ex.alltoall(send);
    ASSERT_EQ(got.size(), static_cast<std::size_t>(R));
    for (int w = 0; w < R; ++w) {
      const std::string expected = w == me ? ""
                                           : std::string(static_cast<std::size_t>(w * 1000 + me),
                                                         'a' + static_cast<char>(w)) +
                                                 std::to_string(w) + "->" + std::to_string(me);
      EXPECT_EQ(got[static_cast<std::size_t>(w)], expected) << "from " << w << " to " << me;
    }
    // allgather and broadcast.
    const auto all = ex.allgather("rank" + std::to_string(me));
    EXPECT_EQ(all, (std::vector<std::string>{"rank0", "rank1", "rank2"}));
    std::string msg = me == 0 ? std::string("from the driver\0with a zero", 27)
                              : "junk of rank " + std::to_string(me);
    ex.broadcast(&msg);
    EXPECT_EQ(msg, std::string("from the driver\0with a zero", 27));
    // Two rounds of dynamic dispatch: the second starts from shard 0 again.
    for (int round = 0; round < 2; ++round)
      ran[static_cast<std::size_t>(round) * R + static_cast<std::size_t>(me)] =
          ex.run_shards(10, [&](std::int64_t s) {
            if (me == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // uneven ranks
          });
    EXPECT_TRUE(ex.run_shards(0, [](std::int64_t) { FAIL() << "no shard to run"; }).empty());
  }));
  EXPECT_EQ(f64, std::vector<double>(R, 0.0));
  for (int round = 0; round < 2; ++round) {
    std::multiset<std::int64_t> seen;
    for (int r = 0; r < R; ++r) {
      const auto& s = ran[static_cast<std::size_t>(round) * R + static_cast<std::size_t>(r)];
      EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
      seen.insert(s.begin(), s.end());
    }
    std::multiset<std::int64_t> expected;
    for (std::int64_t s = 0; s < 10; ++s) expected.insert(s);
    EXPECT_EQ(seen, expected) << "round " << round << ": every shard exactly once";
  }
}

// run_shards_ahead: a task that claims its successor (once, twice or not at all, at random)
// is followed by that shard on its worker; every shard runs exactly once over the workers;
// a successor of -1 ends the worker's round. The local executor: shards in order, each
// task's successor the next index.
TEST(CallbackExecutor, RunShardsAheadRunsTheClaimedSuccessor) {
  constexpr int R = 3;
  constexpr std::int64_t kShards = 40;
  Rendezvous rv(R);
  const std::uint64_t seed = std::random_device{}();
  struct Step {
    std::int64_t shard, claimed;  // claimed: -2 when the task did not ask
  };
  std::vector<std::vector<Step>> steps(R);
  std::vector<std::vector<std::int64_t>> ran(R);
  expect_no_errors(run_ranks(R, rv, [&](int me) {
    CallbackExecutor ex = rv.executor(me);
    std::mt19937_64 rng(seed + static_cast<std::uint64_t>(me));
    ran[static_cast<std::size_t>(me)] =
        ex.run_shards_ahead(kShards, [&](std::int64_t s, const dist::Executor::ClaimNext& claim_next) {
          const int asks = static_cast<int>(rng() % 3);
          std::int64_t claimed = -2;
          for (int a = 0; a < asks; ++a) {
            const std::int64_t c = claim_next();
            if (a > 0) {
              EXPECT_EQ(c, claimed) << "a second claim_next gives the same shard";
            }
            claimed = c;
          }
          steps[static_cast<std::size_t>(me)].push_back({s, claimed});
          if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // uneven ranks
        });
  }));
  std::multiset<std::int64_t> seen;
  for (int r = 0; r < R; ++r) {
    const auto& st = steps[static_cast<std::size_t>(r)];
    const auto& order = ran[static_cast<std::size_t>(r)];
    ASSERT_EQ(st.size(), order.size()) << "seed " << seed;
    for (std::size_t i = 0; i < st.size(); ++i) {
      EXPECT_EQ(st[i].shard, order[i]);
      seen.insert(st[i].shard);
      if (st[i].claimed == -2) continue;
      if (i + 1 < st.size()) {
        EXPECT_EQ(st[i + 1].shard, st[i].claimed) << "rank " << r << ", seed " << seed;
      } else {
        EXPECT_EQ(st[i].claimed, -1) << "rank " << r << ": the last task's successor, seed " << seed;
      }
    }
  }
  std::multiset<std::int64_t> expected;
  for (std::int64_t s = 0; s < kShards; ++s) expected.insert(s);
  EXPECT_EQ(seen, expected) << "every shard exactly once, seed " << seed;

  dist::LocalExecutor local;
  std::vector<std::int64_t> successors;
  const auto order = local.run_shards_ahead(5, [&](std::int64_t s, const dist::Executor::ClaimNext& claim_next) {
    if (s % 2 == 0) successors.push_back(claim_next());
  });
  EXPECT_EQ(order, (std::vector<std::int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(successors, (std::vector<std::int64_t>{1, 3, -1}));
}

TEST(CallbackExecutor, ContractViolationsAndErrors) {
  auto gather_self = [](const std::string& m) { return std::vector<std::string>{m}; };
  auto none = [](std::int64_t, std::int64_t) -> std::int64_t { return -1; };
  EXPECT_THROW(CallbackExecutor(1, 1, none, gather_self), Error);
  EXPECT_THROW(CallbackExecutor(0, 0, none, gather_self), Error);
  EXPECT_THROW(CallbackExecutor(0, 2, nullptr, gather_self), Error);
  {  // a transport that loses a part, or hands back other bytes: kInternal
    CallbackExecutor ex(0, 2, none, gather_self);
    try {
      ex.barrier();
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInternal);
      EXPECT_NE(std::string(e.what()).find("returned 1 parts for 2 workers"), std::string::npos)
          << e.what();
    }
    CallbackExecutor ex2(1, 2, none, [](const std::string&) {
      return std::vector<std::string>{"a", "b"};
    });
    EXPECT_THROW(ex2.allgather("c"), Error);
  }
  {  // next_shard out of range: kInternal, naming the value
    CallbackExecutor ex(
        0, 1, [](std::int64_t, std::int64_t n) { return n; }, gather_self);
    try {
      ex.run_shards(4, [](std::int64_t) {});
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInternal);
      EXPECT_NE(std::string(e.what()).find("next_shard returned 4"), std::string::npos) << e.what();
    }
  }
  {  // a callback's exception passes through unchanged
    CallbackExecutor ex(0, 1, none, [](const std::string&) -> std::vector<std::string> {
      throw Error(ErrorCode::kUnavailable, "transport down");
    });
    try {
      ex.barrier();
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
      EXPECT_STREQ(e.what(), "transport down");
    }
    EXPECT_THROW(ex.alltoall({"x", "y"}), Error);  // 2 messages for 1 worker
  }
  {  // abort: an exception naming the worker, not the end of the process
    CallbackExecutor ex(1, 3, none, gather_self);
    try {
      ex.abort("shard x.npy: unreadable");
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kCancelled);
      EXPECT_STREQ(e.what(), "worker 1/3 failed: shard x.npy: unreadable");
    }
  }
}

// Unequal shards (7 .. 4000 rows), more shards than ranks.
void write_dataset(const std::string& dir, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  constexpr std::int64_t d = 12;
  std::vector<float> centres(40 * d);
  for (float& c : centres) c = 4 * normal(rng);
  auto st = open_storage_for_uri(dir);
  const std::int64_t sizes[] = {2500, 300, 4000, 7, 1800, 3100, 900};
  for (std::size_t s = 0; s < std::size(sizes); ++s) {
    std::vector<float> x(static_cast<std::size_t>(sizes[s] * d));
    for (std::int64_t i = 0; i < sizes[s]; ++i) {
      const std::size_t c = rng() % 40;
      for (std::int64_t j = 0; j < d; ++j)
        x[static_cast<std::size_t>(i * d + j)] =
            centres[c * d + static_cast<std::size_t>(j)] + normal(rng);
    }
    const std::int64_t shape[2] = {sizes[s], d};
    write_npy(*st, dir + "/part-00" + std::to_string(s) + ".npy", std::span<const float>(x), shape);
  }
}

TaxonomyConfig fit_config(const std::string& storage) {
  TaxonomyConfig c;
  c.n_levels = 3;
  c.branching = {4, 3, 3};
  c.sample_per_centroid = 64;
  c.batch_rows = 1000;
  c.threads = 1;
  c.storage_uri = storage;
  return c;
}

class CallbackFit : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = testing_io::fresh_seed();
    write_dataset(dir_ / "data", seed_);
    TaxonomyEngine ref(fit_config(dir_ / "ref"));
    FitOptions o = quiet();
    o.executor = "local";
    ref.fit(input(), dir_ / "ref-out", o);
    ASSERT_EQ(tree_bytes(dir_ / "ref", true).size(), 9u);        // centroids, nodes, inertia x 3
    ASSERT_EQ(tree_bytes(dir_ / "ref-out", false).size(), 21u);  // paths, ids, dist x 7 shards
  }
  std::string input() const { return dir_ / "data/part-*.npy"; }
  void expect_same_as_reference(const std::string& tax, const std::string& out) {
    EXPECT_EQ(tree_bytes(dir_ / "ref", true), tree_bytes(tax, true)) << tax;
    EXPECT_EQ(tree_bytes(dir_ / "ref-out", false), tree_bytes(out, false)) << out;
  }
  // Fits on `workers` thread-ranks; returns each rank's log lines, or throws rank 0's error
  // (or the first one) after all ranks stopped.
  std::vector<std::vector<std::string>> fit_on_ranks(int workers, const std::string& tax,
                                                     const std::string& out, bool resume,
                                                     int fail_rank = -1,
                                                     std::int64_t fail_round = -1) {
    Rendezvous rv(workers);
    std::vector<std::vector<std::string>> logs(static_cast<std::size_t>(workers));
    const auto errors = run_ranks(workers, rv, [&](int me) {
      CallbackExecutor::NextShard next = [&rv](std::int64_t round, std::int64_t n) {
        return rv.next_shard(round, n);
      };
      if (me == fail_rank)
        next = [&rv, fail_round](std::int64_t round, std::int64_t n) {
          if (round == fail_round)
            throw Error(ErrorCode::kUnavailable, "test: the transport of this rank failed");
          return rv.next_shard(round, n);
        };
      CallbackExecutor ex(me, workers, next,
                          [&rv, me](const std::string& m) { return rv.allgather(me, m); });
      TaxonomyEngine engine(fit_config(tax));
      FitOptions o = quiet();
      o.resume = resume;
      o.log = [&logs, me](const std::string& line) {
        logs[static_cast<std::size_t>(me)].push_back(line);
      };
      const FitReport report = engine.fit_with(ex, input(), out, o);
      EXPECT_EQ(report.points, 12607);
      EXPECT_EQ(report.levels.size(), static_cast<std::size_t>(3 - report.resumed_from_level));
    });
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
    return logs;
  }
  std::uint64_t seed_;
  ScratchDir dir_;
};

TEST_F(CallbackFit, SameTreeAsTheLocalFitOnTwoAndThreeRanks) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  for (int workers : {2, 3}) {
    const std::string tax = dir_ / ("t" + std::to_string(workers)),
                      out = dir_ / ("o" + std::to_string(workers));
    const auto logs = fit_on_ranks(workers, tax, out, false);
    expect_same_as_reference(tax, out);
    // Every rank reports its share of every level's pass; together they ran all 7 shards.
    for (int level = 1; level <= 3; ++level) {
      std::int64_t shards = 0;
      for (int r = 0; r < workers; ++r) {
        const std::string prefix = "rank " + std::to_string(r) + "/" + std::to_string(workers) +
                                   ": level " + std::to_string(level) + ": assigned ";
        int found = 0;
        for (const auto& line : logs[static_cast<std::size_t>(r)])
          if (line.rfind(prefix, 0) == 0) {
            shards += std::stoll(line.substr(prefix.size()));
            ++found;
          }
        EXPECT_EQ(found, 1) << "rank " << r << " level " << level;
      }
      EXPECT_EQ(shards, 7) << "level " << level;
    }
  }
}

TEST_F(CallbackFit, RankFailingMidLevelThenResumeOnOtherRankCount) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const std::string tax = dir_ / "t", out = dir_ / "o";
  // run_shards rounds: level 1's pass is round 0, level 2's round 1: rank 1 fails there.
  try {
    fit_on_ranks(3, tax, out, false, /*fail_rank=*/1, /*fail_round=*/1);
    FAIL() << "the fit did not fail";
  } catch (const Error& e) {
    // Rank 0 was woken by the abort (kCancelled) or saw the failure itself.
    EXPECT_TRUE(e.code() == ErrorCode::kCancelled || e.code() == ErrorCode::kUnavailable)
        << e.what();
  }
  const std::string manifest = testing_io::read_file(tax + "/taxonomy.json");
  EXPECT_NE(manifest.find("\"levels_done\": 1"), std::string::npos) << manifest;
  EXPECT_NE(manifest.find("\"status\": \"fitting\""), std::string::npos) << manifest;
  // Resume on 2 ranks: the same tree and outputs as the uninterrupted local fit.
  fit_on_ranks(2, tax, out, true);
  expect_same_as_reference(tax, out);
}

}  // namespace
}  // namespace megatax
