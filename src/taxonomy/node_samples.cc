#include "taxonomy/node_samples.h"

#include <algorithm>

namespace megatax::taxonomy {

NodeSamples::NodeSamples(std::int64_t n_nodes, std::int64_t k)
    : k_(k), heaps_(static_cast<std::size_t>(n_nodes)) {}

void NodeSamples::offer(std::int64_t node, std::uint64_t priority, std::int64_t id) {
  auto& h = heaps_[static_cast<std::size_t>(node)];
  const Entry e{priority, id};
  if (static_cast<std::int64_t>(h.size()) < k_) {
    h.push_back(e);
    std::push_heap(h.begin(), h.end());
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
                          std::vector<std::int64_t>* priorities) const {
  offsets->assign(1, 0);
  ids->clear();
  priorities->clear();
  for (const auto& h : heaps_) {
    std::vector<Entry> sorted(h);
    std::sort(sorted.begin(), sorted.end(),
              [](const Entry& a, const Entry& b) { return a.id < b.id; });
    for (const Entry& e : sorted) {
      ids->push_back(e.id);
      priorities->push_back(static_cast<std::int64_t>(e.priority));
    }
    offsets->push_back(static_cast<std::int64_t>(ids->size()));
  }
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
