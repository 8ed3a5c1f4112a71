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
#include <mutex>
#include <vector>

#include "core/uninit_vector.h"
#include "kernels/cpu/knn.h"
#include "kernels/cpu/packed_matrix.h"
#include "taxonomy/hnsw_index.h"
#include "megatax/matrix.h"
#include "megatax/metric.h"

namespace megatax::taxonomy {

struct TreeLevel {
  UninitVector<float> centroids;         // nodes x dim (no zero fill: written in full when made)
  std::vector<std::int64_t> parent;      // nodes: parent id at level - 1
  std::vector<std::int64_t> count;       // nodes: points assigned by the fit
  std::vector<double> inertia;           // nodes: sum of their points' distances
  std::vector<std::int64_t> child_begin; // nodes(level - 1) + 1 entries (CSR over parents)
  // One packed matrix per parent with children (null for leaves), for descent on the CPU:
  // built by the first descend() of the level (under pack_once), so that a fit whose
  // descent runs elsewhere (a GPU keeps its own copy) never spends the time nor the memory.
  mutable std::vector<std::unique_ptr<kernels::PackedMatrix>> packed;
  std::unique_ptr<std::once_flag> pack_once = std::make_unique<std::once_flag>();
  // One HNSW graph per wide parent (null otherwise): descend() searches it instead of
  // scanning the packed children when graphs are enabled.
  std::vector<std::unique_ptr<CentroidGraph>> graph;

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
  // refer to nodes of the current last level) and builds its CSR. The parents' children
  // are packed for the CPU kernels when descend() first needs them.
  void add_level(UninitVector<float> centroids, std::vector<std::int64_t> parent);
  // Drops levels deeper than `keep`.
  void truncate(int keep);

  // Builds an HNSW graph for every parent of level `level` with more than `threshold`
  // children (threshold <= 0: none), one graph per task on up to `threads` threads, each
  // built single-threaded (deterministic). Replaces graphs built before.
  void build_graphs(int level, std::int64_t threshold, const HnswParams& params, int threads);
  // Installs a graph (loaded from storage) for `parent` of level `level`.
  void set_graph(int level, std::int64_t parent, std::unique_ptr<CentroidGraph> graph);
  // Whether descend() uses the graphs (true) or always scans (exact); search breadth.
  void set_use_graphs(bool use) noexcept { use_graphs_ = use; }
  bool use_graphs() const noexcept { return use_graphs_; }
  void set_graph_ef(std::int64_t ef);

  // Descends rows from level `level`-1 to level `level` (the first call of a level packs its
  // children on up to options.threads threads; concurrent callers wait for it): for row i whose node at level-1
  // is prev[i] (-1: the row stopped at a leaf above), sets node[i] to the nearest child
  // (or -1 when prev[i] is -1 or a leaf), child[i] to its index within the parent (-1
  // likewise) and, when a child is chosen, dist[i] to the distance (otherwise dist[i] is
  // left unchanged). rows: n x dim, f32 (already normalised for cosine). A parent with a
  // graph (and graphs enabled) is searched through it: the nearest child it finds.
  void descend(int level, const MatrixView& rows, const std::int32_t* prev, std::int32_t* node,
               std::int32_t* child, float* dist, const kernels::KnnOptions& options) const;

 private:
  std::int64_t dim_ = 0;
  Metric metric_ = Metric::kL2;
  std::vector<TreeLevel> levels_;
  bool use_graphs_ = true;
};

}  // namespace megatax::taxonomy
