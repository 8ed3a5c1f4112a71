// bench_hnsw_predict: issue 7's numbers.
//  1. Descent to a 65,536-wide level (one parent): flat scan (the SIMD kernel) vs the HNSW
//     graph at several ef, D = 128 and 1024: queries/s, speed-up and agreement with the scan.
//  2. Fit time with and without auto-balancing on Zipf-skewed data, with the leaf max/mean.
// Usage: bench_hnsw_predict [--dims 128,1024] [--queries N] [--threads T] [--fit-n N] [--skip-fit]
//                           [--skip-hnsw] [--m M] [--ef-construction E]
// Prints tables (markdown) for bench/RESULTS.md.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "io/npy_array.h"
#include "megatax/storage.h"
#include "megatax/taxonomy.h"
#include "taxonomy/synthetic.h"
#include "taxonomy/tree.h"

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Clustered centroids (256 dense regions) and queries drawn from the same regions.
void make_level(std::int64_t dim, std::int64_t b, std::int64_t q, std::vector<float>* c, std::vector<float>* x) {
  std::mt19937_64 rng(42);
  std::normal_distribution<float> n01(0.f, 1.f);
  const std::int64_t blobs = 256;
  std::vector<float> centre(static_cast<std::size_t>(blobs * dim));
  for (auto& v : centre) v = n01(rng);
  auto draw = [&](float* out) {
    const std::int64_t k = static_cast<std::int64_t>(rng() % blobs);
    for (std::int64_t j = 0; j < dim; ++j) out[j] = centre[static_cast<std::size_t>(k * dim + j)] + 0.3f * n01(rng);
  };
  c->resize(static_cast<std::size_t>(b * dim));
  x->resize(static_cast<std::size_t>(q * dim));
  for (std::int64_t i = 0; i < b; ++i) draw(c->data() + i * dim);
  for (std::int64_t i = 0; i < q; ++i) draw(x->data() + i * dim);
}

double run(const megatax::taxonomy::Tree& tree, const std::vector<float>& x, std::int64_t q, std::int64_t dim,
           int threads, std::vector<std::int32_t>* child) {
  std::vector<std::int32_t> prev(static_cast<std::size_t>(q), 0), node(static_cast<std::size_t>(q));
  std::vector<float> dist(static_cast<std::size_t>(q));
  child->assign(static_cast<std::size_t>(q), 0);
  megatax::kernels::KnnOptions o;
  o.threads = threads;
  const auto t0 = Clock::now();
  tree.descend(1, megatax::f32_view(x.data(), q, dim), prev.data(), node.data(), child->data(), dist.data(), o);
  return since(t0);
}

