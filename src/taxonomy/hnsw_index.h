// taxonomy/hnsw_index.h -- an HNSW graph over the children of one wide parent (hnswlib,
// Debian's header-only libhnswlib-dev), so descent to a level with many children costs
// O(ef log b) distances instead of b.
//
// Build: hnswlib, single-threaded, rows inserted in order, fixed seed, distances from the
// single-pair kernels (kernels/cpu/pair_distance.h), which give the same bits on every SIMD
// level: the same centroids give the same graph bytes on every CPU, rank and thread count.
// The graph is persisted in hnswlib 0.6's index format (serialize/load), unchanged.
//
// Search: ours, over a compact copy made at build/load time (hnswlib 0.6's searchKnn locks
// a mutex and bumps shared atomic counters per query, reads links interleaved with f32 rows
// and picks its SIMD at compile time). It walks the same layers with the same rules
// (greedy descent of the upper layers; on layer 0 the ef nearest candidates seen, always
// expanding the nearest unexpanded one), on f16 rows -- scaled by a power of two, half the
// bytes per distance -- and layer-0 links in their own 64-byte aligned array (huge pages
// where Linux allows), then re-scores the `rerank` nearest candidates with exact f32
// distances. Batches interleave several queries per thread so that one waits for memory
// while the others compute. A result is a pure function of the graph, the query, ef and
// rerank (not of the batch, thread or SIMD level).
//
// Metrics: squared L2 (distance) and inner product (similarity). The reported distance is
// the exact f32 pair distance to the chosen centroid; it rounds differently from the flat
// scan's (|q|^2 + |x|^2 - 2 <q, x>), so the two may differ in the last bits. The chosen
// child agrees with the flat scan's for >= 99% of queries at the default ef on a 65,536-wide
// level (tests/taxonomy/hnsw_test.cc; agreement and speed per ef in bench/RESULTS.md).
//
// Thread-safety: search() may run concurrently; build/load/serialize/set_ef are
// single-threaded.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kernels/cpu/simd_level.h"
#include "megatax/metric.h"

namespace megatax::taxonomy {

// Defaults: those of TaxonomyConfig (megatax/taxonomy.h says how they were chosen).
struct HnswParams {
  std::int64_t m = 32;                 // graph degree (hnswlib's M; layer 0 has 2 m links)
  std::int64_t ef_construction = 200;  // candidate list while building
  std::int64_t ef = 32;                // candidate list while searching (>= 1)
  std::uint64_t seed = 100;            // level generator seed
  // Distance kernel level (kAuto: the process default). Speed only: every level gives the
  // same bits.
  kernels::SimdLevel simd = kernels::SimdLevel::kAuto;
  // Walk on an f16 copy of the centroids (half the bytes per distance; falls back to f32
  // when a centroid is not finite), re-scoring the `rerank` nearest candidates with exact
  // f32 distances. false: walk on f32 rows (exact distances, no re-scoring needed).
  bool compact = true;
  std::int64_t rerank = 4;
  // Graphs of up to this many rows mark visited rows in a bitset (rows / 8 bytes per query
  // in flight), wider ones in a hash set. Speed only.
  std::int64_t visited_bitset_rows = std::int64_t{1} << 18;
};

class CentroidGraph {
 public:
  ~CentroidGraph();
  CentroidGraph(const CentroidGraph&) = delete;
  CentroidGraph& operator=(const CentroidGraph&) = delete;

  // Builds the graph over `rows` centroids (rows x dim floats, row-major; copied). metric:
  // kL2 or kInnerProduct. rows >= 1.
  static std::unique_ptr<CentroidGraph> build(const float* centroids, std::int64_t rows,
                                              std::int64_t dim, Metric metric,
                                              const HnswParams& params);
  // Rebuilds a graph from serialize()'s bytes; `what` names the source in errors
  // (Error(kDataLoss) when the bytes do not describe rows x dim).
  static std::unique_ptr<CentroidGraph> load(const std::string& bytes, std::int64_t rows,
                                             std::int64_t dim, Metric metric,
                                             const HnswParams& params, const std::string& what);
  // The graph as bytes (hnswlib's index format).
  std::string serialize() const;

  // Nearest centroid of x (dim floats): its row and distance (L2: squared distance;
  // inner product: similarity).
  void search(const float* x, std::int64_t* label, float* distance) const;
  // The same for n queries (n x dim floats, row-major) into labels[n], distances[n]: several
  // searches interleaved on the calling thread, so that one waits for memory while the others
  // compute; each result equals search()'s for that query. distance_count (optional): adds
  // the number of distances the walk computed (not counting the exact re-scoring).
  void search(const float* x, std::int64_t n, std::int64_t* labels, float* distances,
              std::int64_t* distance_count = nullptr) const;

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
