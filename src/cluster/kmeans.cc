#include "cluster/kmeans.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <string>

#include "core/parallel.h"
#include "core/random.h"
#include "kernels/cpu/knn.h"
#include "kernels/cpu/row_sums.h"
#include "megatax/error.h"

namespace megatax::cluster {
namespace {

void row_f32(const MatrixView& x, std::int64_t i, float* out) {
  convert_to_f32(x.dtype, x.row(i), static_cast<std::size_t>(x.dim), out);
}

void normalise(float* v, std::int64_t d) {
  double s = 0;
  for (std::int64_t j = 0; j < d; ++j) s += static_cast<double>(v[j]) * v[j];
  if (s <= 0) return;
  const double inv = 1.0 / std::sqrt(s);
  for (std::int64_t j = 0; j < d; ++j) v[j] = static_cast<float>(v[j] * inv);
}

double total(const std::vector<float>& distances) {
  double s = 0;
  for (float v : distances) s += v;
  return s;
}

}  // namespace

std::vector<float> kmeans_plus_plus(const MatrixView& x, std::int64_t k, std::uint64_t seed,
                                    std::int64_t sample_per_centroid, int threads) {
  const std::int64_t n = x.rows, d = x.dim;
  Rng rng(seed);
  // Subsample: a seeded partial Fisher-Yates shuffle, then sorted for locality.
  std::vector<std::int64_t> pool;
  // At least kMinInitSample points (or all): small k keeps a robust choice, large k a cheap one.
  constexpr std::int64_t kMinInitSample = 2048;
  const std::int64_t m = std::min<std::int64_t>(
      n, std::max({k, sample_per_centroid * k, kMinInitSample}));
  if (m == n) {
    pool.resize(static_cast<std::size_t>(n));
    std::iota(pool.begin(), pool.end(), 0);
  } else {
    std::vector<std::int64_t> perm(static_cast<std::size_t>(n));
    std::iota(perm.begin(), perm.end(), 0);
    for (std::int64_t i = 0; i < m; ++i) {
      const auto j = i + static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(n - i)));
      std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(j)]);
    }
    pool.assign(perm.begin(), perm.begin() + m);
    std::sort(pool.begin(), pool.end());
  }
  kernels::PackedMatrix packed(d, DType::kF32);
  std::vector<float> row(static_cast<std::size_t>(d));
  packed.reserve(m);
  for (std::int64_t i : pool) {
    row_f32(x, i, row.data());
    packed.append(f32_view(row.data(), 1, d));
  }
  kernels::KnnOptions opt;
  opt.threads = threads;
  // Greedy k-means++ (as scikit-learn): each step draws `trials` candidates by D^2
  // sampling and keeps the one that lowers the total potential most. Far more robust than
  // one draw at separating true clusters, for trials times the distance work.
  const std::int64_t trials =
      std::min<std::int64_t>(8, 2 + static_cast<std::int64_t>(2 * std::log(static_cast<double>(k))));
  std::vector<float> centroids(static_cast<std::size_t>(k * d));
  std::vector<double> best(static_cast<std::size_t>(m), INFINITY);
  std::vector<float> cand_rows(static_cast<std::size_t>(trials * d));
  std::vector<float> dist(static_cast<std::size_t>(trials * m));
  std::vector<std::int64_t> cand(static_cast<std::size_t>(trials));
  auto draw = [&](double sum) -> std::int64_t {  // a point with probability best[i] / sum
    const double target = rng.uniform() * sum;
    double acc = 0;
    std::int64_t last = -1;
    for (std::int64_t i = 0; i < m; ++i) {
      const double w = best[static_cast<std::size_t>(i)];
      if (w <= 0) continue;
      acc += w;
      last = i;
      if (acc > target) return i;
    }
    return last;  // rounding at the very end
  };
  // First centroid: uniform.
  std::int64_t first = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(m)));
  packed.get_row_f32(first, centroids.data());
  kernels::all_distances(f32_view(centroids.data(), 1, d), packed, Metric::kL2, dist.data(), m, opt);
  double potential = 0;
  for (std::int64_t i = 0; i < m; ++i) {
    best[static_cast<std::size_t>(i)] = dist[static_cast<std::size_t>(i)];
    potential += dist[static_cast<std::size_t>(i)];
  }
  for (std::int64_t c = 1; c < k; ++c) {
    float* cen = centroids.data() + c * d;
    if (potential <= 0) {  // every point sits on a centroid: duplicates; reuse point c mod m
      packed.get_row_f32(c % m, cen);
      continue;
    }
    std::int64_t nc = 0;
    for (std::int64_t t = 0; t < trials; ++t) {
      const std::int64_t pick = draw(potential);
      if (pick < 0) break;
      cand[static_cast<std::size_t>(nc)] = pick;
      packed.get_row_f32(pick, cand_rows.data() + nc * d);
      ++nc;
    }
    if (nc == 0) {
      packed.get_row_f32(c % m, cen);
      continue;
    }
    // Squared L2 (also for inner product: seeding spreads points out).
    kernels::all_distances(f32_view(cand_rows.data(), nc, d), packed, Metric::kL2, dist.data(), m, opt);
    std::int64_t chosen = 0;
    double chosen_potential = INFINITY;
    for (std::int64_t t = 0; t < nc; ++t) {
      double pot = 0;
      const float* dt = dist.data() + t * m;
      for (std::int64_t i = 0; i < m; ++i)
        pot += std::min(best[static_cast<std::size_t>(i)], static_cast<double>(dt[i]));
      if (pot < chosen_potential) {
        chosen_potential = pot;
        chosen = t;
      }
    }
    std::copy(cand_rows.begin() + chosen * d, cand_rows.begin() + (chosen + 1) * d, cen);
    const float* dt = dist.data() + chosen * m;
    potential = 0;
    for (std::int64_t i = 0; i < m; ++i) {
      auto& b = best[static_cast<std::size_t>(i)];
      b = std::min(b, static_cast<double>(dt[i]));
      potential += b;
    }
  }
  return centroids;
}

