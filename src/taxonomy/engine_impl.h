// taxonomy/engine_impl.h -- TaxonomyEngine's state, shared by fit.cc and engine.cc.
//
// On-disk layout at storage_uri (docs/taxonomy_format.md):
//   taxonomy.json                       manifest, written last at every commit
//   level-<l>/centroids.npy             float32 [nodes_l, dim]
//   level-<l>/nodes.npy                 int64 [nodes_l, 2]: parent at level l-1, point count
//   level-<l>/inertia.npy               float64 [nodes_l]
//   level-<l>/hnsw-<parent>.bin         HNSW graph over a wide parent's children (hnswlib)
//   state/level-<l>/<shard>.{node,paths,dist}.npy   per-shard fit state after level l
//   state/samples-<l>.{offsets,ids,priorities}.npy  level l's training samples
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "core/json.h"
#include "kernels/cpu/knn.h"
#include "megatax/storage.h"
#include "megatax/taxonomy.h"
#include "taxonomy/compute_backend.h"
#include "taxonomy/tree.h"

namespace megatax {

inline constexpr int kTaxonomyFormatVersion = 1;
inline constexpr const char* kManifestName = "taxonomy.json";

struct TaxonomyEngine::Impl {
  TaxonomyConfig config;
  std::unique_ptr<Storage> storage;  // for config.storage_uri
  std::string root;                  // path of storage_uri within `storage`
  taxonomy::Tree tree;
  bool fitted = false;
  json::Value manifest;
  // predict(x, options) on a GPU (predict_rows_device.cc): the backend holding every level,
  // kept between calls with the same gpu, dtype and data dtype (key); dropped by a fit,
  // release_gpu() or an error. gpu_mutex guards both and serialises those calls.
  mutable std::mutex gpu_mutex;
  mutable std::unique_ptr<taxonomy::ComputeBackend> gpu_backend;
  mutable std::string gpu_backend_key;

  std::string path(const std::string& relative) const {
    return root.empty() ? relative : (root.back() == '/' ? root + relative : root + "/" + relative);
  }
  Metric kernel_metric() const {
    return config.metric == TaxonomyMetric::kL2 ? Metric::kL2 : Metric::kInnerProduct;
  }
  bool normalise() const { return config.metric == TaxonomyMetric::kCosine; }
  taxonomy::HnswParams hnsw_params() const {
    taxonomy::HnswParams p;
    p.m = config.hnsw_m;
    p.ef_construction = config.hnsw_ef_construction;
    p.ef = config.hnsw_ef;
    p.simd = kernels::parse_simd_level(config.simd);
    return p;
  }
  kernels::KnnOptions knn_options() const {
    kernels::KnnOptions o;
    o.threads = config.threads;
    o.simd = kernels::parse_simd_level(config.simd);
    return o;
  }
  // What a GPU predict multiplies in: options.predict_gpu_dtype, "auto" being what the fit
  // multiplied in when it ran on a GPU (the manifest's gpu_compute_dtype: the same products
  // whatever the dtype of the rows predicted; a model written before that field: its
  // config's gpu_dtype), else the rows' dtype when f16/bf16, f32 otherwise.
  std::string predict_gpu_dtype(const FitOptions& options) const {
    if (options.predict_gpu_dtype != "auto" || config.device != "cuda")
      return options.predict_gpu_dtype;
    if (const json::Value* used = manifest.find("gpu_compute_dtype");
        used != nullptr && used->is_string())
      return used->as_string();
    return config.gpu_dtype;
  }
  // Checks options.predict_device ("cpu" or "cuda") and that a GPU predict is greedy (beam 1);
  // returns whether the predict runs on a GPU. Error(kInvalidArgument) otherwise.
  static bool predict_on_gpu(const FitOptions& options);
  // The kept GPU backend for options (made, with every level prepared, when there is none or
  // it was made for other options). Caller holds gpu_mutex.
  taxonomy::ComputeBackend& gpu_predictor(const FitOptions& options, DType data_dtype) const;
  void open_storage();
  // Loads levels 1..levels of the model files (and their HNSW graphs) into `tree` (dim and
  // metric from config).
  void load_levels(int levels, std::int64_t dim);
};

namespace taxonomy {

// Config <-> JSON (the manifest's "config").
json::Value config_to_json(const TaxonomyConfig& c);
TaxonomyConfig config_from_json(const json::Value& v);
// Fields that must agree between a run and the one it resumes (not threads, batch, simd).
bool same_model_config(const TaxonomyConfig& a, const TaxonomyConfig& b, std::string* why);

// L2-normalises every row of a dense f32 matrix in place (zero rows stay zero): per row the
// float64 sum of its squares in column order, each value times 1 / sqrt(sum) in float64
// rounded to f32 (cuda::normalise_rows has the same bits). Rows in parallel on `threads`
// (resolve_threads' meaning; the bits do not depend on it).
void normalise_rows(float* x, std::int64_t rows, std::int64_t dim, int threads = 1);

// "part-00001" for "/data/part-00001.npy": the output stem of a shard.
std::string shard_stem(const std::string& path);
// "part-00001.npy" for "/data/part-00001.npy".
std::string base_name(const std::string& path);

}  // namespace taxonomy
}  // namespace megatax
