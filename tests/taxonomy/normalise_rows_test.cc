// taxonomy::normalise_rows (cosine fits' row normalisation) against a long double reference:
// each value within one f32 rounding of v / ||v||, zero rows kept; and the same bits on any
// thread count (rows of several tasks, the row order of the tasks irrelevant).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "taxonomy/engine_impl.h"

namespace megatax::taxonomy {
namespace {

TEST(NormaliseRowsTest, UnitRowsOnAnyThreadCount) {
  std::mt19937_64 rng(std::random_device{}());
  const std::uint64_t seed = rng();
  SCOPED_TRACE("seed " + std::to_string(seed));
  rng.seed(seed);
  for (const std::int64_t d : {std::int64_t{1}, std::int64_t{7}, std::int64_t{1024}}) {
    // Several tasks of ~1M values each at d = 1024 (2,500 rows: three tasks).
    const std::int64_t n = (d == 1024 ? 2500 : 3000) + static_cast<std::int64_t>(rng() % 100);
    std::normal_distribution<float> g(0.f, 4.f);
    std::vector<float> x(static_cast<std::size_t>(n * d));
    for (auto& v : x) v = g(rng);
    const auto zero_row = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n));
    std::fill(x.begin() + zero_row * d, x.begin() + (zero_row + 1) * d, 0.f);
    std::vector<float> one = x;
    normalise_rows(one.data(), n, d, 1);
    for (std::int64_t i = 0; i < n; ++i) {
      long double s = 0;
      for (std::int64_t j = 0; j < d; ++j) s += static_cast<long double>(x[i * d + j]) * x[i * d + j];
      for (std::int64_t j = 0; j < d; ++j) {
        const float got = one[static_cast<std::size_t>(i * d + j)];
        if (s == 0) {
          ASSERT_EQ(got, 0.f) << "zero row " << i;
          continue;
        }
        const long double want = x[i * d + j] / std::sqrt(s);
        ASSERT_LE(std::fabs(static_cast<long double>(got) - want), std::fabs(want) * 1.2e-7L + 1e-30L)
            << "row " << i << " column " << j << " d " << d;
      }
    }
    for (const int threads : {2, 7}) {
      std::vector<float> many = x;
      normalise_rows(many.data(), n, d, threads);
      EXPECT_EQ(std::memcmp(many.data(), one.data(), one.size() * sizeof(float)), 0)
          << threads << " threads, d " << d;
    }
  }
}

}  // namespace
}  // namespace megatax::taxonomy
