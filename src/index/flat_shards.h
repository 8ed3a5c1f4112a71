// index/flat_shards.h -- how a flat index's rows are dealt to the GPUs of a sharded search,
// and how the shards' results are merged (host code: the CUDA mirror uses it; tested on
// the CPU against a brute-force search).
//
// Rows go in blocks of block_rows, dealt round-robin: block b to shard b % shards. A shard
// holds its blocks in order, so every block but the index's last is full, rows appended to
// the index extend the shards without moving any row, and a shard's local row numbers map
// to the index's ids in increasing order (ties to the smaller id survive the merge).
#pragma once

#include <cstdint>
#include <vector>

#include "megatax/metric.h"

namespace megatax::index {

inline constexpr std::int64_t kFlatShardBlockRows = std::int64_t{1} << 16;

struct FlatShards {
  int shards = 1;                                 // >= 1
  std::int64_t block_rows = kFlatShardBlockRows;  // >= 1

  // Rows of shard s (0 <= s < shards) when the index holds n.
  std::int64_t rows_of(int s, std::int64_t n) const;
  // The index row (id) of shard s's local row `local`.
  std::int64_t global_row(int s, std::int64_t local) const {
    return ((local / block_rows) * shards + s) * block_rows + local % block_rows;
  }
};

// One shard's search results: q x k distances and ids (index ids, -1 for none), each row
// nearest first, ties to the smaller id (IndexFlat::search's order).
struct ShardResults {
  const float* distances = nullptr;
  const std::int64_t* ids = nullptr;
};
// The k best of the shards' results per query into out_distances / out_ids (q x k): nearer
// first (kL2: smaller distance, kInnerProduct: larger), ties to the smaller id, ids -1 last.
// Queries are merged on up to `threads` threads (0: all hardware threads) when there are
// many; the result does not depend on the count.
void merge_shard_results(const std::vector<ShardResults>& shards, std::int64_t q, std::int64_t k,
                         Metric metric, float* out_distances, std::int64_t* out_ids,
                         int threads = 0);

}  // namespace megatax::index
