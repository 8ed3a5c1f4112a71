// taxonomy/row_groups.h -- rows grouped by their node at the level above (descent's first
// step, shared by the CPU and CUDA descents).
//
// Thread-safety: a pure function.
#pragma once

#include <cstdint>
#include <vector>

namespace megatax::taxonomy {

struct RowGroups {
  // Rows of parent j (j = -1: rows that stopped at a leaf above) are
  // order[start[j + 1] .. start[j + 2]), in row order (a stable counting sort).
  std::vector<std::int64_t> start;  // n_parents + 2 entries
  std::vector<std::int64_t> order;  // n entries
};

// prev[i] in [-1, n_parents) for i < n.
inline RowGroups group_rows_by_parent(const std::int32_t* prev, std::int64_t n, std::int64_t n_parents) {
  RowGroups g;
  g.start.assign(static_cast<std::size_t>(n_parents + 2), 0);
  for (std::int64_t i = 0; i < n; ++i) ++g.start[static_cast<std::size_t>(std::int64_t{prev[i]} + 2)];
  for (std::int64_t j = 0; j <= n_parents; ++j)
    g.start[static_cast<std::size_t>(j + 1)] += g.start[static_cast<std::size_t>(j)];
  g.order.resize(static_cast<std::size_t>(n));
  std::vector<std::int64_t> fill(g.start.begin(), g.start.end() - 1);
  for (std::int64_t i = 0; i < n; ++i)
    g.order[static_cast<std::size_t>(fill[static_cast<std::size_t>(std::int64_t{prev[i]} + 1)]++)] = i;
  return g;
}

}  // namespace megatax::taxonomy
