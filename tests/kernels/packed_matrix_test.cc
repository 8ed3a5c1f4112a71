// PackedMatrix's row read-back: get_rows_raw against the rows appended (their values rounded
// by the dtype's scalar conversion) and against get_row_raw, over odd dims, ranges that start
// and end inside panels, and ranges large enough to be split into parallel tasks.
#include "kernels/cpu/packed_matrix.h"

#include "megatax/dtype.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace megatax::kernels {
namespace {

// The raw bits dtype stores for v (f32: v itself).
std::vector<unsigned char> expected_raw(const std::vector<float>& v, DType t) {
  std::vector<unsigned char> out(v.size() * dtype_size(t));
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (t == DType::kF32) {
      std::memcpy(out.data() + 4 * i, &v[i], 4);
    } else {
      const std::uint16_t h = t == DType::kF16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

TEST(PackedMatrix, GetRowsRawEqualsTheRowsAppended) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (std::int64_t d : {1, 2, 3, 17, 64, 129, 1024}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " d=" + std::to_string(d));
      // Enough rows at d = 1024 for several 1 MiB tasks; appended in two pieces so the
      // second starts inside a panel.
      const std::int64_t n = d >= 1024 ? 3000 : 1237;
      std::vector<float> x(static_cast<std::size_t>(n * d));
      for (float& v : x) v = nd(rng);
      PackedMatrix m(d, t);
      const std::int64_t split = 333;
      m.append(f32_view(x.data(), split, d));
      m.append(f32_view(x.data() + split * d, n - split, d));
      ASSERT_EQ(m.rows(), n);
      const std::vector<unsigned char> want = expected_raw(x, t);
      const std::size_t row_bytes = static_cast<std::size_t>(d) * dtype_size(t);
      std::uniform_int_distribution<std::int64_t> pick(0, n);
      std::vector<std::pair<std::int64_t, std::int64_t>> ranges = {{0, n}, {0, 1}, {n - 1, 1}, {15, 2}, {16, 16}, {5, 0}};
      for (int r = 0; r < 6; ++r) {
        std::int64_t a = pick(rng), b = pick(rng);
        if (a > b) std::swap(a, b);
        ranges.emplace_back(a, b - a);
      }
      for (auto [first, count] : ranges) {
        SCOPED_TRACE("rows [" + std::to_string(first) + ", " + std::to_string(first + count) + ")");
        // One guard byte past the range: nothing is written beyond it.
        std::vector<unsigned char> got(static_cast<std::size_t>(count) * row_bytes + 1, 0xA5);
        m.get_rows_raw(first, count, got.data());
        ASSERT_EQ(got.back(), 0xA5);
        ASSERT_EQ(std::memcmp(got.data(), want.data() + static_cast<std::size_t>(first) * row_bytes,
                              static_cast<std::size_t>(count) * row_bytes),
                  0);
        std::vector<unsigned char> one(row_bytes);
        for (std::int64_t i = 0; i < count; i += std::max<std::int64_t>(1, count / 7)) {
          m.get_row_raw(first + i, one.data());
          ASSERT_EQ(std::memcmp(one.data(), got.data() + static_cast<std::size_t>(i) * row_bytes, row_bytes), 0);
        }
      }
    }
  }
}

// Appends of random sizes (whole panels, rows into a panel begun earlier, growth of the
// buffer): the stored rows, the norms (float64 sums of the stored values' squares in
// dimension order) and the zeros the kernels rely on (dims past dim(), rows past rows() in
// the last panel).
TEST(PackedMatrix, ManyAppendsKeepRowsNormsAndZeroPadding) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (std::int64_t d : {1, 5, 96, 1023}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " d=" + std::to_string(d));
      PackedMatrix m(d, t);
      std::vector<float> all;
      std::uniform_int_distribution<std::int64_t> size(1, d > 100 ? 700 : 90);
      for (int a = 0; a < 12; ++a) {
        const std::int64_t n = size(rng);
        std::vector<float> x(static_cast<std::size_t>(n * d));
        for (float& v : x) v = nd(rng);
        m.append(f32_view(x.data(), n, d));
        all.insert(all.end(), x.begin(), x.end());
      }
      const std::int64_t n = m.rows();
      ASSERT_EQ(static_cast<std::size_t>(n * d), all.size());
      const std::size_t row_bytes = static_cast<std::size_t>(d) * dtype_size(t);
      std::vector<unsigned char> got(static_cast<std::size_t>(n) * row_bytes);
      m.get_rows_raw(0, n, got.data());
      ASSERT_EQ(got, expected_raw(all, t));
      std::vector<float> row(static_cast<std::size_t>(d));
      for (std::int64_t i = 0; i < n; ++i) {
        m.get_row_f32(i, row.data());
        double norm = 0;
        for (float v : row) norm += static_cast<double>(v) * v;
        ASSERT_EQ(m.norms()[i], static_cast<float>(norm)) << "row " << i;
      }
      // Padding: every byte of the panels that is not a stored value is zero.
      const std::size_t es = dtype_size(t);
      for (std::int64_t p = 0; p < m.panels(); ++p) {
        const auto* bytes = static_cast<const unsigned char*>(m.panel(p));
        for (std::int64_t r = 0; r < kPanelRows; ++r) {
          for (std::int64_t k = 0; k < m.dim_padded(); ++k) {
            if (p * kPanelRows + r < n && k < d) continue;
            const std::size_t at = t == DType::kBF16
                                       ? static_cast<std::size_t>((k / 2) * 2 * kPanelRows + r * 2 + (k & 1))
                                       : static_cast<std::size_t>(k * kPanelRows + r);
            for (std::size_t b = 0; b < es; ++b)
              ASSERT_EQ(bytes[at * es + b], 0) << "panel " << p << " row " << r << " dim " << k;
          }
        }
        if (p * kPanelRows + kPanelRows > n) {
          for (std::int64_t r = n - p * kPanelRows; r < kPanelRows; ++r) ASSERT_EQ(m.norms()[p * kPanelRows + r], 0.0f);
        }
      }
    }
  }
}

}  // namespace
}  // namespace megatax::kernels