KMeansResult fit_kmeans(const MatrixView& x, const KMeansParams& p, Assigner& assigner) {
  validate_view(x, "k-means points");
  const std::int64_t n = x.rows, d = x.dim, k = p.k;
  if (k < 1) throw_error(ErrorCode::kInvalidArgument, "k-means: k must be >= 1, got " + std::to_string(k));
  if (n < k)
    throw_error(ErrorCode::kInvalidArgument, "k-means: " + std::to_string(n) +
                                                 " points are fewer than k = " + std::to_string(k));
  KMeansResult r;
  using Clock = std::chrono::steady_clock;
  auto since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  auto t_step = Clock::now();
  r.centroids = kmeans_plus_plus(x, k, p.seed, p.init_sample_per_centroid, p.threads);
  if (p.spherical)
    for (std::int64_t c = 0; c < k; ++c) normalise(r.centroids.data() + c * d, d);
  r.labels.resize(static_cast<std::size_t>(n));
  std::vector<float> dist(static_cast<std::size_t>(n));
  std::vector<double> sums(static_cast<std::size_t>(k * d));
  std::vector<std::int64_t> order(static_cast<std::size_t>(n)), start(static_cast<std::size_t>(k + 1));
  const bool maximise = p.metric == Metric::kInnerProduct;
  r.seed_seconds = since(t_step);
  t_step = Clock::now();
  assigner.prepare(x);  // counted with the assignments (a device upload)
  r.assign_seconds = since(t_step);

  for (int iter = 0;; ++iter) {
    // Without the final assignment, the last update's centroids are returned unscored.
    if (iter == p.max_iter && iter > 0 && !p.final_assignment) break;
    t_step = Clock::now();
    assigner.set_centroids(r.centroids.data(), k, d);
    assigner.assign(x, r.labels.data(), dist.data());
    r.assign_seconds += since(t_step);
    const double inertia = total(dist);
    r.inertia.push_back(inertia);
    if (p.on_iteration) p.on_iteration(iter, inertia);
    if (iter > 0) {
      const double prev = r.inertia[r.inertia.size() - 2];
      const double change = std::fabs(prev - inertia) / std::max(std::fabs(inertia), 1e-300);
      if (change < p.tol) {
        r.converged = true;
        break;
      }
    }
    if (iter == p.max_iter) break;

    t_step = Clock::now();
    // Group points by label (counting sort keeps point order inside each cluster).
    std::fill(start.begin(), start.end(), 0);
    for (std::int64_t i = 0; i < n; ++i) ++start[static_cast<std::size_t>(r.labels[static_cast<std::size_t>(i)] + 1)];
    for (std::int64_t c = 0; c < k; ++c) start[static_cast<std::size_t>(c + 1)] += start[static_cast<std::size_t>(c)];
    {
      std::vector<std::int64_t> fill(start.begin(), start.end() - 1);
      for (std::int64_t i = 0; i < n; ++i)
        order[static_cast<std::size_t>(fill[static_cast<std::size_t>(r.labels[static_cast<std::size_t>(i)])]++)] = i;
    }
    // Means, in float64, cluster by cluster (parallel over clusters: deterministic).
    parallel_for(p.threads, (k + 63) / 64, [&](std::int64_t task, int) {
      std::vector<float> row(static_cast<std::size_t>(d));
      const std::int64_t c1 = std::min(k, (task + 1) * 64);
      for (std::int64_t c = task * 64; c < c1; ++c) {
        double* s = sums.data() + c * d;
        std::fill(s, s + d, 0.0);
        const std::int64_t b = start[static_cast<std::size_t>(c)], e = start[static_cast<std::size_t>(c + 1)];
        for (std::int64_t t = b; t < e; ++t) {
          const std::int64_t i = order[static_cast<std::size_t>(t)];
          const float* v = row.data();
          if (x.dtype == DType::kF32) {
            v = static_cast<const float*>(x.row(i));  // f32 rows are summed in place
          } else {
            row_f32(x, i, row.data());
          }
          kernels::add_row_f64(v, s, d);
        }
        if (e > b) {
          float* cen = r.centroids.data() + c * d;
          for (std::int64_t j = 0; j < d; ++j) cen[j] = static_cast<float>(s[j] / static_cast<double>(e - b));
          if (p.spherical) normalise(cen, d);
        }
      }
    });
    // Empty clusters: take the worst-served points, in cluster order.
    std::vector<std::int64_t> empty;
    for (std::int64_t c = 0; c < k; ++c)
      if (start[static_cast<std::size_t>(c)] == start[static_cast<std::size_t>(c + 1)]) empty.push_back(c);
    if (!empty.empty()) {
      std::vector<std::int64_t> cand(static_cast<std::size_t>(n));
      std::iota(cand.begin(), cand.end(), 0);
      const std::size_t need = std::min(empty.size(), cand.size());
      std::partial_sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(need), cand.end(),
                        [&](std::int64_t a, std::int64_t b) {
                          const float da = dist[static_cast<std::size_t>(a)], db = dist[static_cast<std::size_t>(b)];
                          // kL2: farthest first; inner product: least similar first.
                          if (da != db) return maximise ? da < db : da > db;
                          return a < b;
                        });
      for (std::size_t e = 0; e < need; ++e)
        row_f32(x, cand[e], r.centroids.data() + empty[e] * d);
    }
    r.update_seconds += since(t_step);
    r.iterations = iter + 1;
  }
  r.counts.assign(static_cast<std::size_t>(k), 0);
  for (std::int64_t l : r.labels) ++r.counts[static_cast<std::size_t>(l)];
  return r;
}

}  // namespace megatax::cluster
