// taxonomy/node_samples.h -- per-node training samples chosen by bottom-k hashing.
//
// Every point has a priority hash64(global_id, seed, level); a node's sample is the k
// points of the node with the smallest (priority, id). The choice depends on the ids alone:
// not on shard order, batch size, threads or ranks, and partial samples merge exactly.
//
// Each node keeps a buffer of up to 2k candidates and a bound: once the buffer fills, its k
// smallest stay (nth_element) and the k-th becomes the bound, below which an offer must be to
// enter. A rejected offer costs one comparison, an accepted one an append: a heap of k
// (O(log k) cache misses per entry kept) took ~110 ns an offer on a node of 200K points
// and k = 25,600 (level 1 of a 20M fit). The sample is the same either way.
//
// Thread-safety: one thread at a time, except that offer() calls for different nodes may
// run concurrently; merge() combines per-thread or per-worker parts.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "core/uninit_vector.h"

namespace megatax::taxonomy {

class NodeSamples {
 public:
  NodeSamples() = default;
  // n_nodes nodes keeping up to k ids each (k >= 1). `expected` (optional): the points a
  // node is expected to be offered; a node's first offer reserves room for min(2k, 2 *
  // expected) candidates (a pass offers each node its points one by one: without it, a
  // level of 9,200 nodes of ~2,200 points grew ~12 times a node, copying and faulting in
  // twice the memory, on every thread at once).
  NodeSamples(std::int64_t n_nodes, std::int64_t k, std::int64_t expected = 0);

  std::int64_t nodes() const noexcept { return static_cast<std::int64_t>(nodes_.size()); }
  std::int64_t k() const noexcept { return k_; }

  void offer(std::int64_t node, std::uint64_t priority, std::int64_t id);
  void merge(const NodeSamples& other);

  // The sample of `node`, sorted by id.
  std::vector<std::int64_t> ids(std::int64_t node) const;
  // Ids in the sample of `node` (min(points offered, k)), and in total.
  std::int64_t size(std::int64_t node) const noexcept {
    return std::min(static_cast<std::int64_t>(nodes_[static_cast<std::size_t>(node)].entries.size()), k_);
  }
  std::int64_t size() const noexcept;

  // Flat form for storage: ids of node j at [offsets[j], offsets[j+1]) sorted by id, and
  // the priorities beside them unless `priorities` is null (so that a sample sent to
  // another worker can keep merging). Nodes are sorted on
  // up to `threads` threads (<= 0: all); the result does not depend on the count.
  // ids and priorities are written by those threads, not zero-filled first (a level's
  // samples can be tens of millions).
  void flatten(std::vector<std::int64_t>* offsets, UninitVector<std::int64_t>* ids,
               UninitVector<std::int64_t>* priorities, int threads = 0) const;
  static NodeSamples unflatten(std::int64_t k, std::span<const std::int64_t> offsets,
                               std::span<const std::int64_t> ids, std::span<const std::int64_t> priorities);

 private:
  struct Entry {
    std::uint64_t priority;
    std::int64_t id;
    bool operator<(const Entry& o) const noexcept {
      return priority < o.priority || (priority == o.priority && id < o.id);
    }
  };
  // A cache line each: threads serving neighbouring nodes do not share one.
  struct alignas(64) Node {
    std::vector<Entry> entries;  // candidates, unordered: the sample is the k smallest
    Entry bound{};               // once bounded: an offer enters only below it
    bool bounded = false;
  };
  // Keeps the k smallest of node's candidates and bounds the node by the k-th.
  void compact(Node& node);
  // The sample of a node: its k smallest candidates (all of them when k or fewer), unordered.
  std::vector<Entry> sample(const Node& node) const;

  std::int64_t k_ = 1;
  std::size_t first_reserve_ = 0;  // candidates a node's first offer makes room for
  std::vector<Node> nodes_;
};

}  // namespace megatax::taxonomy
