// kernels/cpu/topk.h -- keeps the k best (distance, id) pairs per query while a scan streams.
//
// A result handler in the sense of FAISS's ResultHandler: the distance kernels fill a block
// of distances plus "may enter" masks computed against thresholds(); TopK consumes the
// flagged entries. Order is (distance, id) ascending: smaller distance first, ties to the
// smaller id. NaN distances never enter.
//
// Thread-safety: one TopK is used by one thread at a time.
#pragma once

#include <cstdint>
#include <vector>

namespace megatax::kernels {

class TopK {
 public:
  // nq >= 0 queries, k >= 1 results each.
  TopK(std::int64_t nq, std::int64_t k);

  std::int64_t nq() const noexcept { return nq_; }
  std::int64_t k() const noexcept { return k_; }

  // Per query: the distance a candidate must be strictly below to enter (the k-th best
  // so far, or +inf while fewer than k are held). nq entries, kept current.
  const float* thresholds() const noexcept { return thresholds_.data(); }

  // Offers the candidates of one block: for query i (0 <= i < nq) and column
  // j = 16 * p + r with bit r of masks[i * ld_masks + p] set and j < n_valid, the pair
  // (distances[i * ld_distances + j], id0 + j). Ids offered over the life of a TopK must
  // arrive in increasing order per query (as a scan produces them); merge() handles the rest.
  void add_block(const float* distances, std::int64_t ld_distances, const std::uint16_t* masks,
                 std::int64_t ld_masks, std::int64_t npanels, std::int64_t id0,
                 std::int64_t n_valid);

  // Adds every result held by `other` (same nq and k), in any id order.
  void merge(const TopK& other);

  // Writes, per query i, its results sorted ascending into distances[i*ld + j], ids[i*ld + j]
  // for j < ld (ld >= k: entries past k are padding); missing entries get id -1 and
  // distance +inf. If `negate`, distances are written negated (inner product: the kernels
  // minimise -<q, x>), so the fill is -inf.
  void finish(float* distances, std::int64_t* ids, std::int64_t ld, bool negate) const;

 private:
  struct Entry {
    float distance;
    std::int64_t id;
  };
  void push(std::int64_t q, float distance, std::int64_t id);

  std::int64_t nq_;
  std::int64_t k_;
  std::vector<Entry> heaps_;        // nq x k max-heaps on (distance, id)
  std::vector<std::int64_t> sizes_; // entries held per query
  std::vector<float> thresholds_;
};

}  // namespace megatax::kernels
