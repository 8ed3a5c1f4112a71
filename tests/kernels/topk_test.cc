// TopK against an independent reference: sort every (distance, id) pair, keep the first k.
#include "kernels/cpu/topk.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace megatax::kernels {
namespace {

struct Pair {
  float d;
  std::int64_t id;
};

std::vector<Pair> reference(const std::vector<float>& row, std::int64_t k) {
  std::vector<Pair> all;
  for (std::size_t j = 0; j < row.size(); ++j)
    if (!std::isnan(row[j])) all.push_back({row[j], static_cast<std::int64_t>(j)});
  std::sort(all.begin(), all.end(),
            [](const Pair& a, const Pair& b) { return a.d < b.d || (a.d == b.d && a.id < b.id); });
  if (static_cast<std::int64_t>(all.size()) > k) all.resize(static_cast<std::size_t>(k));
  return all;
}

// Streams `dist` (nq x n) through `topk` in blocks of `block_panels` panels, building the
// masks the way a kernel does (d < threshold at block start).
void stream(TopK& topk, const std::vector<float>& dist, std::int64_t nq, std::int64_t n,
            std::int64_t first, std::int64_t last, std::int64_t block_panels) {
  const std::int64_t ld = 16 * block_panels;
  std::vector<float> buf(static_cast<std::size_t>(nq * ld));
  std::vector<std::uint16_t> masks(static_cast<std::size_t>(nq * block_panels));
  for (std::int64_t j0 = first; j0 < last; j0 += ld) {
    const std::int64_t cols = std::min(ld, last - j0);
    const std::int64_t np = (cols + 15) / 16;
    for (std::int64_t q = 0; q < nq; ++q) {
      for (std::int64_t p = 0; p < np; ++p) {
        std::uint16_t m = 0;
        for (std::int64_t r = 0; r < 16; ++r) {
          const std::int64_t j = 16 * p + r;
          // Past the valid columns: garbage that must be ignored.
          const float v = j < cols ? dist[static_cast<std::size_t>(q * n + j0 + j)] : -1e30f;
          buf[static_cast<std::size_t>(q * ld + j)] = v;
          if (v < topk.thresholds()[q]) m = static_cast<std::uint16_t>(m | (1u << r));
        }
        masks[static_cast<std::size_t>(q * block_panels + p)] = m;
      }
    }
    topk.add_block(buf.data(), ld, masks.data(), block_panels, np, j0, cols);
  }
}

void expect_matches(const TopK& topk, const std::vector<float>& dist, std::int64_t nq,
                    std::int64_t n, std::int64_t k) {
  std::vector<float> d(static_cast<std::size_t>(nq * k));
  std::vector<std::int64_t> ids(static_cast<std::size_t>(nq * k));
  topk.finish(d.data(), ids.data(), k, false);
  for (std::int64_t q = 0; q < nq; ++q) {
    std::vector<float> row(dist.begin() + q * n, dist.begin() + (q + 1) * n);
    const auto ref = reference(row, k);
    for (std::int64_t j = 0; j < k; ++j) {
      const auto idx = static_cast<std::size_t>(q * k + j);
      if (j < static_cast<std::int64_t>(ref.size())) {
        ASSERT_EQ(ids[idx], ref[static_cast<std::size_t>(j)].id) << "query " << q << " rank " << j;
        ASSERT_EQ(d[idx], ref[static_cast<std::size_t>(j)].d);
      } else {
        ASSERT_EQ(ids[idx], -1);
        ASSERT_EQ(d[idx], std::numeric_limits<float>::infinity());
      }
    }
  }
}

TEST(TopK, MatchesSortReferenceWithTiesAndNaN) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (std::int64_t n : {1, 15, 16, 17, 300, 1000}) {
    for (std::int64_t k : {1, 2, 10, 100, 1000, 1500}) {
      const std::int64_t nq = 3;
      std::vector<float> dist(static_cast<std::size_t>(nq * n));
      // Few distinct values -> many ties; a few NaNs that must never be returned.
      std::uniform_int_distribution<int> level(0, 20);
      for (auto& v : dist) v = static_cast<float>(level(rng)) * 0.5f;
      dist[static_cast<std::size_t>(n / 2)] = std::numeric_limits<float>::quiet_NaN();
      TopK topk(nq, k);
      stream(topk, dist, nq, n, 0, n, 3);
      expect_matches(topk, dist, nq, n, k);
    }
  }
}

TEST(TopK, MergeOfRangesEqualsOneScan) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> level(0, 50);
  const std::int64_t nq = 4, n = 777;
  for (std::int64_t k : {1, 7, 64, 777}) {
    std::vector<float> dist(static_cast<std::size_t>(nq * n));
    for (auto& v : dist) v = static_cast<float>(level(rng));
    // Three ranges on panel boundaries, merged in a scrambled order.
    TopK a(nq, k), b(nq, k), c(nq, k);
    stream(a, dist, nq, n, 0, 256, 2);
    stream(b, dist, nq, n, 256, 512, 4);
    stream(c, dist, nq, n, 512, n, 1);
    c.merge(a);
    c.merge(b);
    expect_matches(c, dist, nq, n, k);
  }
}

TEST(TopK, FinishNegatesForInnerProduct) {
  TopK topk(1, 3);
  std::vector<float> d(16, 5.f);
  d[3] = -7.f;  // -<q,x> : similarity 7 is the best
  d[9] = -2.f;
  std::vector<std::uint16_t> m{0xFFFF};
  topk.add_block(d.data(), 16, m.data(), 1, 1, 100, 16);
  float out_d[3];
  std::int64_t out_i[3];
  topk.finish(out_d, out_i, 3, true);
  EXPECT_EQ(out_i[0], 103);
  EXPECT_EQ(out_d[0], 7.f);
  EXPECT_EQ(out_i[1], 109);
  EXPECT_EQ(out_d[1], 2.f);
  EXPECT_EQ(out_i[2], 100);  // ties at 5: smallest id
  EXPECT_EQ(out_d[2], -5.f);
}

}  // namespace
}  // namespace megatax::kernels
