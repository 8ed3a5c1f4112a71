// Auto-balancing (skewed data) and beam predict: Zipf-sized clusters, leaf-size ratio,
// determinism, predict == fit, beam w = 1 == greedy, wider beams never farther.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "io/io_test_util.h"
#include "io/npy_array.h"
#include "megatax/storage.h"
#include "megatax/taxonomy.h"
#include "megatax/vector_format.h"
#include "taxonomy/synthetic.h"
#include "taxonomy/taxonomy_test_util.h"

namespace megatax {
namespace {

using testing_io::ScratchDir;
using namespace testing_taxonomy;
namespace fs = std::filesystem;

// Leaf sizes (points per distinct full path; early leaves included).
std::vector<std::int64_t> leaf_sizes(const std::vector<std::int32_t>& paths, int levels) {
  std::map<std::vector<std::int32_t>, std::int64_t> count;
  for (std::size_t i = 0; i + static_cast<std::size_t>(levels) <= paths.size(); i += static_cast<std::size_t>(levels))
    ++count[std::vector<std::int32_t>(paths.begin() + static_cast<std::ptrdiff_t>(i),
                                      paths.begin() + static_cast<std::ptrdiff_t>(i) + levels)];
  std::vector<std::int64_t> out;
  for (auto& [k, v] : count) out.push_back(v);
  return out;
}

double max_over_mean(const std::vector<std::int64_t>& s) {
  double total = 0;
  std::int64_t mx = 0;
  for (std::int64_t v : s) {
    total += static_cast<double>(v);
    mx = std::max(mx, v);
  }
  return static_cast<double>(mx) / (total / static_cast<double>(s.size()));
}

class ZipfData : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_.n = 40000;
    spec_.dim = 16;
    spec_.levels = 2;
    spec_.branching = 8;
    spec_.shards = 3;
    spec_.seed = 3;
    spec_.separation = 3.0;
    spec_.zipf = 1.1;
    taxonomy::generate_dataset(spec_, dir_ / "data");
  }
  TaxonomyConfig config(const std::string& storage, bool balance, int threads) const {
    TaxonomyConfig c;
    c.n_levels = 2;
    c.branching = {8};
    c.storage_uri = storage;
    c.threads = threads;
    c.seed = 7;
    c.sample_per_centroid = 64;
    c.batch_rows = 2000;
    c.balance = balance;
    return c;
  }
  std::string input() const { return dir_ / "data/part-*.npy"; }
  taxonomy::SyntheticSpec spec_;
  ScratchDir dir_;
};

TEST_F(ZipfData, BalancingBoundsMaxOverMeanLeafSize) {
  TaxonomyEngine plain(config(dir_ / "plain", false, 2));
  plain.fit(input(), dir_ / "plain-out", quiet());
  TaxonomyEngine bal(config(dir_ / "bal", true, 2));
  const FitReport r = bal.fit(input(), dir_ / "bal-out", quiet());
  const auto unbalanced = leaf_sizes(all_paths(dir_ / "plain-out"), 2);
  const auto balanced = leaf_sizes(all_paths(dir_ / "bal-out"), 2);
  const double u = max_over_mean(unbalanced), b = max_over_mean(balanced);
  std::printf("[ zipf 1.1 ] max/mean leaf size: unbalanced %.2f (%zu leaves), balanced %.2f (%zu leaves, %d split rounds)\n",
              u, unbalanced.size(), b, balanced.size(), r.levels.back().split_rounds);
  EXPECT_LE(b, 2.0);
  EXPECT_GT(u, b);
  // The node table implies the per-node branching; children vary with balancing.
  EXPECT_GT(r.levels.back().max_children, r.levels.back().min_children);
}

