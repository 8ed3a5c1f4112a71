// taxonomy/synthetic.h -- generated datasets: a hierarchical Gaussian mixture with known
// labels at every level, written shard by shard, shards in parallel (one shard in memory per
// thread).
//
// Level-1 centres are drawn around the origin with spread 1; each level-l centre (l >= 2)
// is its parent plus a Gaussian offset of spread separation^-(l-1); a point is its leaf
// centre plus noise of spread separation^-L. With the default separation (4) siblings are
// well apart at every level, so a correct top-down fit recovers the labels exactly.
// The bits depend on (seed, n, dim, levels, branching, shards) only.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "megatax/dtype.h"

namespace megatax::taxonomy {

struct SyntheticSpec {
  std::int64_t n = 100000;
  std::int64_t dim = 64;
  int levels = 3;
  std::int64_t branching = 8;
  std::int64_t shards = 4;
  std::uint64_t seed = 0;
  DType dtype = DType::kF32;  // f32 or f16
  double separation = 4.0;
  // Leaf popularity: 0 = uniform; s > 0 = Zipf with exponent s over the leaves.
  double zipf = 0.0;
  int threads = 0;  // shards generated at once (<= 0: every hardware thread); no effect on the bits
};

// Writes <dir>/part-00000.npy ... (n_s x dim, dtype) and <dir>/labels-00000.npy
// (int32 [n_s, levels]: the child index at each level) through the storage of `dir_uri`.
// `on_shard` (may be empty) is called after each shard with its index, one call at a time
// (in the order the shards finish).
void generate_dataset(const SyntheticSpec& spec, const std::string& dir_uri,
                      const std::function<void(std::int64_t)>& on_shard = {});

}  // namespace megatax::taxonomy
