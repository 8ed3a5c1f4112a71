// HNSW centroid search: agreement with the flat scan on a 65,536-wide level, persisted graphs
// reload with identical answers, and a fit that uses graphs is deterministic and reproduced by
// predict.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "io/io_test_util.h"
#include "io/npy_array.h"
#include "megatax/storage.h"
#include "megatax/taxonomy.h"
#include "megatax/vector_format.h"
#include "taxonomy/hnsw_index.h"
#include "taxonomy/synthetic.h"
#include "taxonomy/tree.h"
#include "taxonomy/taxonomy_test_util.h"

namespace megatax {
namespace {

using testing_io::ScratchDir;
using namespace testing_taxonomy;
namespace fs = std::filesystem;

// Clustered centroids (as k-means gives on real data: dense regions) and queries from them.
struct WideLevel {
  std::int64_t dim, b, q;
  std::vector<float> centroids, queries;
  WideLevel(std::int64_t dim_, std::int64_t b_, std::int64_t q_, std::uint64_t seed) : dim(dim_), b(b_), q(q_) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n01(0.f, 1.f);
    const std::int64_t blobs = 256;
    std::vector<float> centre(static_cast<std::size_t>(blobs * dim));
    for (auto& v : centre) v = n01(rng);
    centroids.resize(static_cast<std::size_t>(b * dim));
    for (std::int64_t i = 0; i < b; ++i) {
      const std::int64_t c = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(blobs));
      for (std::int64_t j = 0; j < dim; ++j)
        centroids[static_cast<std::size_t>(i * dim + j)] = centre[static_cast<std::size_t>(c * dim + j)] + 0.3f * n01(rng);
    }
    queries.resize(static_cast<std::size_t>(q * dim));
    // Queries are fresh points of the same regions (not copies of centroids).
    for (std::int64_t i = 0; i < q; ++i) {
      const std::int64_t c = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(blobs));
      for (std::int64_t j = 0; j < dim; ++j)
        queries[static_cast<std::size_t>(i * dim + j)] = centre[static_cast<std::size_t>(c * dim + j)] + 0.3f * n01(rng);
    }
  }
};

std::vector<std::int32_t> descend_all(const taxonomy::Tree& tree, const WideLevel& w, std::vector<float>* dist) {
  std::vector<std::int32_t> prev(static_cast<std::size_t>(w.q), 0), node(static_cast<std::size_t>(w.q)),
      child(static_cast<std::size_t>(w.q));
  dist->assign(static_cast<std::size_t>(w.q), 0.f);
  kernels::KnnOptions o;
  o.threads = 2;
  tree.descend(1, f32_view(w.queries.data(), w.q, w.dim), prev.data(), node.data(), child.data(), dist->data(), o);
  return child;
}

TEST(Hnsw, WideLevelAgreesWithTheScanAndReloadsIdentically) {
  const WideLevel w(32, 65536, 4000, 1);
  taxonomy::Tree tree(w.dim, Metric::kL2);
  tree.add_level(w.centroids, std::vector<std::int64_t>(static_cast<std::size_t>(w.b), 0));
  std::vector<float> flat_d, hnsw_d;
  tree.set_use_graphs(false);
  const auto flat = descend_all(tree, w, &flat_d);
  const auto t0 = std::chrono::steady_clock::now();
  tree.build_graphs(1, 4096, taxonomy::HnswParams{}, 2);
  const double build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_NE(tree.level(1).graph[0], nullptr);
  tree.set_use_graphs(true);
  const auto hnsw = descend_all(tree, w, &hnsw_d);
  std::int64_t agree = 0;
  for (std::int64_t i = 0; i < w.q; ++i) agree += flat[static_cast<std::size_t>(i)] == hnsw[static_cast<std::size_t>(i)];
  const double rate = static_cast<double>(agree) / static_cast<double>(w.q);
  std::printf("[ hnsw ] 65536 x 32 centroids: build %.2f s, agreement with scan %.4f at ef %lld\n", build_s, rate,
              static_cast<long long>(taxonomy::HnswParams{}.ef));
  EXPECT_GE(rate, 0.99);
  // Persisted bytes reload to the same answers; a second build gives the same bytes.
  const std::string bytes = tree.level(1).graph[0]->serialize();
  taxonomy::Tree again(w.dim, Metric::kL2);
  again.add_level(w.centroids, std::vector<std::int64_t>(static_cast<std::size_t>(w.b), 0));
  again.set_graph(1, 0, taxonomy::CentroidGraph::load(bytes, w.b, w.dim, Metric::kL2, taxonomy::HnswParams{}, "test"));
  std::vector<float> again_d;
  EXPECT_EQ(descend_all(again, w, &again_d), hnsw);
  EXPECT_EQ(again_d, hnsw_d);
  EXPECT_THROW(taxonomy::CentroidGraph::load(bytes, w.b + 1, w.dim, Metric::kL2, taxonomy::HnswParams{}, "test"), Error);
}

