#include <algorithm>
#include <string>

#include "megatax/error.h"
#include "megatax/taxonomy.h"

namespace megatax {

const char* taxonomy_metric_name(TaxonomyMetric m) noexcept {
  switch (m) {
    case TaxonomyMetric::kL2: return "l2";
    case TaxonomyMetric::kInnerProduct: return "ip";
    case TaxonomyMetric::kCosine: return "cosine";
  }
  return "unknown";
}

TaxonomyMetric parse_taxonomy_metric(const std::string& name) {
  if (name == "l2") return TaxonomyMetric::kL2;
  if (name == "ip") return TaxonomyMetric::kInnerProduct;
  if (name == "cosine") return TaxonomyMetric::kCosine;
  throw_error(ErrorCode::kInvalidArgument,
              "metric: unknown value '" + name + "': expected l2, ip or cosine");
}

std::int64_t TaxonomyConfig::branching_at(int level) const {
  return branching.size() == 1 ? branching[0] : branching.at(static_cast<std::size_t>(level - 1));
}

std::int64_t TaxonomyConfig::max_branching_at(int level) const {
  const std::int64_t b = branching_at(level);
  if (!balance) return b;
  return std::max(b, max_branching > 0 ? max_branching : 4 * b);
}

std::int64_t TaxonomyConfig::sample_capacity(int level) const {
  return sample_per_centroid * max_branching_at(level);
}

void TaxonomyConfig::validate() const {
  auto bad = [](const std::string& msg) { throw_error(ErrorCode::kInvalidArgument, msg); };
  if (n_levels < 1 || n_levels > 64) bad("n_levels must be in [1, 64], got " + std::to_string(n_levels));
  if (branching.empty()) bad("branching_factor: at least one value is required");
  if (branching.size() != 1 && static_cast<int>(branching.size()) != n_levels)
    bad("branching_factor: " + std::to_string(branching.size()) + " values given for " +
        std::to_string(n_levels) + " levels (give one value or one per level)");
  for (std::size_t i = 0; i < branching.size(); ++i)
    if (branching[i] < 2 || branching[i] > (std::int64_t{1} << 24))
      bad("branching_factor: value " + std::to_string(branching[i]) + " at level " +
          std::to_string(i + 1) + " must be in [2, 16777216]");
  if (dim < 0) bad("dim must be >= 0 (0 = from the data), got " + std::to_string(dim));
  if (storage_uri.empty()) bad("storage_uri is required");
  if (sample_per_centroid < 1) bad("sample_per_centroid must be >= 1, got " + std::to_string(sample_per_centroid));
  if (max_iter < 0) bad("max_iter must be >= 0, got " + std::to_string(max_iter));
  if (!(tol >= 0)) bad("tol must be >= 0");
  if (lloyd_passes < 0) bad("lloyd_passes must be >= 0, got " + std::to_string(lloyd_passes));
  if (batch_rows < 1) bad("batch_rows must be >= 1, got " + std::to_string(batch_rows));
  if (device != "cpu" && device != "cuda") bad("device must be cpu or cuda, got '" + device + "'");
  if (gpu_dtype != "auto" && gpu_dtype != "f32" && gpu_dtype != "f16" && gpu_dtype != "bf16")
    bad("gpu_dtype must be auto, f32, f16 or bf16, got '" + gpu_dtype + "'");
  if (gpu < -1) bad("gpu must be >= 0 (or -1: the local rank's), got " + std::to_string(gpu));
  if (memory_budget_mb < 1) bad("memory_budget_mb must be >= 1");
  if (output_format != "npy" && output_format != "parquet")
    bad("output_format: unknown value '" + output_format + "': expected npy or parquet");
  if (column.empty()) bad("column: the embedding column name is empty");
  if (min_node_size < 0) bad("min_node_size must be >= 0, got " + std::to_string(min_node_size));
  if (max_leaf_size < 0) bad("max_leaf_size must be >= 0, got " + std::to_string(max_leaf_size));
  if (min_branching < 2) bad("min_branching must be >= 2, got " + std::to_string(min_branching));
  if (max_branching != 0 && (max_branching < min_branching || max_branching > (std::int64_t{1} << 24)))
    bad("max_branching must be 0 or in [min_branching, 16777216], got " + std::to_string(max_branching));
  if (hnsw_threshold < 0) bad("hnsw_threshold must be >= 0 (0 = never), got " + std::to_string(hnsw_threshold));
  if (hnsw_m < 2 || hnsw_m > 1024) bad("hnsw_m must be in [2, 1024], got " + std::to_string(hnsw_m));
  if (hnsw_ef_construction < 1) bad("hnsw_ef_construction must be >= 1, got " + std::to_string(hnsw_ef_construction));
  if (hnsw_ef < 1) bad("hnsw_ef must be >= 1, got " + std::to_string(hnsw_ef));
  if (max_split_rounds < 0 || max_split_rounds > 64)
    bad("max_split_rounds must be in [0, 64], got " + std::to_string(max_split_rounds));
}

}  // namespace megatax
