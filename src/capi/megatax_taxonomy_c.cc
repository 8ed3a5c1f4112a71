// capi/megatax_taxonomy_c.cc -- the taxonomy half of the C API: checks and translation only.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "capi/c_api_guard.h"
#include "megatax/megatax_c.h"
#include "megatax/taxonomy.h"

struct megatax_taxonomy {
  explicit megatax_taxonomy(megatax::TaxonomyEngine&& e) : engine(std::move(e)) {}
  megatax::TaxonomyEngine engine;
};

namespace {

using megatax::ErrorCode;
using megatax::capi::guarded;
using megatax::capi::require;

static_assert(MEGATAX_TAXONOMY_METRIC_L2 == static_cast<int>(megatax::TaxonomyMetric::kL2));
static_assert(MEGATAX_TAXONOMY_METRIC_IP == static_cast<int>(megatax::TaxonomyMetric::kInnerProduct));
static_assert(MEGATAX_TAXONOMY_METRIC_COSINE == static_cast<int>(megatax::TaxonomyMetric::kCosine));

megatax::TaxonomyConfig to_config(const megatax_taxonomy_config_t& c) {
  megatax::TaxonomyConfig out;
  out.n_levels = c.n_levels;
  if (c.branching != nullptr) {
    if (c.n_branching < 1)
      megatax::throw_error(ErrorCode::kInvalidArgument, "config->n_branching must be >= 1");
    out.branching.assign(c.branching, c.branching + c.n_branching);
  }
  out.dim = c.dim;
  require(c.storage_uri, "config->storage_uri");
  out.storage_uri = c.storage_uri;
  if (c.metric < MEGATAX_TAXONOMY_METRIC_L2 || c.metric > MEGATAX_TAXONOMY_METRIC_COSINE)
    megatax::throw_error(ErrorCode::kInvalidArgument,
                         "config->metric must be a MEGATAX_TAXONOMY_METRIC_* value (0..2), got " +
                             std::to_string(c.metric));
  out.metric = static_cast<megatax::TaxonomyMetric>(c.metric);
  out.sample_per_centroid = c.sample_per_centroid;
  out.max_iter = c.max_iter;
  out.tol = c.tol;
  out.seed = c.seed;
  out.threads = c.threads;
  out.lloyd_passes = c.lloyd_passes;
  out.batch_rows = c.batch_rows;
  out.balance = c.balance != 0;
  out.min_node_size = c.min_node_size;
  out.max_leaf_size = c.max_leaf_size;
  out.min_branching = c.min_branching;
  out.max_branching = c.max_branching;
  out.max_split_rounds = c.max_split_rounds;
  out.hnsw_threshold = c.hnsw_threshold;
  out.hnsw_m = c.hnsw_m;
  out.hnsw_ef_construction = c.hnsw_ef_construction;
  out.hnsw_ef = c.hnsw_ef;
  if (c.device != nullptr) out.device = c.device;
  out.gpu = c.gpu;
  if (c.gpu_dtype != nullptr) out.gpu_dtype = c.gpu_dtype;
  return out;
}

// FitOptions for a predict on `device` (NULL = "cpu"), gpu, gpu_dtype (NULL = "auto").
megatax::FitOptions device_options(const char* device, int gpu, const char* gpu_dtype) {
  megatax::FitOptions options;
  options.progress = false;
  options.predict_device = device != nullptr ? device : "cpu";
  options.predict_gpu = gpu;
  options.predict_gpu_dtype = gpu_dtype != nullptr ? gpu_dtype : "auto";
  return options;
}

// The array predicts' common part: checks the pointers, predicts the n x dim f32 rows of x
// with `predict(view)` and writes paths (and distances, if asked) out; returns the prediction.
template <class Predict>
megatax::Prediction predict_rows(const megatax_taxonomy_t* taxonomy, int64_t n, const float* x,
                                 int32_t* paths, float* distances, Predict&& predict) {
  require(taxonomy, "taxonomy");
  if (n > 0) {
    require(x, "x");
    require(paths, "paths");
  }
  megatax::Prediction p =
      predict(megatax::MatrixView(x, n, taxonomy->engine.dim(), megatax::DType::kF32));
  std::copy(p.paths.begin(), p.paths.end(), paths);
  if (distances != nullptr) std::copy(p.distances.begin(), p.distances.end(), distances);
  return p;
}

}  // namespace

