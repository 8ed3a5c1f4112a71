// taxonomy/hnsw_index.h -- an HNSW graph over the children of one wide parent (hnswlib,
// Debian's header-only libhnswlib-dev), so descent to a level with many children (say
// >= 4096) costs O(ef log b) distances instead of b.
//
// The graph is built single-threaded from a fixed seed: the same centroids give the same
// graph bytes on every rank and thread count, and a search is a pure function of the graph,
// the query and ef. Metrics: squared L2 (distance as the flat kernel reports it) and inner
// product (similarity). Distances come from this file's kernels (AVX2+FMA or scalar), so
// they may differ from the flat scan's in the last bits; the chosen child agrees with the
// flat scan for >= 99% of queries at the default ef (tests/taxonomy/hnsw_test.cc).
//
// Thread-safety: search() may run concurrently; build/load/serialize are single-threaded.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "megatax/metric.h"

namespace megatax::taxonomy {

struct HnswParams {
  std::int64_t m = 16;                 // graph degree (hnswlib's M)
  std::int64_t ef_construction = 200;  // candidate list while building
  std::int64_t ef = 64;                // candidate list while searching (>= 1)
  std::uint64_t seed = 100;            // level generator seed
  // Distance kernel: AVX2+FMA when the CPU has it (the same bits on every such CPU),
  // otherwise a scalar loop; false forces the scalar loop (config simd = "scalar").
  bool vectorised = true;
};

class CentroidGraph {
 public:
  ~CentroidGraph();
  CentroidGraph(const CentroidGraph&) = delete;
  CentroidGraph& operator=(const CentroidGraph&) = delete;

  // Builds the graph over `rows` centroids (rows x dim floats, row-major; copied). metric:
  // kL2 or kInnerProduct. rows >= 1.
  static std::unique_ptr<CentroidGraph> build(const float* centroids, std::int64_t rows, std::int64_t dim,
                                              Metric metric, const HnswParams& params);
  // Rebuilds a graph from serialize()'s bytes; `what` names the source in errors
  // (Error(kDataLoss) when the bytes do not describe rows x dim).
  static std::unique_ptr<CentroidGraph> load(const std::string& bytes, std::int64_t rows, std::int64_t dim,
                                             Metric metric, const HnswParams& params, const std::string& what);
  // The graph as bytes (hnswlib's index format).
  std::string serialize() const;

  // Nearest centroid of x (dim floats): its row and distance (L2: squared distance;
  // inner product: similarity).
  void search(const float* x, std::int64_t* label, float* distance) const;

  std::int64_t rows() const noexcept { return rows_; }
  // Search breadth from now on (>= 1); not while searches run.
  void set_ef(std::int64_t ef);

 private:
  struct Impl;
  CentroidGraph(std::unique_ptr<Impl> impl, std::int64_t rows);
  std::unique_ptr<Impl> impl_;
  std::int64_t rows_ = 0;
};

}  // namespace megatax::taxonomy
