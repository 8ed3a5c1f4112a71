// taxonomy/node_samples.h -- per-node training samples chosen by bottom-k hashing.
//
// Every point has a priority hash64(global_id, seed, level); a node's sample is the k
// points of the node with the smallest (priority, id). The choice depends on the ids alone:
// not on shard order, batch size, threads or ranks, and partial samples merge exactly.
//
// Thread-safety: one thread at a time, except that offer() calls for different nodes may
// run concurrently; merge() combines per-thread or per-worker parts.
#pragma once

#include <cstdint>
#include <vector>

namespace megatax::taxonomy {

class NodeSamples {
 public:
  NodeSamples() = default;
  // n_nodes nodes keeping up to k ids each (k >= 1).
  NodeSamples(std::int64_t n_nodes, std::int64_t k);

  std::int64_t nodes() const noexcept { return static_cast<std::int64_t>(heaps_.size()); }
  std::int64_t k() const noexcept { return k_; }

  void offer(std::int64_t node, std::uint64_t priority, std::int64_t id);
  void merge(const NodeSamples& other);

  // The sample of `node`, sorted by id.
  std::vector<std::int64_t> ids(std::int64_t node) const;
  // Ids held by `node`, and in total.
  std::int64_t size(std::int64_t node) const noexcept {
    return static_cast<std::int64_t>(heaps_[static_cast<std::size_t>(node)].size());
  }
  std::int64_t size() const noexcept;

  // Flat form for storage: ids of node j at [offsets[j], offsets[j+1]) sorted by id, and
  // the priorities beside them (so a loaded sample can keep merging). Nodes are sorted on
  // up to `threads` threads (<= 0: all); the result does not depend on the count.
  void flatten(std::vector<std::int64_t>* offsets, std::vector<std::int64_t>* ids,
               std::vector<std::int64_t>* priorities, int threads = 0) const;
  static NodeSamples unflatten(std::int64_t k, const std::vector<std::int64_t>& offsets,
                               const std::vector<std::int64_t>& ids,
                               const std::vector<std::int64_t>& priorities);

 private:
  struct Entry {
    std::uint64_t priority;
    std::int64_t id;
    bool operator<(const Entry& o) const noexcept {
      return priority < o.priority || (priority == o.priority && id < o.id);
    }
  };
  std::int64_t k_ = 1;
  // At most k entries per node: unordered while fewer, a max-heap (worst on top) at k.
  std::vector<std::vector<Entry>> heaps_;
};

}  // namespace megatax::taxonomy