TEST(Hnsw, GraphBuildIsDeterministic) {
  const WideLevel w(16, 6000, 10, 2);
  auto a = taxonomy::CentroidGraph::build(w.centroids.data(), w.b, w.dim, Metric::kL2, {});
  auto b = taxonomy::CentroidGraph::build(w.centroids.data(), w.b, w.dim, Metric::kL2, {});
  EXPECT_EQ(a->serialize(), b->serialize());
}

TEST(Hnsw, FitWithGraphsIsDeterministicAndPredictReproducesIt) {
  ScratchDir dir;
  taxonomy::SyntheticSpec spec;
  spec.n = 20000;
  spec.dim = 16;
  spec.levels = 2;
  spec.branching = 8;
  spec.shards = 3;
  spec.separation = 2.0;
  taxonomy::generate_dataset(spec, dir / "data");
  auto cfg = [&](const std::string& storage, int threads) {
    TaxonomyConfig c;
    c.n_levels = 2;
    c.branching = {48, 12};
    c.storage_uri = storage;
    c.threads = threads;
    c.sample_per_centroid = 16;
    c.batch_rows = 3000;
    c.hnsw_threshold = 32;  // the root's 48 children go through a graph
    c.hnsw_ef = 32;
    return c;
  };
  FitOptions o;
  o.progress = false;
  TaxonomyEngine a(cfg(dir / "t1", 1));
  a.fit(dir / "data/part-*.npy", dir / "o1", o);
  TaxonomyEngine b(cfg(dir / "t2", 2));
  b.fit(dir / "data/part-*.npy", dir / "o2", o);
  EXPECT_TRUE(fs::exists(dir / "t1/level-1/hnsw-0.bin"));
  EXPECT_FALSE(fs::exists(dir / "t1/level-2/hnsw-0.bin"));
  EXPECT_EQ(tree_bytes(dir / "t1", true), tree_bytes(dir / "t2", true));
  EXPECT_EQ(tree_bytes(dir / "o1", false), tree_bytes(dir / "o2", false));
  auto loaded = TaxonomyEngine::load(dir / "t1");
  loaded.predict(dir / "data/part-*.npy", dir / "pred", o);
  EXPECT_EQ(tree_bytes(dir / "o1", false), tree_bytes(dir / "pred", false));
  // The exact scan is still there and agrees nearly everywhere.
  loaded.set_search(true, 0);
  auto st = open_storage_for_uri("/");
  std::vector<std::int64_t> shape;
  auto x = io::read_npy_array<float>(*st, dir / "data/part-00000.npy", &shape);
  auto fit_paths = io::read_npy_array<std::int32_t>(*st, dir / "o1/part-00000.paths.npy", &shape);
  auto exact = loaded.predict(f32_view(x.data(), shape[0], 16));
  std::int64_t same = 0;
  for (std::int64_t i = 0; i < shape[0]; ++i) same += exact.paths[static_cast<std::size_t>(2 * i)] == fit_paths[static_cast<std::size_t>(2 * i)];
  EXPECT_GE(static_cast<double>(same) / static_cast<double>(shape[0]), 0.99);
  // A missing graph is named.
  fs::remove(dir / "t1/level-1/hnsw-0.bin");
  EXPECT_THROW(TaxonomyEngine::load(dir / "t1"), Error);
}

}  // namespace
}  // namespace megatax
