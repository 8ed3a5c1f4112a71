// NodeSamples against a brute-force reference: each node's sample is the k offered ids with
// the smallest (priority, id), whatever the order of the offers, the split into parts that
// are merged, or the thread count of flatten(); flatten / unflatten round-trip exactly.
#include "taxonomy/node_samples.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace megatax::taxonomy {
namespace {

struct Offer {
  std::int64_t node;
  std::uint64_t priority;
  std::int64_t id;
};

// The reference: per node, every offer sorted by (priority, id), the first k kept, sorted by id.
void reference(const std::vector<Offer>& offers, std::int64_t nodes, std::int64_t k,
               std::vector<std::int64_t>* offsets, UninitVector<std::int64_t>* ids,
               UninitVector<std::int64_t>* priorities) {
  std::vector<std::vector<std::pair<std::uint64_t, std::int64_t>>> per(static_cast<std::size_t>(nodes));
  for (const Offer& o : offers) per[static_cast<std::size_t>(o.node)].push_back({o.priority, o.id});
  offsets->assign(1, 0);
  ids->clear();
  priorities->clear();
  for (auto& v : per) {
    std::sort(v.begin(), v.end());
    v.resize(std::min<std::size_t>(v.size(), static_cast<std::size_t>(k)));
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
    for (const auto& [p, id] : v) {
      ids->push_back(id);
      priorities->push_back(static_cast<std::int64_t>(p));
    }
    offsets->push_back(static_cast<std::int64_t>(ids->size()));
  }
}

TEST(NodeSamples, EqualsBruteForceForAnyOrderPartsAndThreads) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 4; ++round) {
    // Up to ~3000 nodes (several flatten tasks), some empty, some under k, many over;
    // priorities from a small range in one round so that ties are broken by id; in the last
    // round three nodes of ~20000 offers each (their candidate buffers fill and are cut
    // back to k hundreds of times).
    const auto nodes = round == 3 ? std::int64_t{3} : static_cast<std::int64_t>(1 + rng() % 3000);
    const auto k = static_cast<std::int64_t>(1 + rng() % 40);
    const std::uint64_t prio_range = round == 1 ? 8 : ~std::uint64_t{0};
    const auto n = round == 3 ? std::int64_t{60000} : static_cast<std::int64_t>(rng() % 60000);
    std::vector<Offer> offers;
    for (std::int64_t i = 0; i < n; ++i)
      offers.push_back({static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(nodes)), rng() % prio_range,
                        static_cast<std::int64_t>(i * 7 + 3)});
    std::shuffle(offers.begin(), offers.end(), rng);
    std::vector<std::int64_t> ro;
    UninitVector<std::int64_t> ri, rp;
    reference(offers, nodes, k, &ro, &ri, &rp);

    // One object fed in order; three parts fed separately and merged.
    NodeSamples whole(nodes, k);
    for (const Offer& o : offers) whole.offer(o.node, o.priority, o.id);
    NodeSamples parts[3] = {NodeSamples(nodes, k), NodeSamples(nodes, k), NodeSamples(nodes, k)};
    for (const Offer& o : offers) parts[rng() % 3].offer(o.node, o.priority, o.id);
    NodeSamples merged(nodes, k);
    for (const auto& p : parts) merged.merge(p);
    EXPECT_EQ(whole.size(), static_cast<std::int64_t>(ri.size()));

    for (int threads : {1, 2, 5}) {
      for (const NodeSamples* s : {&whole, &merged}) {
        std::vector<std::int64_t> o;
        UninitVector<std::int64_t> i, p;
        s->flatten(&o, &i, &p, threads);
        ASSERT_EQ(o, ro) << "threads " << threads;
        ASSERT_EQ(i, ri) << "threads " << threads;
        ASSERT_EQ(p, rp) << "threads " << threads;
        // Without the priorities (a committed sample: ids alone), the same offsets and ids.
        std::vector<std::int64_t> o2;
        UninitVector<std::int64_t> i2;
        s->flatten(&o2, &i2, nullptr, threads);
        ASSERT_EQ(o2, ro) << "threads " << threads << ", no priorities";
        ASSERT_EQ(i2, ri) << "threads " << threads << ", no priorities";
      }
    }
    for (std::int64_t j = 0; j < nodes; j += 1 + nodes / 50) {
      const std::vector<std::int64_t> want(ri.begin() + ro[static_cast<std::size_t>(j)],
                                           ri.begin() + ro[static_cast<std::size_t>(j) + 1]);
      EXPECT_EQ(whole.ids(j), want) << "node " << j;
    }

    // Round trip through the flat form, then more offers: as if never stored.
    std::vector<std::int64_t> o;
    UninitVector<std::int64_t> i, p;
    whole.flatten(&o, &i, &p);
    NodeSamples loaded = NodeSamples::unflatten(k, o, i, p);
    std::vector<Offer> more;
    for (int t = 0; t < 500; ++t)
      more.push_back({static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(nodes)), rng() % prio_range,
                      static_cast<std::int64_t>(n * 7 + 10 + t)});
    for (const Offer& m : more) loaded.offer(m.node, m.priority, m.id);
    offers.insert(offers.end(), more.begin(), more.end());
    reference(offers, nodes, k, &ro, &ri, &rp);
    loaded.flatten(&o, &i, &p, 3);
    EXPECT_EQ(o, ro);
    EXPECT_EQ(i, ri);
    EXPECT_EQ(p, rp);
  }
}

}  // namespace
}  // namespace megatax::taxonomy
