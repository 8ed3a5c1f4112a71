#include "taxonomy/node_samples.h"

#include <algorithm>

#include "core/parallel.h"

namespace megatax::taxonomy {

NodeSamples::NodeSamples(std::int64_t n_nodes, std::int64_t k)
    : k_(k), heaps_(static_cast<std::size_t>(n_nodes)) {}

void NodeSamples::offer(std::int64_t node, std::uint64_t priority, std::int64_t id) {
  auto& h = heaps_[static_cast<std::size_t>(node)];
  const Entry e{priority, id};
  const auto size = static_cast<std::int64_t>(h.size());
  if (size < k_) {
    // Under k entries nothing is dropped, so no order is kept (a node smaller than its
    // sample never pays for one); the k-th entry makes the heap.
    h.push_back(e);
    if (size + 1 == k_) std::make_heap(h.begin(), h.end());
  } else if (e < h.front()) {
    std::pop_heap(h.begin(), h.end());
    h.back() = e;
    std::push_heap(h.begin(), h.end());
  }
}

void NodeSamples::merge(const NodeSamples& other) {
  for (std::size_t j = 0; j < other.heaps_.size(); ++j)
    for (const Entry& e : other.heaps_[j]) offer(static_cast<std::int64_t>(j), e.priority, e.id);
}

std::vector<std::int64_t> NodeSamples::ids(std::int64_t node) const {
  const auto& h = heaps_[static_cast<std::size_t>(node)];
  std::vector<std::int64_t> out;
  out.reserve(h.size());
  for (const Entry& e : h) out.push_back(e.id);
  std::sort(out.begin(), out.end());
  return out;
}

std::int64_t NodeSamples::size() const noexcept {
  std::int64_t s = 0;
  for (const auto& h : heaps_) s += static_cast<std::int64_t>(h.size());
  return s;
}

void NodeSamples::flatten(std::vector<std::int64_t>* offsets, std::vector<std::int64_t>* ids,
                          std::vector<std::int64_t>* priorities, int threads) const {
  const std::size_t n = heaps_.size();
  offsets->assign(n + 1, 0);
  for (std::size_t j = 0; j < n; ++j) (*offsets)[j + 1] = (*offsets)[j] + static_cast<std::int64_t>(heaps_[j].size());
  ids->resize(static_cast<std::size_t>(offsets->back()));
  priorities->resize(ids->size());
  // Nodes fill disjoint slices: any thread count gives the same arrays.
  constexpr std::int64_t kNodesPerTask = 512;
  const auto tasks = static_cast<std::int64_t>((n + kNodesPerTask - 1) / kNodesPerTask);
  parallel_for(resolve_threads(threads, tasks), tasks, [&](std::int64_t t, int) {
    std::vector<Entry> sorted;
    const auto j1 = std::min<std::size_t>(n, static_cast<std::size_t>((t + 1) * kNodesPerTask));
    for (auto j = static_cast<std::size_t>(t * kNodesPerTask); j < j1; ++j) {
      sorted.assign(heaps_[j].begin(), heaps_[j].end());
      std::sort(sorted.begin(), sorted.end(), [](const Entry& x, const Entry& y) { return x.id < y.id; });
      auto at = static_cast<std::size_t>((*offsets)[j]);
      for (const Entry& e : sorted) {
        (*ids)[at] = e.id;
        (*priorities)[at] = static_cast<std::int64_t>(e.priority);
        ++at;
      }
    }
  });
}

NodeSamples NodeSamples::unflatten(std::int64_t k, const std::vector<std::int64_t>& offsets,
                                   const std::vector<std::int64_t>& ids,
                                   const std::vector<std::int64_t>& priorities) {
  NodeSamples s(static_cast<std::int64_t>(offsets.size()) - 1, k);
  for (std::size_t j = 0; j + 1 < offsets.size(); ++j)
    for (std::int64_t t = offsets[j]; t < offsets[j + 1]; ++t)
      s.offer(static_cast<std::int64_t>(j), static_cast<std::uint64_t>(priorities[static_cast<std::size_t>(t)]),
              ids[static_cast<std::size_t>(t)]);
  return s;
}

}  // namespace megatax::taxonomy
