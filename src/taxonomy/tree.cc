#include "taxonomy/tree.h"

#include <algorithm>
#include <string>

#include "core/parallel.h"
#include "core/uninit_vector.h"
#include "megatax/error.h"
#include "taxonomy/row_groups.h"

namespace megatax::taxonomy {

std::int64_t Tree::nodes(int level) const {
  if (level == 0) return 1;
  return this->level(level).nodes();
}

void Tree::add_level(UninitVector<float> centroids, std::vector<std::int64_t> parent) {
  const int l = levels() + 1;
  const std::int64_t n = static_cast<std::int64_t>(parent.size());
  if (static_cast<std::int64_t>(centroids.size()) != n * dim_)
    throw_error(ErrorCode::kInternal, "level " + std::to_string(l) + ": centroid count mismatch");
  const std::int64_t n_parents = nodes(l - 1);
  TreeLevel lv;
  lv.child_begin.assign(static_cast<std::size_t>(n_parents + 1), 0);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t p = parent[static_cast<std::size_t>(i)];
    if (p < 0 || p >= n_parents || (i > 0 && p < parent[static_cast<std::size_t>(i - 1)]))
      throw_error(ErrorCode::kDataLoss, "level " + std::to_string(l) + ": node " +
                                            std::to_string(i) + " has an invalid parent " +
                                            std::to_string(p));
    ++lv.child_begin[static_cast<std::size_t>(p + 1)];
  }
  for (std::int64_t j = 0; j < n_parents; ++j)
    lv.child_begin[static_cast<std::size_t>(j + 1)] += lv.child_begin[static_cast<std::size_t>(j)];
  lv.graph.resize(static_cast<std::size_t>(n_parents));
  lv.centroids = std::move(centroids);
  lv.parent = std::move(parent);
  lv.count.assign(static_cast<std::size_t>(n), 0);
  lv.inertia.assign(static_cast<std::size_t>(n), 0.0);
  levels_.push_back(std::move(lv));
}

void Tree::truncate(int keep) {
  if (keep < levels()) levels_.resize(static_cast<std::size_t>(keep));
}

void Tree::build_graphs(int level, std::int64_t threshold, const HnswParams& params, int threads) {
  TreeLevel& lv = mutable_level(level);
  std::vector<std::int64_t> wide;
  for (std::size_t j = 0; j < lv.graph.size(); ++j) {
    lv.graph[j].reset();
    if (threshold > 0 && lv.child_begin[j + 1] - lv.child_begin[j] > threshold)
      wide.push_back(static_cast<std::int64_t>(j));
  }
  const int t = resolve_threads(threads, static_cast<std::int64_t>(wide.size()));
  parallel_for(t, static_cast<std::int64_t>(wide.size()), [&](std::int64_t a, int) {
    const auto j = static_cast<std::size_t>(wide[static_cast<std::size_t>(a)]);
    const std::int64_t b = lv.child_begin[j], e = lv.child_begin[j + 1];
    lv.graph[j] = CentroidGraph::build(lv.centroids.data() + b * dim_, e - b, dim_, metric_, params);
  });
}

void Tree::set_graph(int level, std::int64_t parent, std::unique_ptr<CentroidGraph> graph) {
  mutable_level(level).graph.at(static_cast<std::size_t>(parent)) = std::move(graph);
}

void Tree::set_graph_ef(std::int64_t ef) {
  for (auto& lv : levels_)
    for (auto& g : lv.graph)
      if (g) g->set_ef(ef);
}

