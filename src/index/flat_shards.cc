#include "index/flat_shards.h"

#include <algorithm>
#include <limits>

#include "core/parallel.h"

namespace megatax::index {

std::int64_t FlatShards::rows_of(int s, std::int64_t n) const {
  const std::int64_t blocks = (n + block_rows - 1) / block_rows;
  if (s >= blocks) return 0;
  const std::int64_t mine = (blocks - s + shards - 1) / shards;  // blocks s, s + shards, ...
  std::int64_t rows = mine * block_rows;
  const std::int64_t last = blocks - 1, partial = n % block_rows;
  if (partial != 0 && last % shards == s) rows -= block_rows - partial;
  return rows;
}

namespace {

void merge_queries(const std::vector<ShardResults>& shards, std::int64_t q0, std::int64_t q1,
                   std::int64_t k, bool l2, float* out_distances, std::int64_t* out_ids) {
  const float none = l2 ? std::numeric_limits<float>::infinity()
                        : -std::numeric_limits<float>::infinity();
  std::vector<std::int64_t> at(shards.size());
  for (std::int64_t i = q0; i < q1; ++i) {
    std::fill(at.begin(), at.end(), 0);
    for (std::int64_t j = 0; j < k; ++j) {
      int best = -1;
      float best_d = 0;
      std::int64_t best_id = -1;
      for (std::size_t s = 0; s < shards.size(); ++s) {
        if (at[s] >= k) continue;
        const std::int64_t id = shards[s].ids[i * k + at[s]];
        if (id < 0) continue;  // this shard has no more
        const float d = shards[s].distances[i * k + at[s]];
        const bool better = best < 0 || (l2 ? d < best_d : d > best_d) ||
                            (d == best_d && id < best_id);
        if (better) {
          best = static_cast<int>(s);
          best_d = d;
          best_id = id;
        }
      }
      if (best < 0) {
        out_ids[i * k + j] = -1;
        out_distances[i * k + j] = none;
      } else {
        out_ids[i * k + j] = best_id;
        out_distances[i * k + j] = best_d;
        ++at[static_cast<std::size_t>(best)];
      }
    }
  }
}

}  // namespace

void merge_shard_results(const std::vector<ShardResults>& shards, std::int64_t q, std::int64_t k,
                         Metric metric, float* out_distances, std::int64_t* out_ids, int threads) {
  const bool l2 = metric == Metric::kL2;
  // Tasks of about 32k merged results (a task's queries are independent of the others').
  const std::int64_t per_task = std::max<std::int64_t>(1, (std::int64_t{1} << 15) / std::max<std::int64_t>(k, 1));
  const std::int64_t tasks = (q + per_task - 1) / per_task;
  if (tasks <= 1) {
    merge_queries(shards, 0, q, k, l2, out_distances, out_ids);
    return;
  }
  parallel_for(threads, tasks, [&](std::int64_t t, int) {
    merge_queries(shards, t * per_task, std::min(q, (t + 1) * per_task), k, l2, out_distances,
                  out_ids);
  });
}

}  // namespace megatax::index
