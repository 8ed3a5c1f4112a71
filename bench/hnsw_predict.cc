// bench_hnsw_predict: issue 7's numbers.
//  1. Descent to one wide parent (width = 65,536 by default; a list for the threshold sweep):
//     flat scan (the SIMD block kernel) vs the HNSW graph at several ef, D = 128 and 1024:
//     queries/s (best of --reps interleaved rounds of the scan and every ef, the same --threads
//     on both sides), speed-up, agreement of the chosen child with the scan's, inertia excess
//     (the chosen children's distances summed / the scan's - 1), distances per query, graph
//     build seconds; then, per width and D, the cheapest ef with >= 99% agreement.
//  2. Fit time with and without auto-balancing on Zipf-skewed data, with the leaf max/mean.
//
// Data (a level as k-means leaves it): 256 dense regions (centres N(0, 1) per dim);
// centroids = region centre + N(0, 0.3^2) per dim. Queries (--queries-from):
//   centroids (default): a random centroid + N(0, (0.3 noise)^2) per dim (--noise, default
//     1): points of that centroid's cell, as spread around it as the centroids of a region
//     are around its centre -- the usual k-means picture (at noise 1 every query is nearest
//     its own centroid at D = 128; at noise 2, 99.3%: printed on stderr);
//   regions: a random region centre + N(0, 0.3^2) per dim (fresh points of a region, not
//     tied to any centroid: near-ties between many centroids, the hardest case).
// Usage: bench_hnsw_predict [--widths 65536] [--dims 128,1024] [--efs 16,24,32,48,64,128]
//          [--queries N] [--threads T] [--reps R] [--m M] [--ef-construction E]
//          [--queries-from centroids|regions] [--noise S] [--walk f16|f32] [--rerank R]
//          [--seed S] [--fit-n N] [--skip-fit] [--skip-hnsw]
// Prints markdown tables for bench/RESULTS.md.
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

struct DataSpec {
  bool from_centroids = true;
  double noise = 1.0;
};

// See the header comment.
// source[i]: the centroid query i was drawn around (-1 for region queries).
void make_level(std::int64_t dim, std::int64_t b, std::int64_t q, const DataSpec& spec, std::vector<float>* c,
                std::vector<float>* x, std::vector<std::int64_t>* source) {
  std::mt19937_64 rng(42);
  std::normal_distribution<float> n01(0.f, 1.f);
  const std::int64_t regions = 256;
  std::vector<float> centre(static_cast<std::size_t>(regions * dim));
  for (auto& v : centre) v = n01(rng);
  c->resize(static_cast<std::size_t>(b * dim));
  x->resize(static_cast<std::size_t>(q * dim));
  for (std::int64_t i = 0; i < b; ++i) {
    const std::int64_t k = static_cast<std::int64_t>(rng() % regions);
    for (std::int64_t j = 0; j < dim; ++j)
      (*c)[static_cast<std::size_t>(i * dim + j)] = centre[static_cast<std::size_t>(k * dim + j)] + 0.3f * n01(rng);
  }
  const float sigma = 0.3f * static_cast<float>(spec.from_centroids ? spec.noise : 1.0);
  for (std::int64_t i = 0; i < q; ++i) {
    const std::int64_t pick = static_cast<std::int64_t>(rng() % (spec.from_centroids ? b : regions));
    source->push_back(spec.from_centroids ? pick : -1);
    const float* base = (spec.from_centroids ? c->data() : centre.data()) + pick * dim;
    for (std::int64_t j = 0; j < dim; ++j) (*x)[static_cast<std::size_t>(i * dim + j)] = base[j] + sigma * n01(rng);
  }
}

