// TaxonomyEngine: construction, loading, prediction and accessors (fitting is in fit.cc).
#include <algorithm>
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
  v.set("device", c.device);
  v.set("gpu_dtype", c.gpu_dtype);
  v.set("column", c.column);
  v.set("id_column", c.id_column);
  v.set("skip_null", c.skip_null);
  v.set("output_format", c.output_format);
  v.set("balance", c.balance);
  v.set("min_node_size", c.min_node_size);
  v.set("max_leaf_size", c.max_leaf_size);
  v.set("min_branching", c.min_branching);
  v.set("max_branching", c.max_branching);
  v.set("max_split_rounds", c.max_split_rounds);
  v.set("hnsw_threshold", c.hnsw_threshold);
  v.set("hnsw_m", c.hnsw_m);
  v.set("hnsw_ef_construction", c.hnsw_ef_construction);
  v.set("hnsw_ef", c.hnsw_ef);
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
  if (const json::Value* x = v.find("device")) c.device = x->as_string();  // absent: cpu
  if (const json::Value* x = v.find("gpu_dtype")) c.gpu_dtype = x->as_string();
  if (const json::Value* x = v.find("column")) c.column = x->as_string();  // absent before v0.2
  if (const json::Value* x = v.find("id_column")) c.id_column = x->as_string();
  if (const json::Value* x = v.find("skip_null")) c.skip_null = x->as_bool();
  if (const json::Value* x = v.find("output_format")) c.output_format = x->as_string();
  // Balancing fields came later: manifests without them describe unbalanced fits.
  if (v.contains("balance")) {
    c.balance = v["balance"].as_bool();
    c.min_node_size = v["min_node_size"].as_int();
    c.max_leaf_size = v["max_leaf_size"].as_int();
    c.min_branching = v["min_branching"].as_int();
    c.max_branching = v["max_branching"].as_int();
    c.max_split_rounds = static_cast<int>(v["max_split_rounds"].as_int());
  }
  // HNSW fields came later: manifests without them were fitted by scanning only.
  if (v.contains("hnsw_threshold")) {
    c.hnsw_threshold = v["hnsw_threshold"].as_int();
    c.hnsw_m = v["hnsw_m"].as_int();
    c.hnsw_ef_construction = v["hnsw_ef_construction"].as_int();
    c.hnsw_ef = v["hnsw_ef"].as_int();
  } else {
    c.hnsw_threshold = 0;
  }
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
  if (a.column != b.column) return differ("column");
  if (a.device != b.device) return differ("device");
  if (a.device == "cuda" && a.gpu_dtype != b.gpu_dtype) return differ("gpu_dtype");
  if (a.skip_null != b.skip_null) return differ("skip_null");
  if (a.hnsw_threshold != b.hnsw_threshold) return differ("hnsw_threshold");
  if (a.hnsw_threshold > 0 && (a.hnsw_m != b.hnsw_m || a.hnsw_ef_construction != b.hnsw_ef_construction ||
                               a.hnsw_ef != b.hnsw_ef))
    return differ("hnsw_m/hnsw_ef_construction/hnsw_ef");
  if (a.balance != b.balance) return differ("balance");
  if (a.balance) {
    if (a.min_node_size != b.min_node_size) return differ("min_node_size");
    if (a.max_leaf_size != b.max_leaf_size) return differ("max_leaf_size");
    if (a.min_branching != b.min_branching) return differ("min_branching");
    if (a.max_branching != b.max_branching) return differ("max_branching");
    if (a.max_split_rounds != b.max_split_rounds) return differ("max_split_rounds");
  }
  return true;
}

