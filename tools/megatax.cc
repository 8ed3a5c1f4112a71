// megatax -- the command line of Mega-Taxonomy: gen, fit, predict, info, demo.
//
// Every command prints --help; errors are one line on stderr ("megatax fit: ...") and a
// non-zero exit (2 for usage errors, 1 for failures).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/progress.h"
#include "io/npy_array.h"
#include "megatax/error.h"
#include "megatax/storage.h"
#include "megatax/taxonomy.h"
#include "taxonomy/plan.h"
#include "taxonomy/synthetic.h"

namespace {

using megatax::Error;
using megatax::ErrorCode;

struct UsageError {
  std::string message;
};

// --key value pairs and --flag switches, checked against what a command accepts.
class Args {
 public:
  Args(int argc, char** argv, int first, const std::set<std::string>& options,
       const std::set<std::string>& switches, const std::string& command) {
    for (int i = first; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "-h" || a == "--help") {
        help = true;
        continue;
      }
      if (a.rfind("--", 0) != 0) throw UsageError{"unexpected argument '" + a + "'"};
      std::string key = a.substr(2), value;
      const auto eq = key.find('=');
      const bool inline_value = eq != std::string::npos;
      if (inline_value) {
        value = key.substr(eq + 1);
        key = key.substr(0, eq);
      }
      if (switches.count(key)) {
        if (inline_value) throw UsageError{"--" + key + " takes no value"};
        flags_.insert(key);
      } else if (options.count(key)) {
        if (!inline_value) {
          if (i + 1 >= argc) throw UsageError{"--" + key + " needs a value"};
          value = argv[++i];
        }
        values_[key] = value;
      } else {
        throw UsageError{"unknown option --" + key + " (see megatax " + command + " --help)"};
      }
    }
  }
  bool help = false;
  bool flag(const std::string& k) const { return flags_.count(k) > 0; }
  bool has(const std::string& k) const { return values_.count(k) > 0; }
  std::string str(const std::string& k, const std::string& def = "") const {
    auto it = values_.find(k);
    return it == values_.end() ? def : it->second;
  }
  std::string required(const std::string& k) const {
    if (!has(k)) throw UsageError{"--" + k + " is required"};
    return values_.at(k);
  }
  std::int64_t integer(const std::string& k, std::int64_t def) const {
    if (!has(k)) return def;
    const std::string v = values_.at(k);
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno != 0)
      throw UsageError{"--" + k + ": expected an integer, got '" + v + "'"};
    return x;
  }
  double real(const std::string& k, double def) const {
    if (!has(k)) return def;
    const std::string v = values_.at(k);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0') throw UsageError{"--" + k + ": expected a number, got '" + v + "'"};
    return x;
  }

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> flags_;
};

