#include "taxonomy/node_samples.h"

#include <algorithm>

#include "core/parallel.h"

namespace megatax::taxonomy {

NodeSamples::NodeSamples(std::int64_t n_nodes, std::int64_t k, std::int64_t expected)
    : k_(k),
      first_reserve_(static_cast<std::size_t>(std::clamp<std::int64_t>(2 * expected, 0, 2 * k))),
      nodes_(static_cast<std::size_t>(n_nodes)) {}

void NodeSamples::offer(std::int64_t node, std::uint64_t priority, std::int64_t id) {
  Node& n = nodes_[static_cast<std::size_t>(node)];
  const Entry e{priority, id};
  if (n.bounded && !(e < n.bound)) return;
  if (n.entries.empty()) {
    n.entries.reserve(first_reserve_);
  } else if (static_cast<std::int64_t>(n.entries.size()) == k_) {
    n.entries.reserve(static_cast<std::size_t>(2 * k_));
  }
  n.entries.push_back(e);
  if (static_cast<std::int64_t>(n.entries.size()) == 2 * k_) compact(n);
}

void NodeSamples::compact(Node& n) {
  const auto k = static_cast<std::size_t>(k_);
  std::nth_element(n.entries.begin(), n.entries.begin() + static_cast<std::ptrdiff_t>(k - 1), n.entries.end());
  n.entries.resize(k);
  n.bound = n.entries[k - 1];  // the k-th smallest: no later entry at or above it is kept
  n.bounded = true;
}

std::vector<NodeSamples::Entry> NodeSamples::sample(const Node& n) const {
  std::vector<Entry> out(n.entries.begin(), n.entries.end());
  const auto k = static_cast<std::size_t>(k_);
  if (out.size() > k) {
    std::nth_element(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(k - 1), out.end());
    out.resize(k);
  }
  return out;
}

void NodeSamples::merge(const NodeSamples& other) {
  for (std::size_t j = 0; j < other.nodes_.size(); ++j)
    for (const Entry& e : other.sample(other.nodes_[j])) offer(static_cast<std::int64_t>(j), e.priority, e.id);
}

std::vector<std::int64_t> NodeSamples::ids(std::int64_t node) const {
  std::vector<std::int64_t> out;
  for (const Entry& e : sample(nodes_[static_cast<std::size_t>(node)])) out.push_back(e.id);
  std::sort(out.begin(), out.end());
  return out;
}

std::int64_t NodeSamples::size() const noexcept {
  std::int64_t s = 0;
  for (std::size_t j = 0; j < nodes_.size(); ++j) s += size(static_cast<std::int64_t>(j));
  return s;
}

void NodeSamples::flatten(std::vector<std::int64_t>* offsets, UninitVector<std::int64_t>* ids,
                          UninitVector<std::int64_t>* priorities, int threads) const {
  const std::size_t n = nodes_.size();
  offsets->assign(n + 1, 0);
  for (std::size_t j = 0; j < n; ++j) (*offsets)[j + 1] = (*offsets)[j] + size(static_cast<std::int64_t>(j));
  ids->resize(static_cast<std::size_t>(offsets->back()));
  if (priorities != nullptr) priorities->resize(ids->size());
  // Nodes fill disjoint slices: any thread count gives the same arrays. Tasks of up to 512
  // nodes, about 8 a thread: a level of few large samples (level 1: 100 nodes of 25,600)
  // was one task, one thread sorting them all.
  if (n == 0) return;
  const int T = resolve_threads(threads, static_cast<std::int64_t>(n));
  const auto per = static_cast<std::size_t>(std::clamp<std::int64_t>(static_cast<std::int64_t>(n) / (8 * T), 1, 512));
  const auto tasks = static_cast<std::int64_t>((n + per - 1) / per);
  parallel_for(T, tasks, [&](std::int64_t t, int) {
    std::vector<Entry> sorted;
    const auto j1 = std::min<std::size_t>(n, static_cast<std::size_t>(t + 1) * per);
    for (auto j = static_cast<std::size_t>(t) * per; j < j1; ++j) {
      sorted = sample(nodes_[j]);
      std::sort(sorted.begin(), sorted.end(), [](const Entry& x, const Entry& y) { return x.id < y.id; });
      auto at = static_cast<std::size_t>((*offsets)[j]);
      for (const Entry& e : sorted) {
        (*ids)[at] = e.id;
        if (priorities != nullptr) (*priorities)[at] = static_cast<std::int64_t>(e.priority);
        ++at;
      }
    }
  });
}

NodeSamples NodeSamples::unflatten(std::int64_t k, std::span<const std::int64_t> offsets,
                                   std::span<const std::int64_t> ids, std::span<const std::int64_t> priorities) {
  NodeSamples s(static_cast<std::int64_t>(offsets.size()) - 1, k);
  for (std::size_t j = 0; j + 1 < offsets.size(); ++j)
    for (std::int64_t t = offsets[j]; t < offsets[j + 1]; ++t)
      s.offer(static_cast<std::int64_t>(j), static_cast<std::uint64_t>(priorities[static_cast<std::size_t>(t)]),
              ids[static_cast<std::size_t>(t)]);
  return s;
}

}  // namespace megatax::taxonomy
