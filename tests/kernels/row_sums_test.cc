// add_row_f64 on every SIMD level of this CPU: bit-identical to the scalar loop, and equal to
// a float64 reference summed in row order, on fresh random rows of every length 1..300.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/row_sums.h"

namespace megatax::kernels {
namespace {

TEST(RowSums, EveryLevelMatchesTheFloat64Reference) {
  std::mt19937_64 rng(std::random_device{}());
  std::normal_distribution<float> g(0.f, 3.f);
  for (SimdLevel level : supported_simd_levels()) {
    const AddRowF64Fn fn = add_row_f64_kernel(level);
    for (std::int64_t d = 1; d <= 300; ++d) {
      const int rows = 1 + static_cast<int>(d % 7);
      std::vector<float> x(static_cast<std::size_t>(rows * d) + 1);  // +1: a guard after the last row
      for (auto& v : x) v = g(rng);
      std::vector<double> sum(static_cast<std::size_t>(d) + 1, 0.5), ref(static_cast<std::size_t>(d) + 1, 0.5);
      sum[static_cast<std::size_t>(d)] = ref[static_cast<std::size_t>(d)] = 7.25;  // must stay untouched
      for (int r = 0; r < rows; ++r) {
        fn(x.data() + r * d, sum.data(), d);
        for (std::int64_t j = 0; j < d; ++j) ref[static_cast<std::size_t>(j)] += static_cast<double>(x[static_cast<std::size_t>(r * d + j)]);
      }
      ASSERT_EQ(0, std::memcmp(sum.data(), ref.data(), sum.size() * sizeof(double)))
          << simd_level_name(level) << " d=" << d;
    }
  }
  // The dispatched entry point agrees too.
  std::vector<float> row(1000);
  for (auto& v : row) v = g(rng);
  std::vector<double> a(1000, 0.0), b(1000, 0.0);
  add_row_f64(row.data(), a.data(), 1000);
  add_row_f64_scalar(row.data(), b.data(), 1000);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(double)));
}

}  // namespace
}  // namespace megatax::kernels