void normalise_rows(float* x, std::int64_t rows, std::int64_t dim, int threads) {
  // Tasks of ~1M values: a 1M x 1024 batch on one thread took 3.3-3.5 s (an H100 host).
  const std::int64_t per_task = std::max<std::int64_t>(1, (std::int64_t{1} << 20) / std::max<std::int64_t>(dim, 1));
  const std::int64_t tasks = (rows + per_task - 1) / per_task;
  parallel_for(resolve_threads(threads, tasks), tasks, [&](std::int64_t t, int) {
    for (std::int64_t i = t * per_task; i < std::min(rows, (t + 1) * per_task); ++i) {
      float* v = x + i * dim;
      double s = 0;
      for (std::int64_t j = 0; j < dim; ++j) s += static_cast<double>(v[j]) * v[j];
      if (s <= 0) continue;
      const double inv = 1.0 / std::sqrt(s);
      for (std::int64_t j = 0; j < dim; ++j) v[j] = static_cast<float>(v[j] * inv);
    }
  });
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
    auto centroids =
        io::read_npy_array<float, DefaultInitAllocator<float>>(*storage, path(dir + "centroids.npy"), &cshape);
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
    const auto& lv = tree.level(l);
    for (std::size_t j = 0; j + 1 < lv.child_begin.size(); ++j) {
      const std::int64_t kids = lv.child_begin[j + 1] - lv.child_begin[j];
      if (config.hnsw_threshold <= 0 || kids <= config.hnsw_threshold) continue;
      const std::string file = path(dir + "hnsw-" + std::to_string(j) + ".bin");
      if (!storage->exists(file))
        throw_error(ErrorCode::kDataLoss, file + ": missing (parent " + std::to_string(j) + " has " +
                                              std::to_string(kids) + " children > hnsw_threshold " +
                                              std::to_string(config.hnsw_threshold) + ")");
      tree.set_graph(l, static_cast<std::int64_t>(j),
                     taxonomy::CentroidGraph::load(read_all(*storage, file), kids, dim, kernel_metric(),
                                                   hnsw_params(), file));
    }
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
    // Converted and checked in row ranges on the engine's threads; the error names the first
    // non-finite value in row order, whatever the thread count.
    const std::int64_t ranges = std::clamp<std::int64_t>(n / 1024, 1, 64);
    std::vector<std::int64_t> bad(static_cast<std::size_t>(ranges), -1);  // row * d + column
    parallel_for(resolve_threads(s.config.threads, ranges), ranges, [&](std::int64_t r, int) {
      for (std::int64_t i = n * r / ranges; i < n * (r + 1) / ranges; ++i) {
        float* row = buf.data() + i * d;
        convert_to_f32(x.dtype, x.row(b0 + i), static_cast<std::size_t>(d), row);
        const auto j = static_cast<std::int64_t>(first_non_finite(DType::kF32, row, static_cast<std::size_t>(d)));
        if (j < d) {
          bad[static_cast<std::size_t>(r)] = i * d + j;
          return;
        }
      }
    });
    for (const std::int64_t at : bad) {
      if (at < 0) continue;
      throw_error(ErrorCode::kInvalidArgument, "predict: row " + std::to_string(b0 + at / d) +
                                                   " has a non-finite value in column " +
                                                   std::to_string(at % d));
    }
    if (s.normalise()) taxonomy::normalise_rows(buf.data(), n, d, s.config.threads);
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

namespace {

// One beam entry: a node of the current level, its score and its path so far.
struct BeamEntry {
  double score;  // distance (L2) or -similarity (inner product): smaller is nearer
  std::int64_t node;
  std::vector<std::int32_t> path;
};

double score_of(const float* x, const float* c, std::int64_t d, Metric metric) {
  double acc = 0;
  if (metric == Metric::kL2) {
    for (std::int64_t j = 0; j < d; ++j) {
      const double t = static_cast<double>(x[j]) - static_cast<double>(c[j]);
      acc += t * t;
    }
    return acc;
  }
  for (std::int64_t j = 0; j < d; ++j) acc += static_cast<double>(x[j]) * static_cast<double>(c[j]);
  return -acc;
}

bool nearer(const BeamEntry& a, const BeamEntry& b) {
  return a.score < b.score || (a.score == b.score && a.node < b.node);
}

}  // namespace

Prediction TaxonomyEngine::predict(const MatrixView& x, int beam) const {
  if (beam < 1) throw_error(ErrorCode::kInvalidArgument, "predict: beam must be >= 1, got " + std::to_string(beam));
  Prediction greedy = predict(x);
  if (beam == 1) return greedy;
  const Impl& s = *impl_;
  const std::int64_t d = s.tree.dim();
  const int L = s.tree.levels();
  const Metric metric = s.kernel_metric();
  Prediction p = greedy;
  std::vector<std::int64_t> changed(static_cast<std::size_t>(x.rows), 0);
  const int threads = resolve_threads(s.config.threads, x.rows);
  parallel_for(threads, x.rows, [&](std::int64_t i, int) {
    std::vector<float> row(static_cast<std::size_t>(d));
    convert_to_f32(x.dtype, x.row(i), static_cast<std::size_t>(d), row.data());
    if (s.normalise()) taxonomy::normalise_rows(row.data(), 1, d);
    const std::int32_t* gpath = greedy.paths.data() + i * L;
    std::vector<BeamEntry> cur{{0.0, 0, {}}}, next;
    bool have_leaf = false;
    BeamEntry best{0.0, 0, {}};
    int best_level = 0;
    std::int64_t greedy_node = 0;  // greedy's node at the current level (-1 once it stopped)
    auto offer_leaf = [&](const BeamEntry& e, int level) {
      if (level == 0) return;  // the root is never a leaf of a fitted tree
      if (!have_leaf || nearer(e, best)) {
        best = e;
        best_level = level;
        have_leaf = true;
      }
    };
    for (int l = 1; l <= L && !cur.empty(); ++l) {
      const taxonomy::TreeLevel& lv = s.tree.level(l);
      next.clear();
      for (const BeamEntry& e : cur) {
        const std::int64_t b = lv.child_begin[static_cast<std::size_t>(e.node)];
        const std::int64_t end = lv.child_begin[static_cast<std::size_t>(e.node + 1)];
        if (b == end) {
          offer_leaf(e, l - 1);
          continue;
        }
        for (std::int64_t c = b; c < end; ++c) {
          BeamEntry n{score_of(row.data(), lv.centroids.data() + c * d, d, metric), c, e.path};
          n.path.push_back(static_cast<std::int32_t>(c - b));
          next.push_back(std::move(n));
        }
      }
      // Greedy's node at this level (kept in the beam so the result is never farther).
      const std::int64_t g = greedy_node >= 0 && gpath[l - 1] >= 0
                                 ? lv.child_begin[static_cast<std::size_t>(greedy_node)] + gpath[l - 1]
                                 : -1;
      greedy_node = g;
      const auto keep = static_cast<std::size_t>(beam);
      if (next.size() > keep) {
        std::partial_sort(next.begin(), next.begin() + static_cast<std::ptrdiff_t>(keep), next.end(), nearer);
        bool has_g = g < 0;
        for (std::size_t t = 0; t < keep && !has_g; ++t) has_g = next[t].node == g;
        if (!has_g)
          for (std::size_t t = keep; t < next.size(); ++t)
            if (next[t].node == g) {
              std::swap(next[keep - 1], next[t]);
              break;
            }
        next.resize(keep);
      }
      cur.swap(next);
    }
    for (const BeamEntry& e : cur) offer_leaf(e, L);
    if (!have_leaf) return;
    std::int32_t* out = p.paths.data() + i * L;
    bool differs = false;
    for (int l = 0; l < L; ++l) {
      const std::int32_t v = l < best_level ? best.path[static_cast<std::size_t>(l)] : -1;
      differs = differs || v != out[l];
      out[l] = v;
    }
    if (differs) {
      p.distances[static_cast<std::size_t>(i)] =
          static_cast<float>(metric == Metric::kL2 ? best.score : -best.score);
      changed[static_cast<std::size_t>(i)] = 1;
    }
  });
  for (std::int64_t c : changed) p.beam_changed += c;
  return p;
}

void TaxonomyEngine::set_threads(int threads) noexcept { impl_->config.threads = threads; }
void TaxonomyEngine::set_search(bool exact, std::int64_t ef) {
  if (ef < 0) throw_error(ErrorCode::kInvalidArgument, "hnsw_ef must be >= 1 (0 keeps it), got " + std::to_string(ef));
  impl_->tree.set_use_graphs(!exact);
  if (ef > 0) {
    impl_->config.hnsw_ef = ef;
    impl_->tree.set_graph_ef(ef);
  }
}
const TaxonomyConfig& TaxonomyEngine::config() const noexcept { return impl_->config; }
std::int64_t TaxonomyEngine::dim() const noexcept { return impl_->fitted ? impl_->tree.dim() : 0; }
bool TaxonomyEngine::fitted() const noexcept { return impl_->fitted; }

std::vector<std::int64_t> TaxonomyEngine::nodes_per_level() const {
  std::vector<std::int64_t> out;
  for (int l = 1; l <= impl_->tree.levels(); ++l) out.push_back(impl_->tree.nodes(l));
  return out;
}

std::span<const float> TaxonomyEngine::centroids(int level) const {
  if (level < 1 || level > impl_->tree.levels())
    throw_error(ErrorCode::kOutOfRange, "centroids: level " + std::to_string(level) +
                                            " is not in [1, " + std::to_string(impl_->tree.levels()) + "]");
  return impl_->tree.level(level).centroids;
}

std::string TaxonomyEngine::manifest_json() const { return json::dump(impl_->manifest, 2); }

}  // namespace megatax