// Descends all queries to level 1 `reps` times; returns the best time. child/dist: the
// chosen child and its distance per query.
double run(const megatax::taxonomy::Tree& tree, const std::vector<float>& x, std::int64_t q, std::int64_t dim,
           int threads, int reps, std::vector<std::int32_t>* child, std::vector<float>* dist = nullptr) {
  std::vector<std::int32_t> prev(static_cast<std::size_t>(q), 0), node(static_cast<std::size_t>(q));
  std::vector<float> own_dist;
  if (dist == nullptr) dist = &own_dist;
  dist->assign(static_cast<std::size_t>(q), 0.f);
  child->assign(static_cast<std::size_t>(q), 0);
  megatax::kernels::KnnOptions o;
  o.threads = threads;
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    tree.descend(1, megatax::f32_view(x.data(), q, dim), prev.data(), node.data(), child->data(), dist->data(), o);
    best = std::min(best, since(t0));
  }
  return best;
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
  std::vector<std::int64_t> dims = {128, 1024}, widths = {65536}, efs = {16, 24, 32, 48, 64, 128};
  std::int64_t q = 4000, fit_n = 200000;
  int threads = 2, reps = 3;
  megatax::taxonomy::HnswParams hp;
  DataSpec data;
  bool skip_fit = false, skip_hnsw = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--dims") dims = parse_list(next());
    else if (a == "--widths") widths = parse_list(next());
    else if (a == "--efs") efs = parse_list(next());
    else if (a == "--queries") q = std::atoll(next().c_str());
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--reps") reps = std::max(1, std::atoi(next().c_str()));
    else if (a == "--fit-n") fit_n = std::atoll(next().c_str());
    else if (a == "--skip-fit") skip_fit = true;
    else if (a == "--skip-hnsw") skip_hnsw = true;
    else if (a == "--m") hp.m = std::atoll(next().c_str());
    else if (a == "--ef-construction") hp.ef_construction = std::atoll(next().c_str());
    else if (a == "--queries-from") data.from_centroids = next() != "regions";
    else if (a == "--noise") data.noise = std::atof(next().c_str());
    else if (a == "--walk") hp.compact = next() != "f32";
    else if (a == "--rerank") hp.rerank = std::atoll(next().c_str());
    else if (a == "--seed") hp.seed = std::strtoull(next().c_str(), nullptr, 10);
    else {
      std::fprintf(stderr,
                   "usage: bench_hnsw_predict [--widths 65536] [--dims 128,1024] [--efs 16,24,32,48,64,128]\n"
                   "         [--queries N] [--threads T] [--reps R] [--m M] [--ef-construction E]\n"
                   "         [--queries-from centroids|regions] [--noise S] [--walk f16|f32] [--rerank R]\n"
                   "         [--seed S] [--fit-n N] [--skip-fit] [--skip-hnsw]\n");
      return 2;
    }
  }
  if (!skip_hnsw) {
    std::printf("## Descent to one wide parent: HNSW (M %lld, ef_construction %lld, walk %s, rerank %lld) vs flat scan\n\n"
                "%lld queries (%s), %d threads on both sides, best of %d interleaved rounds (scan, each ef);\n"
                "agreement = same child as the scan; "
                "inertia excess = sum of the distances to the children HNSW chose / the scan's - 1.\n\n",
                static_cast<long long>(hp.m), static_cast<long long>(hp.ef_construction), hp.compact ? "f16" : "f32",
                static_cast<long long>(hp.rerank), static_cast<long long>(q),
                data.from_centroids ? ("near centroids, noise " + std::to_string(data.noise).substr(0, 4)).c_str()
                                    : "fresh points of the regions",
                threads, reps);
    std::printf("| width | D | ef | build s | flat q/s | HNSW q/s | speed-up | agreement | inertia excess | distances/query |\n"
                "|---|---|---|---|---|---|---|---|---|---|\n");
    struct Row {
      std::int64_t width, dim, ef;
      double build_s, hnsw_s, agreement, distances, excess;
    };
    std::vector<Row> rows;
    std::map<std::pair<std::int64_t, std::int64_t>, double> flat_s;  // (width, dim) -> seconds
    for (std::int64_t dim : dims) {
      for (std::int64_t b : widths) {
        std::vector<float> c, x;
        std::vector<std::int64_t> source;
        make_level(dim, b, q, data, &c, &x, &source);
        megatax::taxonomy::Tree tree(dim, megatax::Metric::kL2);
        tree.add_level(megatax::UninitVector<float>(c.begin(), c.end()), std::vector<std::int64_t>(static_cast<std::size_t>(b), 0));
        tree.set_use_graphs(false);
        std::vector<std::int32_t> flat, hnsw;
        std::vector<float> flat_d, hnsw_d;
        run(tree, x, q, dim, threads, 1, &flat, &flat_d);  // warm-up, and the scan's answers
        if (data.from_centroids) {
          std::int64_t own = 0;
          for (std::int64_t i = 0; i < q; ++i) own += flat[static_cast<std::size_t>(i)] == source[static_cast<std::size_t>(i)];
          std::fprintf(stderr, "width %lld, D %lld: %.1f%% of the queries are nearest their own centroid\n",
                       static_cast<long long>(b), static_cast<long long>(dim), 100.0 * static_cast<double>(own) / static_cast<double>(q));
        }
        const auto t0 = Clock::now();
        tree.build_graphs(1, b - 1, hp, threads);
        const double build_s = since(t0);
        const megatax::taxonomy::CentroidGraph& graph = *tree.level(1).graph[0];
        // Timing rounds: the scan, then every ef, `reps` times over; the best of each counts
        // (the machine is shared: interleaving exposes both sides to the same conditions).
        double fs = 1e300;
        std::vector<double> hs(efs.size(), 1e300);
        for (int r = 0; r < reps; ++r) {
          tree.set_use_graphs(false);
          fs = std::min(fs, run(tree, x, q, dim, threads, 1, &hnsw));
          tree.set_use_graphs(true);
          for (std::size_t e = 0; e < efs.size(); ++e) {
            tree.set_graph_ef(efs[e]);
            if (r == 0) run(tree, x, q, dim, threads, 1, &hnsw);  // warm-up
            hs[e] = std::min(hs[e], run(tree, x, q, dim, threads, 1, &hnsw));
          }
        }
        flat_s[{b, dim}] = fs;
        for (std::size_t e = 0; e < efs.size(); ++e) {
          const std::int64_t ef = efs[e];
          tree.set_graph_ef(ef);
          run(tree, x, q, dim, threads, 1, &hnsw, &hnsw_d);
          std::int64_t agree = 0;
          double flat_sum = 0, hnsw_sum = 0;  // the level's inertia for these queries
          for (std::int64_t i = 0; i < q; ++i) {
            const auto k = static_cast<std::size_t>(i);
            agree += flat[k] == hnsw[k];
            flat_sum += flat_d[k];
            hnsw_sum += hnsw_d[k];
          }
          // Distances per query, from one pass on this thread (also: the same answers).
          std::int64_t count = 0;
          std::vector<std::int64_t> label(static_cast<std::size_t>(q));
          std::vector<float> dist(static_cast<std::size_t>(q));
          graph.search(x.data(), q, label.data(), dist.data(), &count);
          for (std::int64_t i = 0; i < q; ++i)
            if (label[static_cast<std::size_t>(i)] != hnsw[static_cast<std::size_t>(i)]) {
              std::fprintf(stderr, "query %lld: one-thread search differs from descend\n", static_cast<long long>(i));
              return 1;
            }
          rows.push_back({b, dim, ef, build_s, hs[e], static_cast<double>(agree) / static_cast<double>(q),
                          static_cast<double>(count) / static_cast<double>(q), hnsw_sum / flat_sum - 1.0});
        }
        for (const Row& r : rows) {
          if (r.width != b || r.dim != dim) continue;
          std::printf("| %lld | %lld | %lld%s | %.1f | %.0f | %.0f | %.1fx | %.4f | %.1e | %.0f |\n",
                      static_cast<long long>(b), static_cast<long long>(dim), static_cast<long long>(r.ef),
                      r.ef == megatax::taxonomy::HnswParams{}.ef ? " (default)" : "", r.build_s,
                      static_cast<double>(q) / fs, static_cast<double>(q) / r.hnsw_s, fs / r.hnsw_s, r.agreement,
                      r.excess, r.distances);
        }
        std::fflush(stdout);
      }
    }
    // Per (width, D): the cheapest ef with >= 99% agreement (the threshold sweep).
    std::printf("\n| width | D | least ef with >= 99%% agreement | agreement | flat q/s | HNSW q/s | speed-up |\n"
                "|---|---|---|---|---|---|---|\n");
    for (const auto& [key, fs] : flat_s) {
      const Row* pick = nullptr;
      for (const Row& r : rows)
        if (r.width == key.first && r.dim == key.second && r.agreement >= 0.99 && (pick == nullptr || r.hnsw_s < pick->hnsw_s))
          pick = &r;
      if (pick == nullptr) {
        std::printf("| %lld | %lld | none | - | %.0f | - | - |\n", static_cast<long long>(key.first),
                    static_cast<long long>(key.second), static_cast<double>(q) / fs);
        continue;
      }
      std::printf("| %lld | %lld | %lld | %.4f | %.0f | %.0f | %.1fx |\n", static_cast<long long>(key.first),
                  static_cast<long long>(key.second), static_cast<long long>(pick->ef), pick->agreement,
                  static_cast<double>(q) / fs, static_cast<double>(q) / pick->hnsw_s, fs / pick->hnsw_s);
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