extern "C" {

int megatax_taxonomy_config_init(megatax_taxonomy_config_t* config) {
  return guarded("megatax_taxonomy_config_init", [&] {
    require(config, "config");
    const megatax::TaxonomyConfig d;
    config->n_levels = d.n_levels;
    config->branching = nullptr;
    config->n_branching = 0;
    config->dim = d.dim;
    config->storage_uri = nullptr;
    config->metric = static_cast<int>(d.metric);
    config->sample_per_centroid = d.sample_per_centroid;
    config->max_iter = d.max_iter;
    config->tol = d.tol;
    config->seed = d.seed;
    config->threads = d.threads;
    config->lloyd_passes = d.lloyd_passes;
    config->batch_rows = d.batch_rows;
    config->balance = d.balance ? 1 : 0;
    config->min_node_size = d.min_node_size;
    config->max_leaf_size = d.max_leaf_size;
    config->min_branching = d.min_branching;
    config->max_branching = d.max_branching;
    config->max_split_rounds = d.max_split_rounds;
    config->hnsw_threshold = d.hnsw_threshold;
    config->hnsw_m = d.hnsw_m;
    config->hnsw_ef_construction = d.hnsw_ef_construction;
    config->hnsw_ef = d.hnsw_ef;
    config->device = "cpu";
    config->gpu = d.gpu;
    config->gpu_dtype = "auto";
  });
}

int megatax_taxonomy_create(const megatax_taxonomy_config_t* config, megatax_taxonomy_t** out) {
  if (out != nullptr) *out = nullptr;
  return guarded("megatax_taxonomy_create", [&] {
    require(out, "out");
    require(config, "config");
    *out = std::make_unique<megatax_taxonomy>(megatax::TaxonomyEngine(to_config(*config))).release();
  });
}

int megatax_taxonomy_load(const char* storage_uri, megatax_taxonomy_t** out) {
  if (out != nullptr) *out = nullptr;
  return guarded("megatax_taxonomy_load", [&] {
    require(out, "out");
    require(storage_uri, "storage_uri");
    *out = std::make_unique<megatax_taxonomy>(megatax::TaxonomyEngine::load(storage_uri)).release();
  });
}

void megatax_taxonomy_destroy(megatax_taxonomy_t* taxonomy) {
  std::unique_ptr<megatax_taxonomy> owned(taxonomy);  // NULL: no-op
}

int megatax_taxonomy_fit(megatax_taxonomy_t* taxonomy, const char* input_uri,
                         const char* output_uri, int resume) {
  return guarded("megatax_taxonomy_fit", [&] {
    require(taxonomy, "taxonomy");
    require(input_uri, "input_uri");
    require(output_uri, "output_uri");
    megatax::FitOptions options;
    options.resume = resume != 0;
    options.progress = false;
    taxonomy->engine.fit(input_uri, output_uri, options);
  });
}

int megatax_taxonomy_predict(const megatax_taxonomy_t* taxonomy, int64_t n, const float* x,
                             int32_t* paths, float* distances) {
  return guarded("megatax_taxonomy_predict", [&] {
    predict_rows(taxonomy, n, x, paths, distances,
                 [&](const megatax::MatrixView& v) { return taxonomy->engine.predict(v); });
  });
}

int megatax_taxonomy_predict_beam(const megatax_taxonomy_t* taxonomy, int64_t n, const float* x,
                                  int beam, int32_t* paths, float* distances,
                                  int64_t* beam_changed) {
  return guarded("megatax_taxonomy_predict_beam", [&] {
    const auto p = predict_rows(taxonomy, n, x, paths, distances, [&](const megatax::MatrixView& v) {
      return taxonomy->engine.predict(v, beam);
    });
    if (beam_changed != nullptr) *beam_changed = p.beam_changed;
  });
}

int megatax_taxonomy_predict_files(const megatax_taxonomy_t* taxonomy, const char* input_uri,
                                   const char* output_uri) {
  return guarded("megatax_taxonomy_predict_files", [&] {
    require(taxonomy, "taxonomy");
    require(input_uri, "input_uri");
    require(output_uri, "output_uri");
    megatax::FitOptions options;
    options.progress = false;
    taxonomy->engine.predict(input_uri, output_uri, options);
  });
}

int megatax_taxonomy_predict_files_beam(const megatax_taxonomy_t* taxonomy, const char* input_uri,
                                        const char* output_uri, int beam, int64_t* rows,
                                        int64_t* beam_changed) {
  return guarded("megatax_taxonomy_predict_files_beam", [&] {
    require(taxonomy, "taxonomy");
    require(input_uri, "input_uri");
    require(output_uri, "output_uri");
    megatax::FitOptions options;
    options.progress = false;
    options.beam = beam;
    const auto report = taxonomy->engine.predict(input_uri, output_uri, options);
    if (rows != nullptr) *rows = report.rows;
    if (beam_changed != nullptr) *beam_changed = report.beam_changed;
  });
}

int megatax_taxonomy_predict_device(const megatax_taxonomy_t* taxonomy, int64_t n, const float* x,
                                    const char* device, int gpu, const char* gpu_dtype,
                                    int32_t* paths, float* distances) {
  return guarded("megatax_taxonomy_predict_device", [&] {
    predict_rows(taxonomy, n, x, paths, distances, [&](const megatax::MatrixView& v) {
      return taxonomy->engine.predict(v, device_options(device, gpu, gpu_dtype));
    });
  });
}

int megatax_taxonomy_predict_files_device(const megatax_taxonomy_t* taxonomy, const char* input_uri,
                                          const char* output_uri, const char* device, int gpu,
                                          const char* gpu_dtype, int64_t* rows) {
  return guarded("megatax_taxonomy_predict_files_device", [&] {
    require(taxonomy, "taxonomy");
    require(input_uri, "input_uri");
    require(output_uri, "output_uri");
    const auto report =
        taxonomy->engine.predict(input_uri, output_uri, device_options(device, gpu, gpu_dtype));
    if (rows != nullptr) *rows = report.rows;
  });
}

void megatax_taxonomy_release_gpu(megatax_taxonomy_t* taxonomy) {
  if (taxonomy != nullptr) taxonomy->engine.release_gpu();
}

int megatax_taxonomy_set_search(megatax_taxonomy_t* taxonomy, int exact, int64_t hnsw_ef) {
  return guarded("megatax_taxonomy_set_search", [&] {
    require(taxonomy, "taxonomy");
    taxonomy->engine.set_search(exact != 0, hnsw_ef);
  });
}

int megatax_taxonomy_levels(const megatax_taxonomy_t* taxonomy, int* out) {
  return guarded("megatax_taxonomy_levels", [&] {
    require(taxonomy, "taxonomy");
    require(out, "out");
    *out = taxonomy->engine.config().n_levels;
  });
}

int megatax_taxonomy_dim(const megatax_taxonomy_t* taxonomy, int64_t* out) {
  return guarded("megatax_taxonomy_dim", [&] {
    require(taxonomy, "taxonomy");
    require(out, "out");
    *out = taxonomy->engine.dim();
  });
}

}  // extern "C"
