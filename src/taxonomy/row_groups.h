// taxonomy/row_groups.h -- rows grouped by their node at the level above (descent's first
// step, shared by the CPU and CUDA descents), and node ids sorted (a pass's shard summaries).
//
// Thread-safety: a pure function (it may run its own threads).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "core/parallel.h"

namespace megatax::taxonomy {

struct RowGroups {
  // Rows of parent j (j = -1: rows that stopped at a leaf above) are
  // order[start[j + 1] .. start[j + 2]), in row order (a stable counting sort).
  std::vector<std::int64_t> start;  // n_parents + 2 entries
  std::vector<std::int64_t> order;  // n entries
};

// prev[i] in [-1, n_parents) for i < n. On up to `threads` threads (0: all; 1: this one),
// `pool`'s when given (kept threads: a descent groups every batch), else started for the
// call: the same groups and order whatever the count (slices of rows counted and placed in
// row order, each slice's rows of a parent after the earlier slices').
inline RowGroups group_rows_by_parent(const std::int32_t* prev, std::int64_t n, std::int64_t n_parents,
                                      int threads = 1, WorkerPool* pool = nullptr) {
  RowGroups g;
  const auto slots = static_cast<std::size_t>(n_parents + 1);  // slot = parent + 1
  g.start.assign(slots + 1, 0);
  g.order.resize(static_cast<std::size_t>(n));
  // Slices of at least 16K rows, and no more than leave each slice's counts (one per
  // parent) small beside its rows.
  const std::int64_t by_rows = n / 16384, by_parents = n / (4 * (n_parents + 1));
  const int T = resolve_threads(threads, std::max<std::int64_t>(1, std::min(by_rows, by_parents)));
  if (T <= 1) {
    for (std::int64_t i = 0; i < n; ++i) ++g.start[static_cast<std::size_t>(std::int64_t{prev[i]} + 2)];
    for (std::size_t j = 1; j <= slots; ++j) g.start[j] += g.start[j - 1];
    std::vector<std::int64_t> fill(g.start.begin(), g.start.end() - 1);
    for (std::int64_t i = 0; i < n; ++i)
      g.order[static_cast<std::size_t>(fill[static_cast<std::size_t>(std::int64_t{prev[i]} + 1)]++)] = i;
    return g;
  }
  auto run = [&](const std::function<void(std::int64_t, int)>& fn) {
    if (pool != nullptr) {
      pool->run(T, fn);
    } else {
      parallel_for(T, T, fn);
    }
  };
  std::vector<std::vector<std::int64_t>> at(static_cast<std::size_t>(T), std::vector<std::int64_t>(slots, 0));
  run([&](std::int64_t t, int) {
    auto& c = at[static_cast<std::size_t>(t)];
    for (std::int64_t i = n * t / T; i < n * (t + 1) / T; ++i) ++c[static_cast<std::size_t>(std::int64_t{prev[i]} + 1)];
  });
  // at[t][s] becomes slice t's first position for slot s.
  std::int64_t pos = 0;
  for (std::size_t s = 0; s < slots; ++s) {
    g.start[s] = pos;
    for (auto& c : at) {
      const std::int64_t k = c[s];
      c[s] = pos;
      pos += k;
    }
  }
  g.start[slots] = pos;
  run([&](std::int64_t t, int) {
    auto& fill = at[static_cast<std::size_t>(t)];
    for (std::int64_t i = n * t / T; i < n * (t + 1) / T; ++i)
      g.order[static_cast<std::size_t>(fill[static_cast<std::size_t>(std::int64_t{prev[i]} + 1)]++)] = i;
  });
  return g;
}

// Sorts node ids in [0, limit) ascending: a least-significant-digit radix sort, 11 bits a
// pass (2 passes for a level of up to 4M nodes), through `tmp`. O(n): a deep level's shard
// touches ~100K of ~1M nodes, which std::sort took ~6 ms to order and a scan of every node
// ~2.5 ms (H100 machine, 20M x 1024 fit).
inline void sort_node_ids(std::vector<std::int32_t>& v, std::int64_t limit, std::vector<std::int32_t>& tmp) {
  constexpr int kBits = 11;
  constexpr std::uint32_t kMask = (1u << kBits) - 1;
  tmp.resize(v.size());
  for (int shift = 0; ((limit - 1) >> shift) > 0; shift += kBits) {
    std::vector<std::uint32_t> at(std::size_t{1} << kBits, 0);
    for (const std::int32_t x : v) ++at[(static_cast<std::uint32_t>(x) >> shift) & kMask];
    std::uint32_t pos = 0;
    for (auto& a : at) pos += std::exchange(a, pos);
    for (const std::int32_t x : v) tmp[at[(static_cast<std::uint32_t>(x) >> shift) & kMask]++] = x;
    v.swap(tmp);
  }
}

}  // namespace megatax::taxonomy
