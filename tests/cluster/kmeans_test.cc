// k-means against independent recomputation in float64 and planted clusters.
#include "cluster/kmeans.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "megatax/error.h"

namespace megatax::cluster {
namespace {

struct Blobs {
  std::vector<float> x;
  std::vector<int> truth;
};

Blobs make_blobs(std::mt19937_64& rng, std::int64_t n, std::int64_t d, int k, float spread) {
  std::normal_distribution<float> nd;
  std::vector<float> centers(static_cast<std::size_t>(k * d));
  for (auto& v : centers) v = nd(rng) * 10.f;
  Blobs b;
  b.x.resize(static_cast<std::size_t>(n * d));
  b.truth.resize(static_cast<std::size_t>(n));
  std::uniform_int_distribution<int> pick(0, k - 1);
  for (std::int64_t i = 0; i < n; ++i) {
    const int c = pick(rng);
    b.truth[i] = c;
    for (std::int64_t j = 0; j < d; ++j) b.x[i * d + j] = centers[c * d + j] + spread * nd(rng);
  }
  return b;
}

KMeansResult run(const std::vector<float>& x, std::int64_t n, std::int64_t d, std::int64_t k,
                 std::uint64_t seed, int threads, int max_iter = 25) {
  KMeansParams p;
  p.k = k;
  p.seed = seed;
  p.max_iter = max_iter;
  p.tol = 1e-7;
  p.threads = threads;
  kernels::KnnOptions opt;
  opt.threads = threads;
  CpuAssigner assigner(Metric::kL2, opt);
  return fit_kmeans(f32_view(x.data(), n, d), p, assigner);
}

TEST(KMeans, InertiaNonIncreasingAndMatchesFloat64Recomputation) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::int64_t n = 3000, d = 24, k = 40;
  auto blobs = make_blobs(rng, n, d, 25, 4.f);  // overlapping: many iterations
  const auto r = run(blobs.x, n, d, k, seed, 2);
  ASSERT_GE(r.inertia.size(), 2u);
  for (std::size_t i = 1; i < r.inertia.size(); ++i)
    EXPECT_LE(r.inertia[i], r.inertia[i - 1] * (1 + 1e-6)) << "iteration " << i;
  // Recompute in float64: every point's distance to its centroid, and that no other
  // centroid is nearer (beyond float rounding).
  double inertia = 0;
  std::vector<std::int64_t> counts(k, 0);
  for (std::int64_t i = 0; i < n; ++i) {
    double best = INFINITY;
    std::vector<double> dc(k);
    for (std::int64_t c = 0; c < k; ++c) {
      double s = 0;
      for (std::int64_t j = 0; j < d; ++j) {
        const double t = double(blobs.x[i * d + j]) - r.centroids[c * d + j];
        s += t * t;
      }
      dc[c] = s;
      best = std::min(best, s);
    }
    const std::int64_t l = r.labels[i];
    ++counts[l];
    inertia += dc[l];
    EXPECT_LE(dc[l], best + 1e-4 * (1 + best)) << "point " << i;
  }
  EXPECT_NEAR(r.inertia.back(), inertia, 1e-5 * inertia);
  for (std::int64_t c = 0; c < k; ++c) EXPECT_EQ(counts[c], r.counts[c]);
}

TEST(KMeans, RecoversWellSeparatedBlobs) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::int64_t n = 4000, d = 16;
  const int k = 8;
  auto blobs = make_blobs(rng, n, d, k, 0.05f);
  const auto r = run(blobs.x, n, d, k, seed, 2);
  // Each true cluster maps to exactly one label and vice versa.
  std::map<int, std::int64_t> label_of;
  std::map<std::int64_t, int> truth_of;
  for (std::int64_t i = 0; i < n; ++i) {
    auto [it, fresh] = label_of.emplace(blobs.truth[i], r.labels[i]);
    EXPECT_EQ(it->second, r.labels[i]) << "point " << i;
    auto [jt, fresh2] = truth_of.emplace(r.labels[i], blobs.truth[i]);
    EXPECT_EQ(jt->second, blobs.truth[i]) << "point " << i;
  }
}

TEST(KMeans, DeterministicAcrossThreadCounts) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::int64_t n = 5000, d = 20, k = 30;
  auto blobs = make_blobs(rng, n, d, 20, 3.f);
  const auto a = run(blobs.x, n, d, k, 7, 1, 8);
  const auto b = run(blobs.x, n, d, k, 7, 2, 8);
  EXPECT_EQ(a.centroids, b.centroids);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.inertia, b.inertia);
  const auto c = run(blobs.x, n, d, k, 8, 2, 8);
  EXPECT_NE(a.centroids, c.centroids);  // the seed matters
}

TEST(KMeans, KEqualsNAndDuplicates) {
  // k == n distinct points: zero inertia. Then all points equal: seeding must still
  // produce k centroids and Lloyd must not divide by zero.
  std::vector<float> x = {0, 0, 1, 0, 0, 1, 5, 5};
  auto r = run(x, 4, 2, 4, 1, 1);
  EXPECT_EQ(r.inertia.back(), 0.0);
  std::vector<float> same(20 * 3, 2.5f);
  r = run(same, 20, 3, 5, 1, 2);
  EXPECT_EQ(r.inertia.back(), 0.0);
  for (float v : r.centroids) EXPECT_EQ(v, 2.5f);
}

TEST(KMeans, FewerPointsThanKIsAClearError) {
  std::vector<float> x(10 * 4, 1.f);
  try {
    run(x, 10, 4, 11, 1, 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("10 points are fewer than k = 11"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace megatax::cluster
