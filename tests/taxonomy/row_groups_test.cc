// group_rows_by_parent against a stable sort of the rows by parent: the same starts and
// order on any thread count (the parallel form counts and places slices of rows).
#include "taxonomy/row_groups.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

namespace megatax::taxonomy {
namespace {

TEST(RowGroupsTest, MatchesAStableSortOnAnyThreadCount) {
  std::mt19937_64 rng(std::random_device{}());
  const std::uint64_t seed = rng();
  SCOPED_TRACE("seed " + std::to_string(seed));
  rng.seed(seed);
  struct Case {
    std::int64_t n, parents;
  };
  for (const Case c : {Case{0, 3}, Case{1, 1}, Case{1000, 7}, Case{300000, 1}, Case{400000, 100},
                       Case{500000, 9000}, Case{200000, 100000}}) {
    const std::int64_t n = c.n + static_cast<std::int64_t>(rng() % 1000);
    std::vector<std::int32_t> prev(static_cast<std::size_t>(n));
    // Skewed parents (a few large groups), some rows at a leaf above (-1), some parents empty.
    std::uniform_int_distribution<std::int64_t> any(0, c.parents - 1), hot(0, std::min<std::int64_t>(c.parents, 5) - 1);
    for (auto& p : prev) {
      const std::uint64_t r = rng() % 10;
      p = static_cast<std::int32_t>(r == 0 ? -1 : (r < 4 ? hot(rng) : any(rng)));
    }
    std::vector<std::int64_t> ref(static_cast<std::size_t>(n));
    std::iota(ref.begin(), ref.end(), 0);
    std::stable_sort(ref.begin(), ref.end(), [&](std::int64_t a, std::int64_t b) { return prev[a] < prev[b]; });
    std::vector<std::int64_t> ref_start(static_cast<std::size_t>(c.parents + 2), 0);
    for (const auto p : prev) ++ref_start[static_cast<std::size_t>(p + 2)];
    for (std::size_t j = 1; j < ref_start.size(); ++j) ref_start[j] += ref_start[j - 1];
    for (const int threads : {1, 2, 3, 7, 0}) {
      const RowGroups g = group_rows_by_parent(prev.data(), n, c.parents, threads);
      EXPECT_EQ(g.start, ref_start) << "n " << n << ", parents " << c.parents << ", threads " << threads;
      EXPECT_EQ(g.order, ref) << "n " << n << ", parents " << c.parents << ", threads " << threads;
    }
  }
}

// sort_node_ids against std::sort: unique ids drawn from levels of 1 to 5M nodes (one, two
// and three radix passes), including the extremes 0 and limit - 1.
TEST(RowGroupsTest, NodeIdRadixSortMatchesStdSort) {
  std::mt19937_64 rng(std::random_device{}());
  const std::uint64_t seed = rng();
  SCOPED_TRACE("seed " + std::to_string(seed));
  rng.seed(seed);
  std::vector<std::int32_t> tmp;
  for (const std::int64_t limit : {1, 2, 2048, 2049, 725700, 4194304, 5000000}) {
    for (const std::int64_t want : {0, 1, 1000, 100000}) {
      std::vector<std::int32_t> ids;
      if (want > 0) ids = {0, static_cast<std::int32_t>(limit - 1)};
      std::uniform_int_distribution<std::int64_t> any(0, limit - 1);
      while (static_cast<std::int64_t>(ids.size()) < std::min(want, limit)) ids.push_back(static_cast<std::int32_t>(any(rng)));
      std::sort(ids.begin(), ids.end());
      ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
      std::vector<std::int32_t> ref = ids;
      std::shuffle(ids.begin(), ids.end(), rng);
      sort_node_ids(ids, limit, tmp);
      EXPECT_EQ(ids, ref) << "limit " << limit << ", " << ref.size() << " ids";
    }
  }
}

}  // namespace
}  // namespace megatax::taxonomy
