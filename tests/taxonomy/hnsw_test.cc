// HNSW centroid search: agreement with the flat scan on a 65,536-wide level at the default ef,
// persisted graphs reload with identical answers, the same graph bytes on every SIMD level,
// batched (interleaved) searches equal one-by-one searches, the f16 walk is scale-free,
// inner product, damaged graph files are refused, and a fit that uses graphs is
// deterministic and reproduced by predict.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "io/io_test_util.h"
#include "io/npy_array.h"
#include "megatax/storage.h"
#include "megatax/taxonomy.h"
#include "megatax/vector_format.h"
#include "kernels/cpu/simd_level.h"
#include "megatax/error.h"
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
  tree.add_level(UninitVector<float>(w.centroids.begin(), w.centroids.end()), std::vector<std::int64_t>(static_cast<std::size_t>(w.b), 0));
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
  again.add_level(UninitVector<float>(w.centroids.begin(), w.centroids.end()), std::vector<std::int64_t>(static_cast<std::size_t>(w.b), 0));
  again.set_graph(1, 0, taxonomy::CentroidGraph::load(bytes, w.b, w.dim, Metric::kL2, taxonomy::HnswParams{}, "test"));
  std::vector<float> again_d;
  EXPECT_EQ(descend_all(again, w, &again_d), hnsw);
  EXPECT_EQ(again_d, hnsw_d);
  EXPECT_THROW(taxonomy::CentroidGraph::load(bytes, w.b + 1, w.dim, Metric::kL2, taxonomy::HnswParams{}, "test"), Error);
}

TEST(Hnsw, GraphBuildIsDeterministicOnEverySimdLevel) {
  // The pair kernels give the same bits on every level, so the graph is the same everywhere.
  const WideLevel w(19, 2500, 200, 2);  // a dim that is not a multiple of any vector width
  taxonomy::HnswParams p;
  p.ef_construction = 100;
  const std::string ref = taxonomy::CentroidGraph::build(w.centroids.data(), w.b, w.dim, Metric::kL2, p)->serialize();
  std::vector<std::int64_t> ref_labels;
  for (const kernels::SimdLevel level : kernels::supported_simd_levels()) {
    SCOPED_TRACE(kernels::simd_level_name(level));
    p.simd = level;
    auto g = taxonomy::CentroidGraph::build(w.centroids.data(), w.b, w.dim, Metric::kL2, p);
    EXPECT_EQ(g->serialize(), ref);
    std::vector<std::int64_t> labels(static_cast<std::size_t>(w.q));
    std::vector<float> d(static_cast<std::size_t>(w.q));
    g->search(w.queries.data(), w.q, labels.data(), d.data());
    if (ref_labels.empty()) ref_labels = labels;
    EXPECT_EQ(labels, ref_labels);
  }
}

TEST(Hnsw, BatchedSearchEqualsOneByOne) {
  const WideLevel w(40, 5000, 300, 3);
  std::vector<std::int64_t> first;  // the answers of the first variant
  for (const bool compact : {true, false}) for (const bool bitset : {true, false}) {
    SCOPED_TRACE(std::string(compact ? "f16 walk" : "f32 walk") + (bitset ? ", visited bitset" : ", visited hash set"));
    taxonomy::HnswParams p;
    p.compact = compact;
    p.visited_bitset_rows = bitset ? w.b : w.b - 1;
    p.ef = 20;
    auto g = taxonomy::CentroidGraph::build(w.centroids.data(), w.b, w.dim, Metric::kL2, p);
    std::vector<std::int64_t> one(static_cast<std::size_t>(w.q));
    std::vector<float> one_d(static_cast<std::size_t>(w.q));
    for (std::int64_t i = 0; i < w.q; ++i)
      g->search(w.queries.data() + i * w.dim, &one[static_cast<std::size_t>(i)], &one_d[static_cast<std::size_t>(i)]);
    // Batches of several sizes (fewer queries than in flight, not a multiple, one big one).
    for (const std::int64_t batch : {1, 3, 8, 13, 300}) {
      SCOPED_TRACE("batch " + std::to_string(batch));
      std::vector<std::int64_t> got(static_cast<std::size_t>(w.q), -1);
      std::vector<float> got_d(static_cast<std::size_t>(w.q));
      std::int64_t count = 0;
      for (std::int64_t i = 0; i < w.q; i += batch) {
        const std::int64_t n = std::min(batch, w.q - i);
        g->search(w.queries.data() + i * w.dim, n, got.data() + i, got_d.data() + i, &count);
      }
      EXPECT_EQ(got, one);
      EXPECT_EQ(got_d, one_d);
      EXPECT_GT(count, w.q * p.ef);  // at least ef distances per query
    }
    // The visited set is bookkeeping only; the f16 walk re-scored agrees with the f32 walk.
    if (first.empty()) first = one;
    if (compact) EXPECT_EQ(one, first);
    else EXPECT_GE(std::inner_product(one.begin(), one.end(), first.begin(), 0, std::plus<>(), std::equal_to<>()),
                   w.q * 99 / 100);
    // The distance reported is the exact one to the chosen centroid (f32, not the f16 walk's).
    for (std::int64_t i = 0; i < w.q; ++i) {
      const float* x = w.queries.data() + i * w.dim;
      const float* c = w.centroids.data() + one[static_cast<std::size_t>(i)] * w.dim;
      double ref = 0;
      for (std::int64_t k = 0; k < w.dim; ++k) ref += (double(x[k]) - c[k]) * (double(x[k]) - c[k]);
      EXPECT_NEAR(one_d[static_cast<std::size_t>(i)], ref, 1e-5 * ref);
    }
  }
}

