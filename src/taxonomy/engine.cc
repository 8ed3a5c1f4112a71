// TaxonomyEngine: construction, loading, prediction and accessors (fitting is in fit.cc).
#include <cmath>
#include <string>

#include "core/parallel.h"
#include "io/npy_array.h"
#include "megatax/dataset.h"
#include "megatax/error.h"
#include "megatax/vector_format.h"
#include "taxonomy/engine_impl.h"

namespace megatax {
namespace taxonomy {

json::Value config_to_json(const TaxonomyConfig& c) {
  json::Value v = json::Value::object();
  v.set("n_levels", c.n_levels);
  json::Value b = json::Value::array();
  for (std::int64_t x : c.branching) b.push_back(x);
  v.set("branching_factor", std::move(b));
  v.set("dim", c.dim);
  v.set("metric", taxonomy_metric_name(c.metric));
  v.set("sample_per_centroid", c.sample_per_centroid);
  v.set("max_iter", c.max_iter);
  v.set("tol", c.tol);
  v.set("seed", static_cast<std::int64_t>(c.seed));
  v.set("lloyd_passes", c.lloyd_passes);
  v.set("threads", c.threads);
  v.set("batch_rows", c.batch_rows);
  v.set("memory_budget_mb", c.memory_budget_mb);
  v.set("simd", c.simd);
  return v;
}

TaxonomyConfig config_from_json(const json::Value& v) {
  TaxonomyConfig c;
  c.n_levels = static_cast<int>(v["n_levels"].as_int());
  c.branching.clear();
  for (const json::Value& x : v["branching_factor"].as_array()) c.branching.push_back(x.as_int());
  c.dim = v["dim"].as_int();
  c.metric = parse_taxonomy_metric(v["metric"].as_string());
  c.sample_per_centroid = v["sample_per_centroid"].as_int();
  c.max_iter = static_cast<int>(v["max_iter"].as_int());
  c.tol = v["tol"].as_double();
  c.seed = static_cast<std::uint64_t>(v["seed"].as_int());
  c.lloyd_passes = static_cast<int>(v["lloyd_passes"].as_int());
  c.threads = static_cast<int>(v["threads"].as_int());
  c.batch_rows = v["batch_rows"].as_int();
  c.memory_budget_mb = v["memory_budget_mb"].as_int();
  c.simd = v["simd"].as_string();
  return c;
}

bool same_model_config(const TaxonomyConfig& a, const TaxonomyConfig& b, std::string* why) {
  auto differ = [&](const char* field) {
    *why = std::string("config field '") + field + "' differs from the run being resumed";
    return false;
  };
  if (a.n_levels != b.n_levels) return differ("n_levels");
  for (int l = 1; l <= a.n_levels; ++l)
    if (a.branching_at(l) != b.branching_at(l)) return differ("branching_factor");
  if (a.metric != b.metric) return differ("metric");
  if (a.sample_per_centroid != b.sample_per_centroid) return differ("sample_per_centroid");
  if (a.max_iter != b.max_iter) return differ("max_iter");
  if (a.tol != b.tol) return differ("tol");
  if (a.seed != b.seed) return differ("seed");
  if (a.lloyd_passes != b.lloyd_passes) return differ("lloyd_passes");
  return true;
}

void normalise_rows(float* x, std::int64_t rows, std::int64_t dim) {
  for (std::int64_t i = 0; i < rows; ++i) {
    float* v = x + i * dim;
    double s = 0;
    for (std::int64_t j = 0; j < dim; ++j) s += static_cast<double>(v[j]) * v[j];
    if (s <= 0) continue;
    const double inv = 1.0 / std::sqrt(s);
    for (std::int64_t j = 0; j < dim; ++j) v[j] = static_cast<float>(v[j] * inv);
  }
}

std::string base_name(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string shard_stem(const std::string& path) {
  std::string name = base_name(path);
  const auto dot = name.find_last_of('.');
  return dot == std::string::npos || dot == 0 ? name : name.substr(0, dot);
}

}  // namespace taxonomy

void TaxonomyEngine::Impl::open_storage() {
  storage = open_storage_for_uri(config.storage_uri, &root);
}

void TaxonomyEngine::Impl::load_levels(int levels, std::int64_t dim) {
  tree = taxonomy::Tree(dim, kernel_metric());
  for (int l = 1; l <= levels; ++l) {
    const std::string dir = "level-" + std::to_string(l) + "/";
    std::vector<std::int64_t> cshape, nshape, ishape;
    auto centroids = io::read_npy_array<float>(*storage, path(dir + "centroids.npy"), &cshape);
    auto nodes = io::read_npy_array<std::int64_t>(*storage, path(dir + "nodes.npy"), &nshape);
    auto inertia = io::read_npy_array<double>(*storage, path(dir + "inertia.npy"), &ishape);
    const std::int64_t n = nshape.empty() ? 0 : nshape[0];
    if (cshape.size() != 2 || cshape[0] != n || cshape[1] != dim || nshape.size() != 2 ||
        nshape[1] != 2 || ishape.size() != 1 || ishape[0] != n)
      throw_error(ErrorCode::kDataLoss, path(dir) + ": model files disagree in shape (expected " +
                                            std::to_string(n) + " nodes of dim " +
                                            std::to_string(dim) + ")");
    std::vector<std::int64_t> parent(static_cast<std::size_t>(n)), count(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      parent[static_cast<std::size_t>(i)] = nodes[static_cast<std::size_t>(2 * i)];
      count[static_cast<std::size_t>(i)] = nodes[static_cast<std::size_t>(2 * i + 1)];
    }
    tree.add_level(std::move(centroids), std::move(parent));
    tree.mutable_level(l).count = std::move(count);
    tree.mutable_level(l).inertia = std::move(inertia);
  }
}

TaxonomyEngine::TaxonomyEngine(TaxonomyConfig config) : impl_(std::make_unique<Impl>()) {
  config.validate();
  impl_->config = std::move(config);
}
TaxonomyEngine::~TaxonomyEngine() = default;
TaxonomyEngine::TaxonomyEngine(TaxonomyEngine&&) noexcept = default;
TaxonomyEngine& TaxonomyEngine::operator=(TaxonomyEngine&&) noexcept = default;

TaxonomyEngine TaxonomyEngine::load(const std::string& storage_uri) {
  std::string root;
  auto storage = open_storage_for_uri(storage_uri, &root);
  const std::string manifest_path =
      root.empty() ? std::string(kManifestName) : root + (root.back() == '/' ? "" : "/") + kManifestName;
  if (!storage->exists(manifest_path))
    throw_error(ErrorCode::kNotFound, "no taxonomy at '" + storage_uri + "': " + manifest_path +
                                          " does not exist");
  json::Value manifest = json::parse(read_all(*storage, manifest_path), manifest_path);
  if (manifest["format_version"].as_int() != kTaxonomyFormatVersion)
    throw_error(ErrorCode::kDataLoss, manifest_path + ": format_version " +
                                          std::to_string(manifest["format_version"].as_int()) +
                                          ", this build reads " +
                                          std::to_string(kTaxonomyFormatVersion));
  if (manifest["status"].as_string() != "complete")
    throw_error(ErrorCode::kFailedPrecondition,
                manifest_path + ": the fit is not complete (status '" +
                    manifest["status"].as_string() + "'); finish it with fit --resume");
  TaxonomyConfig config = taxonomy::config_from_json(manifest["config"]);
  config.storage_uri = storage_uri;
  TaxonomyEngine engine(config);
  Impl& s = *engine.impl_;
  s.storage = std::move(storage);
  s.root = root;
  s.manifest = std::move(manifest);
  s.load_levels(config.n_levels, s.manifest["dim"].as_int());
  s.fitted = true;
  return engine;
}

Prediction TaxonomyEngine::predict(const MatrixView& x) const {
  const Impl& s = *impl_;
  if (!s.fitted) throw_error(ErrorCode::kFailedPrecondition, "predict: the taxonomy is not fitted");
  validate_view(x, "vectors");
  const std::int64_t d = s.tree.dim();
  if (x.dim != d)
    throw_error(ErrorCode::kInvalidArgument,
                "predict: vectors have dim " + std::to_string(x.dim) + ", taxonomy has dim " + std::to_string(d));
  const int L = s.tree.levels();
  Prediction p;
  p.n_levels = L;
  p.paths.assign(static_cast<std::size_t>(x.rows * L), -1);
  p.distances.assign(static_cast<std::size_t>(x.rows), 0.f);
  const std::int64_t batch = std::max<std::int64_t>(1, s.config.batch_rows);
  std::vector<float> buf;
  std::vector<std::int32_t> prev, node, child;
  for (std::int64_t b0 = 0; b0 < x.rows; b0 += batch) {
    const std::int64_t n = std::min(batch, x.rows - b0);
    buf.resize(static_cast<std::size_t>(n * d));
    for (std::int64_t i = 0; i < n; ++i) {
      convert_to_f32(x.dtype, x.row(b0 + i), static_cast<std::size_t>(d), buf.data() + i * d);
      for (std::int64_t j = 0; j < d; ++j)
        if (!std::isfinite(buf[static_cast<std::size_t>(i * d + j)]))
          throw_error(ErrorCode::kInvalidArgument, "predict: row " + std::to_string(b0 + i) +
                                                       " has a non-finite value in column " +
                                                       std::to_string(j));
    }
    if (s.normalise()) taxonomy::normalise_rows(buf.data(), n, d);
    prev.assign(static_cast<std::size_t>(n), 0);
    node.assign(static_cast<std::size_t>(n), -1);
    child.assign(static_cast<std::size_t>(n), -1);
    for (int l = 1; l <= L; ++l) {
      s.tree.descend(l, f32_view(buf.data(), n, d), prev.data(), node.data(), child.data(),
                     p.distances.data() + b0, s.knn_options());
      for (std::int64_t i = 0; i < n; ++i)
        p.paths[static_cast<std::size_t>((b0 + i) * L + l - 1)] = child[static_cast<std::size_t>(i)];
      prev.swap(node);
    }
  }
  return p;
}

void TaxonomyEngine::set_threads(int threads) noexcept { impl_->config.threads = threads; }
const TaxonomyConfig& TaxonomyEngine::config() const noexcept { return impl_->config; }
std::int64_t TaxonomyEngine::dim() const noexcept { return impl_->fitted ? impl_->tree.dim() : 0; }
bool TaxonomyEngine::fitted() const noexcept { return impl_->fitted; }

std::vector<std::int64_t> TaxonomyEngine::nodes_per_level() const {
  std::vector<std::int64_t> out;
  for (int l = 1; l <= impl_->tree.levels(); ++l) out.push_back(impl_->tree.nodes(l));
  return out;
}

const std::vector<float>& TaxonomyEngine::centroids(int level) const {
  if (level < 1 || level > impl_->tree.levels())
    throw_error(ErrorCode::kOutOfRange, "centroids: level " + std::to_string(level) +
                                            " is not in [1, " + std::to_string(impl_->tree.levels()) + "]");
  return impl_->tree.level(level).centroids;
}

std::string TaxonomyEngine::manifest_json() const { return json::dump(impl_->manifest, 2); }

}  // namespace megatax