std::vector<std::int64_t> parse_branching(const std::string& text) {
  std::vector<std::int64_t> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const auto comma = text.find(',', pos);
    const std::string part = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    char* end = nullptr;
    const long long v = std::strtoll(part.c_str(), &end, 10);
    if (part.empty() || *end != '\0') throw UsageError{"--branching: expected B or B1,B2,..., got '" + text + "'"};
    out.push_back(v);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

const char* kGenHelp =
    "usage: megatax gen --out DIR --n N --dim D --levels L --branching B --shards S\n"
    "                   [--seed S] [--dtype f32|f16] [--separation X] [--zipf S] [--threads T]\n"
    "Writes a synthetic hierarchical Gaussian mixture: DIR/part-00000.npy ... (N rows in\n"
    "S shards) and DIR/labels-00000.npy ... (int32 [n, L], the true child index per level).\n"
    "Shards are generated T at a time (default: every hardware thread; one shard in memory\n"
    "per thread); the bits do not depend on T.\n";

const char* kFitHelp =
    "usage: megatax fit --input GLOB --storage URI --output URI --levels L --branching B[,B2,...]\n"
    "                   [--sample-per-centroid N] [--max-iter N] [--tol X] [--seed S]\n"
    "                   [--threads T] [--metric l2|ip|cosine] [--lloyd-passes N]\n"
    "                   [--batch-rows N] [--memory-budget-mb N] [--simd auto|scalar|avx2|avx512|neon]\n"
    "                   [--executor auto|local|mpi] [--resume] [--quiet]\n"
    "                   [--device cpu|cuda [--gpu-dtype auto|f32|f16|bf16] [--gpu N]]\n"
    "                   [--column NAME] [--id-column NAME] [--skip-null] [--output-format npy|parquet]\n"
    "                   [--balance [--min-node-size N] [--max-leaf-size N] [--min-branching N]\n"
    "                    [--max-branching N] [--max-split-rounds N]]\n"
    "                   [--hnsw-threshold N] [--hnsw-m N] [--hnsw-ef-construction N] [--hnsw-ef N]\n"
    "Fits a taxonomy on the shards matching GLOB (.npy .fbin .u8bin .fvecs .bvecs .parquet;\n"
    "Parquet: --column embedding column, --id-column ids carried to the outputs), keeps the\n"
    "model at --storage and writes <stem>.paths.npy (int32 [n, L]), <stem>.ids.npy (int64)\n"
    "and <stem>.dist.npy (float32) per shard at --output. --resume continues a killed fit.\n"
    "Distributed: mpirun -np R megatax fit ... (one process per rank; rank 0 drives; shards\n"
    "are handed out dynamically; the tree is the same on any rank count).\n"
    "--balance: children per node follow its share of points (within [min, max] branching),\n"
    "nodes under --min-node-size points (default: B) stay leaves, and last-level leaves over\n"
    "--max-leaf-size points (default 1.5 N / prod B) are split again into siblings.\n"
    "Parents with more than --hnsw-threshold children (default 8192, 0 = never) are searched\n"
    "through an HNSW graph (persisted beside the centroids) instead of a scan.\n"
    "--device cuda: k-means and the assignment passes run on a GPU (under mpirun, one per\n"
    "rank, picked by the local rank unless --gpu N); --gpu-dtype is what it multiplies in\n"
    "(auto: the data's dtype when f16/bf16, else f32; f32 multiplies on tensor cores as 3xTF32,\n"
    "f32-class accuracy; MEGATAX_CUDA_F32=ffma for exact f32 products). Deterministic, but\n"
    "near-ties may resolve differently from the CPU's.\n";

const char* kPredictHelp =
    "usage: megatax predict --storage URI --input GLOB --output URI [--threads T] [--beam W]\n"
    "                       [--exact] [--hnsw-ef N] [--quiet]\n"
    "                       [--device cpu|cuda] [--gpu N] [--gpu-dtype auto|f32|f16|bf16]\n"
    "                       [--executor auto|local|mpi]\n"
    "Descends the taxonomy at --storage for every vector of GLOB and writes the same files\n"
    "as fit (<stem>.paths.npy, <stem>.ids.npy, <stem>.dist.npy) at --output. --beam W keeps\n"
    "the W best nodes per level and returns the nearest leaf found (never farther than greedy);\n"
    "it prints how many paths differ from greedy. --exact scans every child instead of the\n"
    "HNSW graphs of wide nodes; --hnsw-ef sets their search breadth. --device cuda descends\n"
    "on a GPU (--gpu, default the local rank's; --gpu-dtype as for fit, default the model's\n"
    "when it was fitted on a GPU): every child scanned, greedy (no --beam). Under mpirun the\n"
    "ranks share the shards (--executor as for fit), each on its local GPU with --device cuda.\n";

const char* kInfoHelp =
    "usage: megatax info --storage URI [--json]\n"
    "Prints the taxonomy's levels, node counts, leaf sizes (histogram) and inertia.\n";

const char* kDemoHelp =
    "usage: megatax demo [--dir DIR] [--n N] [--dim D] [--threads T]\n"
    "Generates a dataset (default 200,000 x 64, 3 levels x 10), fits a taxonomy on it and\n"
    "prints its info and how well the true hierarchy was recovered. DIR defaults to\n"
    "./megatax-demo (overwritten).\n";

const char* kPlanHelp =
    "usage: megatax plan --n N --dim D [--dtype f32|f16|bf16] --levels L --branching B[,B2,...]\n"
    "                    [--sample-per-centroid S] [--max-iter I] [--lloyd-passes P]\n"
    "                    [--workers R] [--gemm-tflops T] [--storage-gbps G] [--network-gbps W]\n"
    "                    [--shards S] [--batch-rows N]\n"
    "Predicts, per level, the FLOPs, bytes read and exchanged, memory per worker and time of\n"
    "a fit on R workers (rates are per worker; measure them with bench/ and the fit report).\n";

const char* kMainHelp =
    "usage: megatax <command> [options]   (megatax <command> --help for details)\n"
    "commands:\n"
    "  gen      write a synthetic hierarchical dataset\n"
    "  fit      fit a taxonomy on sharded vector files\n"
    "  predict  assign new vectors to a fitted taxonomy\n"
    "  info     describe a taxonomy\n"
    "  plan     predict the cost of a fit (FLOPs, bytes, memory, time)\n"
    "  demo     gen + fit + info on a built-in default\n";

int cmd_gen(const Args& a) {
  megatax::taxonomy::SyntheticSpec spec;
  const std::string out = a.required("out");
  spec.n = a.integer("n", spec.n);
  spec.dim = a.integer("dim", spec.dim);
  spec.levels = static_cast<int>(a.integer("levels", spec.levels));
  spec.branching = a.integer("branching", spec.branching);
  spec.shards = a.integer("shards", spec.shards);
  spec.seed = static_cast<std::uint64_t>(a.integer("seed", 0));
  spec.dtype = megatax::parse_dtype(a.str("dtype", "f32"));
  spec.separation = a.real("separation", spec.separation);
  spec.zipf = a.real("zipf", 0.0);
  spec.threads = static_cast<int>(a.integer("threads", 0));
  megatax::Progress bar("gen", spec.shards, "shards", true);
  megatax::taxonomy::generate_dataset(spec, out, [&](std::int64_t) { bar.add(1); });
  bar.finish();
  std::printf("wrote %lld vectors of dim %lld in %lld shards to %s\n", static_cast<long long>(spec.n),
              static_cast<long long>(spec.dim), static_cast<long long>(spec.shards), out.c_str());
  return 0;
}

void print_report(const megatax::FitReport& r) {
  std::printf("%-6s %10s %10s %14s %16s %9s %9s %9s\n", "level", "nodes", "split", "points",
              "inertia", "train_s", "assign_s", "total_s");
  for (const auto& l : r.levels)
    std::printf("%-6d %10lld %10lld %14lld %16.6g %9.2f %9.2f %9.2f\n", l.level,
                static_cast<long long>(l.nodes), static_cast<long long>(l.split_parents),
                static_cast<long long>(l.points), l.inertia, l.train_seconds, l.assign_seconds,
                l.seconds);
  if (r.resumed_from_level > 0) std::printf("resumed after level %d\n", r.resumed_from_level);
  std::printf("fit: %lld points, %.2f s, %.3g points*level/s\n", static_cast<long long>(r.points),
              r.seconds, r.points_levels_per_second);
}

megatax::TaxonomyConfig config_from_args(const Args& a) {
  megatax::TaxonomyConfig c;
  c.n_levels = static_cast<int>(a.integer("levels", 3));
  c.branching = parse_branching(a.str("branching", "100"));
  c.storage_uri = a.required("storage");
  c.sample_per_centroid = a.integer("sample-per-centroid", c.sample_per_centroid);
  c.max_iter = static_cast<int>(a.integer("max-iter", c.max_iter));
  c.tol = a.real("tol", c.tol);
  c.seed = static_cast<std::uint64_t>(a.integer("seed", 0));
  c.threads = static_cast<int>(a.integer("threads", 0));
  c.metric = megatax::parse_taxonomy_metric(a.str("metric", "l2"));
  c.lloyd_passes = static_cast<int>(a.integer("lloyd-passes", 0));
  c.batch_rows = a.integer("batch-rows", c.batch_rows);
  c.memory_budget_mb = a.integer("memory-budget-mb", c.memory_budget_mb);
  c.simd = a.str("simd", "auto");
  c.device = a.str("device", c.device);
  c.gpu_dtype = a.str("gpu-dtype", c.gpu_dtype);
  c.gpu = static_cast<int>(a.integer("gpu", c.gpu));
  if (c.device != "cuda" && (a.has("gpu-dtype") || a.has("gpu")))
    throw UsageError{"--gpu-dtype and --gpu need --device cuda"};
  c.balance = a.flag("balance");
  c.min_node_size = a.integer("min-node-size", c.min_node_size);
  c.max_leaf_size = a.integer("max-leaf-size", c.max_leaf_size);
  c.min_branching = a.integer("min-branching", c.min_branching);
  c.max_branching = a.integer("max-branching", c.max_branching);
  c.max_split_rounds = static_cast<int>(a.integer("max-split-rounds", c.max_split_rounds));
  c.hnsw_threshold = a.integer("hnsw-threshold", c.hnsw_threshold);
  c.hnsw_m = a.integer("hnsw-m", c.hnsw_m);
  c.hnsw_ef_construction = a.integer("hnsw-ef-construction", c.hnsw_ef_construction);
  c.hnsw_ef = a.integer("hnsw-ef", c.hnsw_ef);
  if (!c.balance && (a.has("min-node-size") || a.has("max-leaf-size") || a.has("min-branching") ||
                     a.has("max-branching") || a.has("max-split-rounds")))
    throw UsageError{"--min-node-size, --max-leaf-size, --min/max-branching and --max-split-rounds need --balance"};
  return c;
}

int cmd_fit(const Args& a) {
  const std::string input = a.required("input"), output = a.required("output");
  megatax::TaxonomyEngine engine(config_from_args(a));
  megatax::FitOptions o;
  o.resume = a.flag("resume");
  o.progress = !a.flag("quiet");
  o.stop_after_level = static_cast<int>(a.integer("stop-after-level", 0));
  o.executor = a.str("executor", "auto");
  if (!a.flag("quiet")) o.log = [](const std::string& m) { std::fprintf(stderr, "megatax: %s\n", m.c_str()); };
  const auto r = engine.fit(input, output, o);
  if (std::getenv("OMPI_COMM_WORLD_RANK") == nullptr || std::string(std::getenv("OMPI_COMM_WORLD_RANK")) == "0")
    print_report(r);
  return 0;
}

int cmd_predict(const Args& a) {
  auto engine = megatax::TaxonomyEngine::load(a.required("storage"));
  engine.set_threads(static_cast<int>(a.integer("threads", 0)));
  megatax::FitOptions o;
  o.progress = !a.flag("quiet");
  if (!a.flag("quiet")) o.log = [](const std::string& m) { std::fprintf(stderr, "megatax: %s\n", m.c_str()); };
  o.beam = static_cast<int>(a.integer("beam", 1));
  const std::int64_t ef = a.integer("hnsw-ef", 0);
  if (ef < 0) throw UsageError{"--hnsw-ef: expected an integer >= 1"};
  engine.set_search(a.flag("exact"), ef);
  if (o.beam < 1) throw UsageError{"--beam: expected an integer >= 1"};
  o.executor = a.str("executor", "auto");
  o.predict_device = a.str("device", "cpu");
  o.predict_gpu_dtype = a.str("gpu-dtype", "auto");
  o.predict_gpu = static_cast<int>(a.integer("gpu", -1));
  if (o.predict_device != "cuda" && (a.has("gpu-dtype") || a.has("gpu")))
    throw UsageError{"--gpu-dtype and --gpu need --device cuda"};
  const auto t0 = std::chrono::steady_clock::now();
  const megatax::PredictReport r = engine.predict(a.required("input"), a.required("output"), o);
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");  // under mpirun: rank 0 reports
  if (rank != nullptr && std::string(rank) != "0") return 0;
  std::printf("predict: %lld rows done in %.2f s\n", static_cast<long long>(r.rows),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (o.beam > 1)
    std::printf("beam %d: %lld of %lld paths differ from greedy (%.2f%%)\n", o.beam,
                static_cast<long long>(r.beam_changed), static_cast<long long>(r.rows),
                r.rows > 0 ? 100.0 * static_cast<double>(r.beam_changed) / static_cast<double>(r.rows) : 0.0);
  return 0;
}

// Leaf sizes of a taxonomy: nodes without children, at any level.
std::vector<std::int64_t> leaf_sizes(const megatax::Storage& st, const std::string& root, int levels) {
  auto path = [&](const std::string& rel) { return root.empty() ? rel : root + (root.back() == '/' ? "" : "/") + rel; };
  std::vector<std::int64_t> sizes;
  std::vector<std::int64_t> prev_counts;
  for (int l = 1; l <= levels + 1; ++l) {
    std::vector<std::int64_t> parents_with_children;
    std::vector<std::int64_t> counts;
    if (l <= levels) {
      std::vector<std::int64_t> shape;
      auto nodes = megatax::io::read_npy_array<std::int64_t>(st, path("level-" + std::to_string(l) + "/nodes.npy"), &shape);
      for (std::size_t i = 0; i + 1 < nodes.size(); i += 2) {
        parents_with_children.push_back(nodes[i]);
        counts.push_back(nodes[i + 1]);
      }
    }
    std::sort(parents_with_children.begin(), parents_with_children.end());
    for (std::size_t j = 0; j < prev_counts.size(); ++j)
      if (!std::binary_search(parents_with_children.begin(), parents_with_children.end(), static_cast<std::int64_t>(j)))
        sizes.push_back(prev_counts[j]);
    prev_counts = counts;
  }
  return sizes;
}

double mean_of(const std::vector<std::int64_t>& v) {
  double total = 0;
  for (std::int64_t x : v) total += static_cast<double>(x);
  return v.empty() ? 0.0 : total / static_cast<double>(v.size());
}

int show_info(const std::string& uri, bool as_json) {
  std::string root;
  auto st = megatax::open_storage_for_uri(uri, &root);
  const std::string mpath = root.empty() ? "taxonomy.json" : root + (root.back() == '/' ? "" : "/") + "taxonomy.json";
  if (!st->exists(mpath)) throw Error(ErrorCode::kNotFound, "no taxonomy at '" + uri + "' (" + mpath + " is missing)");
  const std::string text = megatax::read_all(*st, mpath);
  const auto m = megatax::json::parse(text, mpath);
  const int done = static_cast<int>(m["levels_done"].as_int());
  auto sizes = leaf_sizes(*st, root, done);
  std::sort(sizes.begin(), sizes.end());
  if (as_json) {
    megatax::json::Value out = m;
    megatax::json::Value leaves = megatax::json::Value::object();
    leaves.set("count", static_cast<std::int64_t>(sizes.size()));
    if (!sizes.empty()) {
      leaves.set("min", sizes.front());
      leaves.set("median", sizes[sizes.size() / 2]);
      leaves.set("p99", sizes[std::min(sizes.size() - 1, sizes.size() * 99 / 100)]);
      leaves.set("max", sizes.back());
      leaves.set("mean", mean_of(sizes));
      leaves.set("max_over_mean", static_cast<double>(sizes.back()) / std::max(1e-300, mean_of(sizes)));
    }
    out.set("leaves", std::move(leaves));
    std::printf("%s\n", megatax::json::dump(out, 2).c_str());
    return 0;
  }
  const auto& cfg = m["config"];
  std::printf("taxonomy %s: status %s, %d/%lld levels, dim %lld, metric %s, %lld points\n", uri.c_str(),
              m["status"].as_string().c_str(), done, static_cast<long long>(cfg["n_levels"].as_int()),
              static_cast<long long>(m["dim"].as_int()), cfg["metric"].as_string().c_str(),
              static_cast<long long>(m["dataset"]["rows"].as_int()));
  std::printf("%-6s %10s %12s %16s %10s %10s %10s %10s %13s\n", "level", "nodes", "points", "inertia",
              "min", "median", "p99", "max", "children");
  for (const auto& lv : m["levels"].as_array()) {
    const auto& sz = lv["sizes"];
    std::string children = "-";
    if (lv.contains("branching")) {
      const auto lo = lv["branching"]["min"].as_int(), hi = lv["branching"]["max"].as_int();
      children = lo == hi ? std::to_string(lo) : std::to_string(lo) + ".." + std::to_string(hi);
    }
    std::printf("%-6lld %10lld %12lld %16.6g %10lld %10lld %10lld %10lld %13s\n",
                static_cast<long long>(lv["level"].as_int()), static_cast<long long>(lv["nodes"].as_int()),
                static_cast<long long>(lv["points"].as_int()), lv["inertia"].as_double(),
                static_cast<long long>(sz["min"].as_int()), static_cast<long long>(sz["median"].as_int()),
                static_cast<long long>(sz["p99"].as_int()), static_cast<long long>(sz["max"].as_int()),
                children.c_str());
  }
  if (!sizes.empty()) {
    const double mean = mean_of(sizes);
    std::printf("leaves: %zu, size min %lld, median %lld, p99 %lld, max %lld, mean %.1f, max/mean %.2f\n",
                sizes.size(), static_cast<long long>(sizes.front()),
                static_cast<long long>(sizes[sizes.size() / 2]),
                static_cast<long long>(sizes[std::min(sizes.size() - 1, sizes.size() * 99 / 100)]),
                static_cast<long long>(sizes.back()), mean,
                static_cast<double>(sizes.back()) / std::max(1e-300, mean));
    // Histogram of leaf sizes in powers of two.
    std::map<int, std::int64_t> buckets;
    for (std::int64_t v : sizes) buckets[v <= 0 ? 0 : 1 + static_cast<int>(std::floor(std::log2(static_cast<double>(v))))]++;
    std::int64_t most = 0;
    for (auto& [k, v] : buckets) most = std::max(most, v);
    for (auto& [k, v] : buckets) {
      const long long lo = k == 0 ? 0 : (1LL << (k - 1)), hi = k == 0 ? 0 : (1LL << k) - 1;
      const int bar = static_cast<int>(40.0 * static_cast<double>(v) / static_cast<double>(most) + 0.5);
      std::printf("  %9lld..%-9lld %8lld %s\n", lo, hi, static_cast<long long>(v), std::string(static_cast<std::size_t>(std::max(bar, 1)), '#').c_str());
    }
  }
  return 0;
}

int cmd_plan(const Args& a) {
  megatax::taxonomy::PlanInput in;
  in.n = a.real("n", 0);
  in.dim = a.integer("dim", 0);
  if (in.n < 1 || in.dim < 1) throw UsageError{"--n and --dim are required (>= 1)"};
  const megatax::DType dt = megatax::parse_dtype(a.str("dtype", "f32"));
  in.element_bytes = static_cast<double>(megatax::dtype_size(dt));
  const int levels = static_cast<int>(a.integer("levels", 3));
  auto b = parse_branching(a.str("branching", "100"));
  if (b.size() == 1) b.assign(static_cast<std::size_t>(levels), b[0]);
  if (static_cast<int>(b.size()) != levels) throw UsageError{"--branching: give one value or one per level"};
  in.branching = b;
  in.sample_per_centroid = a.integer("sample-per-centroid", 256);
  in.max_iter = static_cast<int>(a.integer("max-iter", 20));
  in.lloyd_passes = static_cast<int>(a.integer("lloyd-passes", 0));
  in.workers = static_cast<int>(a.integer("workers", 1));
  in.gemm_flops = a.real("gemm-tflops", 0.1) * 1e12;
  in.storage_bytes_per_s = a.real("storage-gbps", 1.0) * 1e9;
  in.network_bytes_per_s = a.real("network-gbps", 1.0) * 1e9;
  in.shards = a.real("shards", 1);
  in.batch_rows = a.integer("batch-rows", 65536);
  std::fputs(megatax::taxonomy::format_plan(in, megatax::taxonomy::plan_fit(in)).c_str(), stdout);
  return 0;
}

// Adjusted Rand index between two labelings of n items.
double adjusted_rand(const std::vector<std::int64_t>& a, const std::vector<std::int64_t>& b) {
  std::map<std::pair<std::int64_t, std::int64_t>, double> joint;
  std::map<std::int64_t, double> ra, rb;
  for (std::size_t i = 0; i < a.size(); ++i) {
    joint[{a[i], b[i]}] += 1;
    ra[a[i]] += 1;
    rb[b[i]] += 1;
  }
  auto c2 = [](double x) { return x * (x - 1) / 2; };
  double sj = 0, sa = 0, sb = 0;
  for (auto& [k, v] : joint) sj += c2(v);
  for (auto& [k, v] : ra) sa += c2(v);
  for (auto& [k, v] : rb) sb += c2(v);
  const double expected = sa * sb / c2(static_cast<double>(a.size()));
  const double max_index = (sa + sb) / 2;
  return max_index == expected ? 1.0 : (sj - expected) / (max_index - expected);
}

int cmd_demo(const Args& a) {
  const std::string dir = a.str("dir", "megatax-demo");
  megatax::taxonomy::SyntheticSpec spec;
  spec.n = a.integer("n", 200000);
  spec.dim = a.integer("dim", 64);
  spec.levels = 3;
  spec.branching = 10;
  spec.shards = 4;
  spec.seed = 1;
  std::string root;
  auto st = megatax::open_storage_for_uri(dir, &root);
  for (const char* sub : {"taxonomy", "paths", "data"}) {
    const std::string p = root + "/" + sub;
    std::function<void(const std::string&)> wipe = [&](const std::string& path) {
      if (!st->exists(path)) return;
      try {
        for (const auto& name : st->list(path)) wipe(path + "/" + name);
      } catch (const Error&) {
      }
      st->remove(path);
    };
    wipe(p);
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::printf("== megatax demo: generating %lld x %lld vectors (3 levels x 10) in %s/data\n",
              static_cast<long long>(spec.n), static_cast<long long>(spec.dim), dir.c_str());
  megatax::taxonomy::generate_dataset(spec, dir + "/data");
  megatax::TaxonomyConfig c;
  c.n_levels = 3;
  c.branching = {10};
  c.storage_uri = dir + "/taxonomy";
  c.threads = static_cast<int>(a.integer("threads", 0));
  c.seed = 7;
  std::printf("== fitting: megatax fit --input '%s/data/part-*.npy' --storage %s/taxonomy --output %s/paths --levels 3 --branching 10\n",
              dir.c_str(), dir.c_str(), dir.c_str());
  megatax::TaxonomyEngine engine(c);
  megatax::FitOptions o;
  o.log = [](const std::string& m) { std::fprintf(stderr, "megatax: %s\n", m.c_str()); };
  const auto r = engine.fit(dir + "/data/part-*.npy", dir + "/paths", o);
  print_report(r);
  // How well was the planted hierarchy recovered? (ARI of the node ids per level.)
  std::vector<std::vector<std::int64_t>> truth(3), fitted(3);
  for (std::int64_t s = 0; s < spec.shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "%05lld", static_cast<long long>(s));
    std::vector<std::int64_t> shape;
    auto labels = megatax::io::read_npy_array<std::int32_t>(*st, root + "/data/labels-" + name + ".npy", &shape);
    auto paths = megatax::io::read_npy_array<std::int32_t>(*st, root + "/paths/part-" + name + ".paths.npy", &shape);
    for (std::size_t i = 0; i < labels.size() / 3; ++i) {
      std::int64_t t = 0, f = 0;
      for (int l = 0; l < 3; ++l) {
        t = t * 16 + labels[i * 3 + static_cast<std::size_t>(l)];
        f = f * 1024 + paths[i * 3 + static_cast<std::size_t>(l)] + 1;
        truth[static_cast<std::size_t>(l)].push_back(t);
        fitted[static_cast<std::size_t>(l)].push_back(f);
      }
    }
  }
  for (int l = 0; l < 3; ++l)
    std::printf("level %d: adjusted Rand index vs planted hierarchy = %.4f\n", l + 1,
                adjusted_rand(truth[static_cast<std::size_t>(l)], fitted[static_cast<std::size_t>(l)]));
  std::printf("== info: megatax info --storage %s/taxonomy\n", dir.c_str());
  show_info(dir + "/taxonomy", false);
  std::printf("demo finished in %.1f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kMainHelp, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "gen") {
      Args a(argc, argv, 2, {"out", "n", "dim", "levels", "branching", "shards", "seed", "dtype", "separation", "zipf", "threads"}, {}, cmd);
      if (a.help) return std::fputs(kGenHelp, stdout), 0;
      return cmd_gen(a);
    }
    if (cmd == "fit") {
      Args a(argc, argv, 2,
             {"input", "storage", "output", "levels", "branching", "sample-per-centroid", "max-iter", "tol", "seed",
              "threads", "metric", "lloyd-passes", "batch-rows", "memory-budget-mb", "simd", "stop-after-level",
              "executor", "column", "id-column", "output-format", "min-node-size", "max-leaf-size", "min-branching", "max-branching", "max-split-rounds",
              "hnsw-threshold", "hnsw-m", "hnsw-ef-construction", "hnsw-ef", "device", "gpu-dtype", "gpu"},
             {"resume", "quiet", "skip-null", "balance"}, cmd);
      if (a.help) return std::fputs(kFitHelp, stdout), 0;
      return cmd_fit(a);
    }
    if (cmd == "predict") {
      Args a(argc, argv, 2,
             {"storage", "input", "output", "threads", "beam", "hnsw-ef", "device", "gpu", "gpu-dtype", "executor"},
             {"quiet", "exact"}, cmd);
      if (a.help) return std::fputs(kPredictHelp, stdout), 0;
      return cmd_predict(a);
    }
    if (cmd == "info") {
      Args a(argc, argv, 2, {"storage"}, {"json"}, cmd);
      if (a.help) return std::fputs(kInfoHelp, stdout), 0;
      return show_info(a.required("storage"), a.flag("json"));
    }
    if (cmd == "plan") {
      Args a(argc, argv, 2,
             {"n", "dim", "dtype", "levels", "branching", "sample-per-centroid", "max-iter", "lloyd-passes", "workers",
              "gemm-tflops", "storage-gbps", "network-gbps", "shards", "batch-rows"},
             {}, cmd);
      if (a.help) return std::fputs(kPlanHelp, stdout), 0;
      return cmd_plan(a);
    }
    if (cmd == "demo") {
      Args a(argc, argv, 2, {"dir", "n", "dim", "threads"}, {}, cmd);
      if (a.help) return std::fputs(kDemoHelp, stdout), 0;
      return cmd_demo(a);
    }
    std::fprintf(stderr, "megatax: unknown command '%s'\n%s", cmd.c_str(), kMainHelp);
    return 2;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "megatax %s: %s\n", cmd.c_str(), e.message.c_str());
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "megatax %s: %s\n", cmd.c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "megatax %s: internal error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