TEST(Hnsw, CompactWalkIsScaleFree) {
  // f16 rows are scaled by a power of two chosen from the data: scaling the centroids and
  // the queries by 2^k changes neither the rows walked nor the answers (distances x 4^k),
  // even where the values exceed the f16 range (2^20 x N(0, 1)) or underflow it (2^-20).
  const WideLevel w(24, 6000, 400, 4);
  taxonomy::HnswParams p;
  p.ef_construction = 100;
  auto search_all = [&](float factor, std::vector<float>* d) {
    std::vector<float> c = w.centroids, x = w.queries;
    for (float& v : c) v *= factor;
    for (float& v : x) v *= factor;
    auto g = taxonomy::CentroidGraph::build(c.data(), w.b, w.dim, Metric::kL2, p);
    std::vector<std::int64_t> labels(static_cast<std::size_t>(w.q));
    d->assign(static_cast<std::size_t>(w.q), 0.f);
    g->search(x.data(), w.q, labels.data(), d->data());
    return labels;
  };
  std::vector<float> d1, d_big, d_small;
  const auto base = search_all(1.f, &d1);
  EXPECT_EQ(search_all(std::ldexp(1.f, 20), &d_big), base);
  EXPECT_EQ(search_all(std::ldexp(1.f, -20), &d_small), base);
  for (std::size_t i = 0; i < d1.size(); ++i) {
    EXPECT_EQ(d_big[i], std::ldexp(d1[i], 40));
    EXPECT_EQ(d_small[i], std::ldexp(d1[i], -40));
  }
}

TEST(Hnsw, InnerProductAgreesWithTheScan) {
  // Cosine levels search by inner product over normalised rows.
  WideLevel w(48, 20000, 2000, 5);
  auto normalise = [&](std::vector<float>* v) {
    for (std::size_t i = 0; i < v->size(); i += static_cast<std::size_t>(w.dim)) {
      double n = 0;
      for (std::int64_t k = 0; k < w.dim; ++k) n += double((*v)[i + static_cast<std::size_t>(k)]) * (*v)[i + static_cast<std::size_t>(k)];
      for (std::int64_t k = 0; k < w.dim; ++k) (*v)[i + static_cast<std::size_t>(k)] /= static_cast<float>(std::sqrt(n));
    }
  };
  normalise(&w.centroids);
  normalise(&w.queries);
  taxonomy::Tree tree(w.dim, Metric::kInnerProduct);
  tree.add_level(UninitVector<float>(w.centroids.begin(), w.centroids.end()), std::vector<std::int64_t>(static_cast<std::size_t>(w.b), 0));
  std::vector<float> flat_d, hnsw_d;
  tree.set_use_graphs(false);
  const auto flat = descend_all(tree, w, &flat_d);
  tree.build_graphs(1, 4096, taxonomy::HnswParams{}, 2);
  tree.set_use_graphs(true);
  const auto hnsw = descend_all(tree, w, &hnsw_d);
  std::int64_t agree = 0;
  for (std::int64_t i = 0; i < w.q; ++i) {
    const auto k = static_cast<std::size_t>(i);
    if (flat[k] != hnsw[k]) continue;
    ++agree;
    EXPECT_NEAR(hnsw_d[k], flat_d[k], 1e-5);  // similarities, as the scan reports them
  }
  EXPECT_GE(static_cast<double>(agree) / static_cast<double>(w.q), 0.99);
}

TEST(Hnsw, DamagedGraphsAreRefused) {
  const WideLevel w(8, 3000, 1, 6);
  const std::string good = taxonomy::CentroidGraph::build(w.centroids.data(), w.b, w.dim, Metric::kL2, {})->serialize();
  auto load = [&](const std::string& bytes, std::int64_t rows, std::int64_t dim) {
    return taxonomy::CentroidGraph::load(bytes, rows, dim, Metric::kL2, {}, "hnsw-0.bin");
  };
  EXPECT_NE(load(good, w.b, w.dim), nullptr);
  auto expect_data_loss = [&](const std::string& bytes, std::int64_t rows, std::int64_t dim, const char* why) {
    SCOPED_TRACE(why);
    try {
      load(bytes, rows, dim);
      ADD_FAILURE() << "loaded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kDataLoss) << e.what();
      EXPECT_NE(std::string(e.what()).find("hnsw-0.bin"), std::string::npos) << e.what();
    }
  };
  expect_data_loss(good, w.b - 1, w.dim, "row count");
  expect_data_loss(good, w.b, w.dim + 1, "dim");
  expect_data_loss(good.substr(0, 50), w.b, w.dim, "header cut");
  expect_data_loss(good.substr(0, good.size() / 2), w.b, w.dim, "records cut");
  expect_data_loss(std::string(good.size(), '\xff'), w.b, w.dim, "garbage");
  // A layer-0 link of node 0 past the graph (header: 96 bytes; then the count, the links).
  std::string bad_link = good;
  const std::uint32_t far = static_cast<std::uint32_t>(w.b + 7);
  std::memcpy(bad_link.data() + 96 + 4, &far, 4);
  expect_data_loss(bad_link, w.b, w.dim, "link");
  // A link count above the degree.
  std::string bad_count = good;
  const std::uint16_t many = 999;
  std::memcpy(bad_count.data() + 96, &many, 2);
  expect_data_loss(bad_count, w.b, w.dim, "count");
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