TEST_F(ZipfData, BalancedFitIsDeterministicAndPredictReproducesIt) {
  TaxonomyEngine a(config(dir_ / "t1", true, 1));
  a.fit(input(), dir_ / "o1", quiet());
  TaxonomyEngine b(config(dir_ / "t2", true, 2));
  b.fit(input(), dir_ / "o2", quiet());
  EXPECT_EQ(tree_bytes(dir_ / "t1", true), tree_bytes(dir_ / "t2", true));
  EXPECT_EQ(tree_bytes(dir_ / "o1", false), tree_bytes(dir_ / "o2", false));
  auto loaded = TaxonomyEngine::load(dir_ / "t1");
  loaded.predict(input(), dir_ / "pred", quiet());
  EXPECT_EQ(tree_bytes(dir_ / "o1", false), tree_bytes(dir_ / "pred", false));
}

// The last level's final pass writes the outputs itself (whether split rounds came before
// it or the round limit ended them): they equal what the loaded model predicts, and no state
// is left behind, also with state files of earlier rounds in the way.
TEST_F(ZipfData, OutputsOfTheLastPassEqualPredictAndNoStateIsLeft) {
  for (int rounds : {0, 1, 4}) {
    SCOPED_TRACE("max_split_rounds " + std::to_string(rounds));
    const std::string t = dir_ / ("rounds" + std::to_string(rounds)), o = dir_ / ("rounds-out" + std::to_string(rounds));
    TaxonomyConfig c = config(t, true, 2);
    c.max_split_rounds = rounds;
    TaxonomyEngine e(c);
    const FitReport r = e.fit(input(), o, quiet());
    EXPECT_LE(r.levels.back().split_rounds, rounds);
    std::printf("rounds %d: split rounds %d\n", rounds, r.levels.back().split_rounds);
    EXPECT_FALSE(std::filesystem::exists(t + "/state"));
    auto loaded = TaxonomyEngine::load(t);
    const std::string p = dir_ / ("rounds-pred" + std::to_string(rounds));
    loaded.predict(input(), p, quiet());
    EXPECT_EQ(tree_bytes(o, false), tree_bytes(p, false));
  }
}

TEST_F(ZipfData, BeamOfOneIsGreedyAndWiderBeamsAreNeverFarther) {
  // Overlapping clusters, so greedy descent makes mistakes a beam can fix.
  taxonomy::SyntheticSpec spec = spec_;
  spec.separation = 1.0;
  spec.zipf = 0;
  spec.n = 12000;
  taxonomy::generate_dataset(spec, dir_ / "overlap");
  TaxonomyConfig c = config(dir_ / "tb", false, 2);
  c.n_levels = 3;
  c.branching = {6};
  TaxonomyEngine e(c);
  e.fit(dir_ / "overlap/part-*.npy", dir_ / "ob", quiet());
  auto st = open_storage_for_uri("/");
  std::vector<std::int64_t> shape;
  auto x = io::read_npy_array<float>(*st, dir_ / "overlap/part-00001.npy", &shape);
  const MatrixView v = f32_view(x.data(), shape[0], shape[1]);
  const Prediction greedy = e.predict(v);
  const Prediction one = e.predict(v, 1);
  EXPECT_EQ(greedy.paths, one.paths);
  EXPECT_EQ(greedy.distances, one.distances);
  EXPECT_EQ(one.beam_changed, 0);
  for (int w : {2, 4, 16}) {
    const Prediction p = e.predict(v, w);
    std::int64_t differ = 0;
    for (std::int64_t i = 0; i < shape[0]; ++i) {
      // The reported distance is the distance to the returned leaf; never farther than greedy's
      // (float tolerance: greedy's comes from the f32 kernel).
      const float g = greedy.distances[static_cast<std::size_t>(i)], b = p.distances[static_cast<std::size_t>(i)];
      EXPECT_LE(b, g + 1e-4f * std::max(1.0f, g)) << "row " << i << " beam " << w;
      bool same = true;
      for (int l = 0; l < 3; ++l)
        same = same && p.paths[static_cast<std::size_t>(i * 3 + l)] == greedy.paths[static_cast<std::size_t>(i * 3 + l)];
      differ += same ? 0 : 1;
    }
    EXPECT_EQ(differ, p.beam_changed);
    std::printf("[ beam %2d ] %lld of %lld paths differ from greedy\n", w, static_cast<long long>(differ),
                static_cast<long long>(shape[0]));
  }
}

}  // namespace
}  // namespace megatax
