#include "kernels/cpu/topk.h"

#include <algorithm>
#include <bit>
#include <limits>

namespace megatax::kernels {
namespace {
constexpr float kInf = std::numeric_limits<float>::infinity();
}

TopK::TopK(std::int64_t nq, std::int64_t k)
    : nq_(nq),
      k_(k),
      heaps_(static_cast<std::size_t>(nq * k)),
      sizes_(static_cast<std::size_t>(nq), 0),
      thresholds_(static_cast<std::size_t>(nq), kInf) {}

// Max-heap on (distance, id): the root is the worst kept result.
void TopK::push(std::int64_t q, float distance, std::int64_t id) {
  Entry* h = heaps_.data() + q * k_;
  std::int64_t& size = sizes_[static_cast<std::size_t>(q)];
  auto worse = [](const Entry& a, const Entry& b) {  // a after b in the result order
    return a.distance > b.distance || (a.distance == b.distance && a.id > b.id);
  };
  if (size < k_) {  // sift up
    std::int64_t i = size++;
    while (i > 0) {
      const std::int64_t parent = (i - 1) / 2;
      if (worse(Entry{distance, id}, h[parent])) {
        h[i] = h[parent];
        i = parent;
      } else {
        break;
      }
    }
    h[i] = Entry{distance, id};
  } else {
    if (!worse(h[0], Entry{distance, id})) return;  // not better than the worst kept
    std::int64_t i = 0;  // sift down from the root
    for (;;) {
      const std::int64_t l = 2 * i + 1;
      if (l >= k_) break;
      std::int64_t c = l;
      if (l + 1 < k_ && worse(h[l + 1], h[l])) c = l + 1;
      if (!worse(h[c], Entry{distance, id})) break;
      h[i] = h[c];
      i = c;
    }
    h[i] = Entry{distance, id};
  }
  if (size == k_) thresholds_[static_cast<std::size_t>(q)] = h[0].distance;
}

void TopK::add_block(const float* distances, std::int64_t ld_distances,
                     const std::uint16_t* masks, std::int64_t ld_masks, std::int64_t npanels,
                     std::int64_t id0, std::int64_t n_valid) {
  const std::int64_t last_panel = std::min<std::int64_t>(npanels, (n_valid + 15) / 16);
  for (std::int64_t q = 0; q < nq_; ++q) {
    const float* d = distances + q * ld_distances;
    const std::uint16_t* m = masks + q * ld_masks;
    for (std::int64_t p = 0; p < last_panel; ++p) {
      unsigned bits = m[p];
      if (bits == 0) continue;
      const std::int64_t valid_in_panel = n_valid - 16 * p;
      if (valid_in_panel < 16) bits &= (1u << valid_in_panel) - 1u;
      while (bits != 0) {
        const int r = std::countr_zero(bits);
        bits &= bits - 1;
        const std::int64_t j = 16 * p + r;
        // Re-check: the threshold may have dropped since the kernel built the mask.
        const float dist = d[j];
        if (dist <= thresholds_[static_cast<std::size_t>(q)]) push(q, dist, id0 + j);
      }
    }
  }
}

void TopK::merge(const TopK& other) {
  for (std::int64_t q = 0; q < nq_; ++q) {
    const Entry* h = other.heaps_.data() + q * other.k_;
    for (std::int64_t i = 0; i < other.sizes_[static_cast<std::size_t>(q)]; ++i)
      push(q, h[i].distance, h[i].id);
  }
}

void TopK::finish(float* distances, std::int64_t* ids, std::int64_t ld, bool negate) const {
  std::vector<Entry> sorted;
  for (std::int64_t q = 0; q < nq_; ++q) {
    const std::int64_t size = sizes_[static_cast<std::size_t>(q)];
    const Entry* h = heaps_.data() + q * k_;
    sorted.assign(h, h + size);
    std::sort(sorted.begin(), sorted.end(), [](const Entry& a, const Entry& b) {
      return a.distance < b.distance || (a.distance == b.distance && a.id < b.id);
    });
    for (std::int64_t j = 0; j < ld; ++j) {
      float dist = kInf;
      std::int64_t id = -1;
      if (j < size) {
        dist = sorted[static_cast<std::size_t>(j)].distance;
        id = sorted[static_cast<std::size_t>(j)].id;
      }
      distances[q * ld + j] = negate ? -dist : dist;
      ids[q * ld + j] = id;
    }
  }
}

}  // namespace megatax::kernels
