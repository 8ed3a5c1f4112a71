// Tests of index/flat_shards.h: the rows dealt to shards (each row in exactly one shard, in
// increasing order) and the merge of the shards' top-k against a brute-force top-k of the
// whole set, with many equal distances (ties go to the smaller id) and k > rows.
#include "index/flat_shards.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

namespace megatax::index {
namespace {

std::mt19937_64 fresh_rng() {
  const auto seed = std::random_device{}();
  std::printf("flat_shards_test seed %u\n", seed);
  return std::mt19937_64(seed);
}

TEST(FlatShards, EveryRowInOneShardInOrder) {
  auto rng = fresh_rng();
  for (int shards = 1; shards <= 5; ++shards) {
    for (std::int64_t block : {1, 3, 7, 64}) {
      const FlatShards layout{shards, block};
      for (std::int64_t n : {std::int64_t{0}, std::int64_t{1}, block - 1, block, block + 1,
                             shards * block, shards * block + 2,
                             std::uniform_int_distribution<std::int64_t>(0, 500)(rng)}) {
        if (n < 0) continue;
        std::vector<int> seen(static_cast<std::size_t>(n), 0);
        std::int64_t total = 0;
        for (int s = 0; s < shards; ++s) {
          const std::int64_t rows = layout.rows_of(s, n);
          total += rows;
          std::int64_t last = -1;
          for (std::int64_t j = 0; j < rows; ++j) {
            const std::int64_t g = layout.global_row(s, j);
            ASSERT_GE(g, 0);
            ASSERT_LT(g, n) << "shards " << shards << " block " << block << " shard " << s;
            ASSERT_GT(g, last) << "a shard's rows must map to increasing ids";
            last = g;
            ++seen[static_cast<std::size_t>(g)];
            // The row's block is dealt to this shard.
            ASSERT_EQ((g / block) % shards, s);
          }
        }
        EXPECT_EQ(total, n);
        for (std::int64_t g = 0; g < n; ++g) ASSERT_EQ(seen[static_cast<std::size_t>(g)], 1) << "row " << g;
      }
      // Appending rows never moves one: a shard's rows at n are a prefix of its rows at n + m.
      for (int s = 0; s < shards; ++s) {
        std::int64_t prev = 0;
        for (std::int64_t n = 0; n < 4 * shards * block + 3; ++n) {
          const std::int64_t rows = layout.rows_of(s, n);
          ASSERT_GE(rows, prev);
          ASSERT_LE(rows - prev, 1);
          prev = rows;
        }
      }
    }
  }
}

struct Hit {
  float d;
  std::int64_t id;
};

// The k best of hits (nearer first, ties to the smaller id), -1 / +-inf padded.
void top_k(std::vector<Hit> hits, std::int64_t k, Metric metric, float* d, std::int64_t* ids) {
  const bool l2 = metric == Metric::kL2;
  std::sort(hits.begin(), hits.end(), [&](const Hit& a, const Hit& b) {
    if (a.d != b.d) return l2 ? a.d < b.d : a.d > b.d;
    return a.id < b.id;
  });
  for (std::int64_t j = 0; j < k; ++j) {
    if (j < static_cast<std::int64_t>(hits.size())) {
      d[j] = hits[static_cast<std::size_t>(j)].d;
      ids[j] = hits[static_cast<std::size_t>(j)].id;
    } else {
      d[j] = l2 ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity();
      ids[j] = -1;
    }
  }
}

TEST(FlatShards, MergeEqualsTheWholeSetsTopK) {
  auto rng = fresh_rng();
  for (const Metric metric : {Metric::kL2, Metric::kInnerProduct}) {
    for (int trial = 0; trial < 40; ++trial) {
      const int shards = std::uniform_int_distribution<int>(1, 4)(rng);
      const std::int64_t block = std::uniform_int_distribution<std::int64_t>(1, 9)(rng);
      const std::int64_t n = std::uniform_int_distribution<std::int64_t>(0, 120)(rng);
      const std::int64_t q = 7;
      const std::int64_t k = std::uniform_int_distribution<std::int64_t>(1, 140)(rng);
      const FlatShards layout{shards, block};
      // Distances from a few values only: many ties across shards.
      std::uniform_int_distribution<int> level(0, 6);
      std::vector<float> all(static_cast<std::size_t>(q * n));
      for (auto& v : all) v = 0.25f * static_cast<float>(level(rng)) - (metric == Metric::kL2 ? 0.f : 0.5f);
      std::vector<std::vector<float>> sd(static_cast<std::size_t>(shards));
      std::vector<std::vector<std::int64_t>> si(static_cast<std::size_t>(shards));
      std::vector<ShardResults> parts;
      for (int s = 0; s < shards; ++s) {
        auto& d = sd[static_cast<std::size_t>(s)];
        auto& ids = si[static_cast<std::size_t>(s)];
        d.resize(static_cast<std::size_t>(q * k));
        ids.resize(static_cast<std::size_t>(q * k));
        for (std::int64_t i = 0; i < q; ++i) {
          std::vector<Hit> hits;
          for (std::int64_t j = 0; j < layout.rows_of(s, n); ++j) {
            const std::int64_t g = layout.global_row(s, j);
            hits.push_back({all[static_cast<std::size_t>(i * n + g)], g});
          }
          top_k(hits, k, metric, d.data() + i * k, ids.data() + i * k);
        }
        parts.push_back({d.data(), ids.data()});
      }
      std::vector<float> got_d(static_cast<std::size_t>(q * k)), want_d(got_d.size());
      std::vector<std::int64_t> got_i(got_d.size()), want_i(got_d.size());
      merge_shard_results(parts, q, k, metric, got_d.data(), got_i.data());
      for (std::int64_t i = 0; i < q; ++i) {
        std::vector<Hit> hits;
        for (std::int64_t g = 0; g < n; ++g) hits.push_back({all[static_cast<std::size_t>(i * n + g)], g});
        top_k(hits, k, metric, want_d.data() + i * k, want_i.data() + i * k);
      }
      ASSERT_EQ(got_i, want_i) << "shards " << shards << " block " << block << " n " << n << " k " << k;
      ASSERT_EQ(got_d, want_d);
    }
  }
}

TEST(FlatShards, MergeOnManyThreadsEqualsOneThreadAndTheWholeSet) {
  auto rng = fresh_rng();
  const std::int64_t q = 5000, k = 30, n = 200;
  const FlatShards layout{3, 16};
  std::uniform_int_distribution<int> level(0, 40);
  std::vector<float> all(static_cast<std::size_t>(q * n));
  for (auto& v : all) v = static_cast<float>(level(rng));
  std::vector<std::vector<float>> sd(3, std::vector<float>(static_cast<std::size_t>(q * k)));
  std::vector<std::vector<std::int64_t>> si(3, std::vector<std::int64_t>(static_cast<std::size_t>(q * k)));
  std::vector<ShardResults> parts;
  for (int s = 0; s < 3; ++s) {
    for (std::int64_t i = 0; i < q; ++i) {
      std::vector<Hit> hits;
      for (std::int64_t j = 0; j < layout.rows_of(s, n); ++j) {
        const std::int64_t g = layout.global_row(s, j);
        hits.push_back({all[static_cast<std::size_t>(i * n + g)], g});
      }
      top_k(hits, k, Metric::kL2, sd[static_cast<std::size_t>(s)].data() + i * k,
            si[static_cast<std::size_t>(s)].data() + i * k);
    }
    parts.push_back({sd[static_cast<std::size_t>(s)].data(), si[static_cast<std::size_t>(s)].data()});
  }
  std::vector<float> d1(static_cast<std::size_t>(q * k)), d4(d1.size()), want_d(d1.size());
  std::vector<std::int64_t> i1(d1.size()), i4(d1.size()), want_i(d1.size());
  merge_shard_results(parts, q, k, Metric::kL2, d1.data(), i1.data(), 1);
  merge_shard_results(parts, q, k, Metric::kL2, d4.data(), i4.data(), 4);
  for (std::int64_t i = 0; i < q; ++i) {
    std::vector<Hit> hits;
    for (std::int64_t g = 0; g < n; ++g) hits.push_back({all[static_cast<std::size_t>(i * n + g)], g});
    top_k(hits, k, Metric::kL2, want_d.data() + i * k, want_i.data() + i * k);
  }
  EXPECT_EQ(i4, i1);
  EXPECT_EQ(d4, d1);
  EXPECT_EQ(i1, want_i);
  EXPECT_EQ(d1, want_d);
}

}  // namespace
}  // namespace megatax::index
