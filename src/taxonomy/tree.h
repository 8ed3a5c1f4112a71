// taxonomy/tree.h -- the fitted tree: per level, the centroids of its nodes and which parent
// each belongs to; and descent of vectors from one level to the next.
//
// Numbering: level 0 is the root (one node, id 0). The nodes of level l are numbered
// 0..nodes(l)-1, grouped by parent in parent order: the children of node j of level l-1 are
// [child_begin[j], child_begin[j+1]) of level l, and a child's path entry is its position
// in that range. A parent with no children is a leaf.
//
// Thread-safety: const methods may run concurrently once the tree is built.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cpu/knn.h"
#include "kernels/cpu/packed_matrix.h"
#include "megatax/matrix.h"
#include "megatax/metric.h"

namespace megatax::taxonomy {

struct TreeLevel {
  std::vector<float> centroids;          // nodes x dim
  std::vector<std::int64_t> parent;      // nodes: parent id at level - 1
  std::vector<std::int64_t> count;       // nodes: points assigned by the fit
  std::vector<double> inertia;           // nodes: sum of their points' distances
  std::vector<std::int64_t> child_begin; // nodes(level - 1) + 1 entries (CSR over parents)
  // One packed matrix per parent with children (null for leaves), for descent.
  std::vector<std::unique_ptr<kernels::PackedMatrix>> packed;

  std::int64_t nodes() const noexcept { return static_cast<std::int64_t>(parent.size()); }
};

class Tree {
 public:
  Tree() = default;
  Tree(std::int64_t dim, Metric kernel_metric) : dim_(dim), metric_(kernel_metric) {}

  std::int64_t dim() const noexcept { return dim_; }
  Metric kernel_metric() const noexcept { return metric_; }
  int levels() const noexcept { return static_cast<int>(levels_.size()); }
  std::int64_t nodes(int level) const;  // level 0 -> 1 (the root)
  const TreeLevel& level(int l) const { return levels_.at(static_cast<std::size_t>(l - 1)); }
  TreeLevel& mutable_level(int l) { return levels_.at(static_cast<std::size_t>(l - 1)); }

  // Appends level levels()+1 with the given nodes (parents must be sorted ascending and
  // refer to nodes of the current last level) and builds its CSR and packed children.
  void add_level(std::vector<float> centroids, std::vector<std::int64_t> parent);
  // Drops levels deeper than `keep`.
  void truncate(int keep);

  // Descends rows from level `level`-1 to level `level`: for row i whose node at level-1
  // is prev[i] (-1: the row stopped at a leaf above), sets node[i] to the nearest child
  // (or -1 when prev[i] is -1 or a leaf), child[i] to its index within the parent (-1
  // likewise) and, when a child is chosen, dist[i] to the distance (otherwise dist[i] is
  // left unchanged). rows: n x dim, f32 (already normalised for cosine).
  void descend(int level, const MatrixView& rows, const std::int32_t* prev, std::int32_t* node,
               std::int32_t* child, float* dist, const kernels::KnnOptions& options) const;

 private:
  std::int64_t dim_ = 0;
  Metric metric_ = Metric::kL2;
  std::vector<TreeLevel> levels_;
};

}  // namespace megatax::taxonomy
