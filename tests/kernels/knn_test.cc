// knn_search against a float64 brute force, and invariance to threads and SIMD level.
#include "kernels/cpu/knn.h"

#include "megatax/error.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace megatax::kernels {
namespace {

std::vector<float> random_matrix(std::mt19937_64& rng, std::int64_t n, std::int64_t d) {
  std::normal_distribution<float> nd;
  std::vector<float> x(static_cast<std::size_t>(n * d));
  for (auto& v : x) v = nd(rng);
  return x;
}

// Large enough (> 2 x 512 panels) that the scan is split into database ranges.
TEST(Knn, SameResultsForAnyThreadCountAndLevel) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
#if defined(__aarch64__)
  const std::int64_t n = 17000, d = 5;
#else
  const std::int64_t n = 40000, d = 9;
#endif
  const std::int64_t nq = 3, k = 20;
  auto xb = random_matrix(rng, n, d);
  auto xq = random_matrix(rng, nq, d);
  // Duplicate a block of rows so equal distances occur across range boundaries.
  std::copy(xb.begin(), xb.begin() + 100 * d, xb.begin() + (n - 100) * d);
  PackedMatrix db(d, DType::kF32);
  db.append(f32_view(xb.data(), n, d));

  std::vector<float> ref_d;
  std::vector<std::int64_t> ref_i;
  for (SimdLevel level : supported_simd_levels()) {
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE(std::string(simd_level_name(level)) + " threads " + std::to_string(threads));
      std::vector<float> dist(nq * k);
      std::vector<std::int64_t> ids(nq * k);
      KnnOptions opt;
      opt.threads = threads;
      opt.simd = level;
      knn_search(f32_view(xq.data(), nq, d), db, k, Metric::kL2, dist.data(), ids.data(), opt);
      if (ref_i.empty()) {
        ref_d = dist;
        ref_i = ids;
        // Check the first result set against float64 brute force.
        for (std::int64_t q = 0; q < nq; ++q) {
          std::vector<std::pair<double, std::int64_t>> all;
          for (std::int64_t j = 0; j < n; ++j) {
            double s = 0;
            for (std::int64_t t = 0; t < d; ++t) {
              const double diff = double(xq[q * d + t]) - xb[j * d + t];
              s += diff * diff;
            }
            all.emplace_back(s, j);
          }
          std::sort(all.begin(), all.end());
          for (std::int64_t j = 0; j < k; ++j) {
            const double tol = 1e-4 * (1 + all[j].first);
            EXPECT_NEAR(dist[q * k + j], all[j].first, tol);
            EXPECT_LE(all[j].first, all[k - 1].first + tol);
          }
        }
      } else {
        EXPECT_EQ(ids, ref_i);
        EXPECT_EQ(dist, ref_d);
      }
    }
  }
}

TEST(Knn, NearestIsTopOne) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::int64_t n = 1000, d = 33, nq = 50;
  auto xb = random_matrix(rng, n, d);
  auto xq = random_matrix(rng, nq, d);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (Metric metric : {Metric::kL2, Metric::kInnerProduct}) {
      PackedMatrix db(d, dtype);
      db.append(f32_view(xb.data(), n, d));
      std::vector<std::int64_t> labels(nq), ids(nq);
      std::vector<float> dist(nq), dist1(nq);
      nearest(f32_view(xq.data(), nq, d), db, metric, labels.data(), dist.data());
      knn_search(f32_view(xq.data(), nq, d), db, 1, metric, dist1.data(), ids.data());
      EXPECT_EQ(labels, ids);
      EXPECT_EQ(dist, dist1);
    }
  }
}

TEST(Knn, EmptyDatabaseAndErrors) {
  PackedMatrix db(4, DType::kF32);
  float q[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  float dist[6];
  std::int64_t ids[6];
  knn_search(f32_view(q, 2, 4), db, 3, Metric::kL2, dist, ids);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(ids[i], -1);
  EXPECT_THROW(knn_search(f32_view(q, 2, 4), db, 0, Metric::kL2, dist, ids), Error);
  EXPECT_THROW(knn_search(f32_view(q, 1, 8), db, 1, Metric::kL2, dist, ids), Error);
}

}  // namespace
}  // namespace megatax::kernels