std::vector<std::int64_t> parse_list(const std::string& s) {
  std::vector<std::int64_t> out;
  std::size_t pos = 0;
  while (pos < s.size()) {
    const auto comma = s.find(',', pos);
    out.push_back(std::atoll(s.substr(pos, comma - pos).c_str()));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

double max_over_mean(const std::string& out_dir, int levels, std::size_t* leaves) {
  std::map<std::vector<std::int32_t>, std::int64_t> count;
  auto st = megatax::open_storage_for_uri("/");
  for (const auto& e : std::filesystem::directory_iterator(out_dir)) {
    if (!e.path().string().ends_with(".paths.npy")) continue;
    std::vector<std::int64_t> shape;
    auto p = megatax::io::read_npy_array<std::int32_t>(*st, e.path().string(), &shape);
    for (std::size_t i = 0; i < p.size(); i += static_cast<std::size_t>(levels))
      ++count[std::vector<std::int32_t>(p.begin() + static_cast<std::ptrdiff_t>(i),
                                        p.begin() + static_cast<std::ptrdiff_t>(i) + levels)];
  }
  double total = 0;
  std::int64_t mx = 0;
  for (auto& [k, v] : count) {
    total += static_cast<double>(v);
    mx = std::max(mx, v);
  }
  *leaves = count.size();
  return static_cast<double>(mx) / (total / static_cast<double>(count.size()));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::int64_t> dims = {128, 1024};
  std::int64_t q = 4000, fit_n = 200000;
  int threads = 2;
  megatax::taxonomy::HnswParams hp;
  bool skip_fit = false, skip_hnsw = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--dims") dims = parse_list(next());
    else if (a == "--queries") q = std::atoll(next().c_str());
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--fit-n") fit_n = std::atoll(next().c_str());
    else if (a == "--skip-fit") skip_fit = true;
    else if (a == "--skip-hnsw") skip_hnsw = true;
    else if (a == "--m") hp.m = std::atoll(next().c_str());
    else if (a == "--ef-construction") hp.ef_construction = std::atoll(next().c_str());
    else {
      std::fprintf(stderr, "usage: bench_hnsw_predict [--dims 128,1024] [--queries N] [--threads T] [--fit-n N] [--skip-fit] [--skip-hnsw]\n");
      return 2;
    }
  }
  const std::int64_t b = 65536;
  if (!skip_hnsw) {
    std::printf("## Descent to a %lld-wide level: HNSW (M %lld, ef_construction %lld) vs flat scan (%lld queries, %d threads)\n\n",
                static_cast<long long>(b), static_cast<long long>(hp.m), static_cast<long long>(hp.ef_construction),
                static_cast<long long>(q), threads);
    std::printf("| D | search | ef | build s | queries/s | speed-up | agreement |\n|---|---|---|---|---|---|---|\n");
    for (std::int64_t dim : dims) {
      std::vector<float> c, x;
      make_level(dim, b, q, &c, &x);
      megatax::taxonomy::Tree tree(dim, megatax::Metric::kL2);
      tree.add_level(c, std::vector<std::int64_t>(static_cast<std::size_t>(b), 0));
      tree.set_use_graphs(false);
      std::vector<std::int32_t> flat, hnsw;
      run(tree, x, q, dim, threads, &flat);  // warm-up
      const double flat_s = run(tree, x, q, dim, threads, &flat);
      std::printf("| %lld | flat scan | - | - | %.0f | 1.0x | 1.0000 |\n", static_cast<long long>(dim),
                  static_cast<double>(q) / flat_s);
      std::fflush(stdout);
      const auto t0 = Clock::now();
      tree.build_graphs(1, 4096, hp, threads);
      const double build_s = since(t0);
      tree.set_use_graphs(true);
      for (std::int64_t ef : {16, 32, 64, 128, 256}) {
        tree.set_graph_ef(ef);
        const double s = run(tree, x, q, dim, threads, &hnsw);
        std::int64_t agree = 0;
        for (std::int64_t i = 0; i < q; ++i) agree += flat[static_cast<std::size_t>(i)] == hnsw[static_cast<std::size_t>(i)];
        std::printf("| %lld | hnsw | %lld%s | %.1f | %.0f | %.1fx | %.4f |\n", static_cast<long long>(dim),
                    static_cast<long long>(ef), ef == megatax::taxonomy::HnswParams{}.ef ? " (default)" : "", build_s,
                    static_cast<double>(q) / s, flat_s / s, static_cast<double>(agree) / static_cast<double>(q));
        std::fflush(stdout);
      }
    }
  }
  if (!skip_fit) {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("bench-balance-" + std::to_string(::getpid()));
    megatax::taxonomy::SyntheticSpec spec;
    spec.n = fit_n;
    spec.dim = 64;
    spec.levels = 2;
    spec.branching = 16;
    spec.shards = 4;
    spec.separation = 3.0;
    spec.zipf = 1.1;
    megatax::taxonomy::generate_dataset(spec, (dir / "data").string());
    std::printf("\n## Fit with and without balancing (Zipf 1.1, n=%lld, D=64, L=2, B=16, %d threads)\n\n",
                static_cast<long long>(fit_n), threads);
    std::printf("| balance | fit s | leaves | max/mean leaf | split rounds |\n|---|---|---|---|---|\n");
    for (bool balance : {false, true}) {
      megatax::TaxonomyConfig c;
      c.n_levels = 2;
      c.branching = {16};
      c.threads = threads;
      c.balance = balance;
      c.storage_uri = (dir / (balance ? "tb" : "tu")).string();
      megatax::TaxonomyEngine e(c);
      megatax::FitOptions o;
      o.progress = false;
      const auto r = e.fit((dir / "data/part-*.npy").string(), (dir / (balance ? "ob" : "ou")).string(), o);
      std::size_t leaves = 0;
      const double mm = max_over_mean((dir / (balance ? "ob" : "ou")).string(), 2, &leaves);
      std::printf("| %s | %.2f | %zu | %.2f | %d |\n", balance ? "on" : "off", r.seconds, leaves, mm,
                  r.levels.back().split_rounds);
      std::fflush(stdout);
    }
    fs::remove_all(dir);
  }
  return 0;
}