void Tree::descend(int level, const MatrixView& rows, const std::int32_t* prev,
                   std::int32_t* node, std::int32_t* child, float* dist,
                   const kernels::KnnOptions& options) const {
  const TreeLevel& lv = this->level(level);
  const std::int64_t n = rows.rows;
  const std::int64_t n_parents = nodes(level - 1);
  std::call_once(*lv.pack_once, [&] {
    // Each parent's children packed for the CPU kernels (parents in parallel: independent).
    std::vector<std::unique_ptr<kernels::PackedMatrix>> packed(static_cast<std::size_t>(n_parents));
    parallel_for(resolve_threads(options.threads, n_parents / 16), n_parents, [&](std::int64_t j, int) {
      const std::int64_t b = lv.child_begin[static_cast<std::size_t>(j)];
      const std::int64_t e = lv.child_begin[static_cast<std::size_t>(j + 1)];
      if (e == b) return;
      auto pm = std::make_unique<kernels::PackedMatrix>(dim_, DType::kF32);
      pm->append(f32_view(lv.centroids.data() + b * dim_, e - b, dim_));
      packed[static_cast<std::size_t>(j)] = std::move(pm);
    });
    lv.packed = std::move(packed);
  });
  const RowGroups groups = group_rows_by_parent(prev, n, n_parents);
  const std::vector<std::int64_t>& start = groups.start;
  const std::vector<std::int64_t>& order = groups.order;
  // Rows at a leaf above (prev == -1) or at a leaf parent get no child.
  std::vector<std::int64_t> active;  // parents with rows and children
  for (std::int64_t j = -1; j < n_parents; ++j) {
    const std::int64_t b = start[static_cast<std::size_t>(j + 1)], e = start[static_cast<std::size_t>(j + 2)];
    if (b == e) continue;
    if (j >= 0 && lv.packed[static_cast<std::size_t>(j)]) {
      active.push_back(j);
      continue;
    }
    for (std::int64_t t = b; t < e; ++t) {
      const std::int64_t i = order[static_cast<std::size_t>(t)];
      node[i] = -1;
      child[i] = -1;
    }
  }
  const int threads = resolve_threads(options.threads, static_cast<std::int64_t>(active.size()));
  // Many small groups: one thread per group; few large ones: threads inside the kernel.
  kernels::KnnOptions inner = options;
  if (active.size() > 1 && threads > 1) inner.threads = 1;
  const int outer = active.size() > 1 ? threads : 1;
  parallel_for(outer, static_cast<std::int64_t>(active.size()), [&](std::int64_t a, int) {
    const std::int64_t j = active[static_cast<std::size_t>(a)];
    const std::int64_t b = start[static_cast<std::size_t>(j + 1)], e = start[static_cast<std::size_t>(j + 2)];
    const std::int64_t m = e - b;
    // The group's rows as dense f32: the rows themselves when they already are (f32, dense,
    // consecutive: a level with one parent; a copy of a 1M x 1024 batch into a fresh,
    // zero-filled buffer cost more in page faults than the kernel's work), else gathered
    // and converted (no zero fill first), on the kernel's threads when the group is alone.
    const std::int64_t first_row = order[static_cast<std::size_t>(b)];
    const bool in_place = rows.dtype == DType::kF32 && rows.stride == dim_ &&
                          order[static_cast<std::size_t>(e - 1)] - first_row == m - 1;
    const float* x = nullptr;
    UninitVector<float> scratch;
    if (in_place) {
      x = static_cast<const float*>(rows.row(first_row));
    } else {
      scratch.resize(static_cast<std::size_t>(m * dim_));
      float* buf = scratch.data();
      constexpr std::int64_t kRows = 1024;
      const std::int64_t tasks = (m + kRows - 1) / kRows;
      parallel_for(outer == 1 ? resolve_threads(options.threads, tasks) : 1, tasks, [&](std::int64_t c, int) {
        for (std::int64_t t = c * kRows; t < std::min(m, (c + 1) * kRows); ++t) {
          const std::int64_t i = order[static_cast<std::size_t>(b + t)];
          convert_to_f32(rows.dtype, rows.row(i), static_cast<std::size_t>(dim_), buf + t * dim_);
        }
      });
      x = buf;
    }
    std::vector<std::int64_t> labels(static_cast<std::size_t>(m));
    std::vector<float> d(static_cast<std::size_t>(m));
    const CentroidGraph* g = use_graphs_ ? lv.graph[static_cast<std::size_t>(j)].get() : nullptr;
    if (g != nullptr) {
      // Chunks of rows per task: each thread interleaves the searches of a chunk.
      constexpr std::int64_t kChunk = 64;
      const std::int64_t chunks = (m + kChunk - 1) / kChunk;
      const int row_threads = outer == 1 ? resolve_threads(options.threads, chunks) : 1;
      parallel_for(row_threads, chunks, [&](std::int64_t c, int) {
        const std::int64_t t = c * kChunk, len = std::min(kChunk, m - t);
        g->search(x + t * dim_, len, &labels[static_cast<std::size_t>(t)], &d[static_cast<std::size_t>(t)]);
      });
    } else {
      kernels::nearest(f32_view(x, m, dim_), *lv.packed[static_cast<std::size_t>(j)], metric_,
                       labels.data(), d.data(), inner);
    }
    const std::int64_t first_child = lv.child_begin[static_cast<std::size_t>(j)];
    for (std::int64_t t = 0; t < m; ++t) {
      const std::int64_t i = order[static_cast<std::size_t>(b + t)];
      child[i] = static_cast<std::int32_t>(labels[static_cast<std::size_t>(t)]);
      node[i] = static_cast<std::int32_t>(first_child + labels[static_cast<std::size_t>(t)]);
      dist[i] = d[static_cast<std::size_t>(t)];
    }
  });
}

}  // namespace megatax::taxonomy
