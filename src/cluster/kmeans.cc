#include "cluster/kmeans.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <span>
#include <string>

#include "cluster/kmeans_steps.h"
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

namespace detail {

// ---- seeding ------------------------------------------------------------------------------

SeedingRun::SeedingRun(const MatrixView& x, std::int64_t k, std::uint64_t seed,
                       std::int64_t sample_per_centroid)
    : x_(x), k_(k), rng_(seed) {
  const std::int64_t n = x.rows;
  // Subsample: a seeded partial Fisher-Yates shuffle, then sorted for locality.
  // At least kMinInitSample points (or all): small k keeps a robust choice, large k a cheap one.
  constexpr std::int64_t kMinInitSample = 2048;
  m_ = std::min<std::int64_t>(n, std::max({k, sample_per_centroid * k, kMinInitSample}));
  if (m_ == n) {
    pool_.resize(static_cast<std::size_t>(n));
    std::iota(pool_.begin(), pool_.end(), 0);
  } else {
    std::vector<std::int64_t> perm(static_cast<std::size_t>(n));
    std::iota(perm.begin(), perm.end(), 0);
    for (std::int64_t i = 0; i < m_; ++i) {
      const auto j = i + static_cast<std::int64_t>(rng_.below(static_cast<std::uint64_t>(n - i)));
      std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(j)]);
    }
    // The chosen rows in ascending order through a mark per row (the set a sort of
    // perm[0, m) would give, in O(n)).
    std::vector<std::uint8_t> chosen(static_cast<std::size_t>(n), 0);
    for (std::int64_t i = 0; i < m_; ++i) chosen[static_cast<std::size_t>(perm[static_cast<std::size_t>(i)])] = 1;
    pool_.reserve(static_cast<std::size_t>(m_));
    for (std::int64_t r = 0; r < n; ++r)
      if (chosen[static_cast<std::size_t>(r)]) pool_.push_back(r);
  }
  // Greedy k-means++ (as scikit-learn): each step draws `trials` candidates by D^2
  // sampling and keeps the one that lowers the total potential most. Far more robust than
  // one draw at separating true clusters, for trials times the distance work.
  trials_ = std::min<std::int64_t>(8, 2 + static_cast<std::int64_t>(2 * std::log(static_cast<double>(k))));
  best_.assign(static_cast<std::size_t>(m_), INFINITY);
}

void SeedingRun::set_from_pool(std::int64_t c, std::int64_t i) {
  // Allocated at the first centroid (set_chosen into caller memory never needs them).
  if (centroids_.empty()) centroids_.resize(static_cast<std::size_t>(k_ * x_.dim));
  row_f32(x_, pool_[static_cast<std::size_t>(i)], centroids_.data() + c * x_.dim);
}

// A pool point with probability best[i] / sum (kmeans_steps.h's draw): the first lane whose
// C_j exceeds u * sum, then that lane's running sum from C_{j-1} in pool order (at a point
// with best = 0 the sum does not grow, so the point found has best > 0).
std::int64_t SeedingRun::draw(double sum) {
  const double target = rng_.uniform() * sum;
  std::int64_t j = 0;
  while (j < kSeedLanes && !(lane_cum_[j] > target)) ++j;
  if (j == kSeedLanes) return last_positive_;
  double run = j == 0 ? 0.0 : lane_cum_[j - 1];
  for (std::int64_t i = j; i < m_; i += kSeedLanes) {
    run += best_[static_cast<std::size_t>(i)];
    if (run > target) return i;
  }
  return lane_last_[j];
}

bool SeedingRun::next(std::vector<std::int64_t>* cand) {
  cand->clear();
  cand_.clear();
  if (c_ >= k_) return false;
  if (c_ == 0) {  // first centroid: uniform
    const auto first = static_cast<std::int64_t>(rng_.below(static_cast<std::uint64_t>(m_)));
    set_from_pool(0, first);
    cand_.push_back(first);
  } else if (potential_ <= 0) {  // every point sits on a centroid: duplicates; reuse point c mod m
    set_from_pool(c_, c_ % m_);
    ++c_;
  } else {
    for (std::int64_t t = 0; t < trials_; ++t) {
      const std::int64_t pick = draw(potential_);
      if (pick < 0) break;
      cand_.push_back(pick);
    }
    if (cand_.empty()) {
      set_from_pool(c_, c_ % m_);
      ++c_;
    }
  }
  *cand = cand_;
  return true;
}

// best_ = min(best_, d) (d = the first centroid's distances: best_ = d), its lane sums
// added in lane order (the potential, C_j) and the last positive entries.
void SeedingRun::update_best(const float* d, bool first) {
  double lane[kSeedLanes] = {};
  std::fill(std::begin(lane_last_), std::end(lane_last_), -1);
  last_positive_ = -1;
  for (std::int64_t i = 0; i < m_; ++i) {
    auto& b = best_[static_cast<std::size_t>(i)];
    b = first ? static_cast<double>(d[i]) : std::min(b, static_cast<double>(d[i]));
    lane[i % kSeedLanes] += b;
    if (b > 0) {
      lane_last_[i % kSeedLanes] = i;
      last_positive_ = i;
    }
  }
  double acc = 0;
  for (std::int64_t j = 0; j < kSeedLanes; ++j) {
    acc += lane[j];
    lane_cum_[j] = acc;
  }
  potential_ = acc;
}

void SeedingRun::take(const float* dist) {
  if (c_ == 0) {
    update_best(dist, true);
    c_ = 1;
    return;
  }
  // Squared L2 (also for inner product: seeding spreads points out). Every candidate's
  // potential sum_i min(best_i, d_t,i) in lanes (kmeans_steps.h), all candidates in one
  // pass over the pool (a block of kSeedLanes points at a time: independent chains).
  constexpr std::size_t kMaxTrials = 16;
  const std::size_t nc = cand_.size();
  if (nc > kMaxTrials)
    throw_error(ErrorCode::kInternal, "k-means++: " + std::to_string(nc) + " candidates > " + std::to_string(kMaxTrials));
  double lanes[kMaxTrials][kSeedLanes] = {};
  for (std::int64_t i0 = 0; i0 < m_; i0 += kSeedLanes) {
    const std::int64_t len = std::min(kSeedLanes, m_ - i0);
    const double* b = best_.data() + i0;
    for (std::size_t t = 0; t < nc; ++t) {
      const float* dt = dist + static_cast<std::int64_t>(t) * m_ + i0;
      for (std::int64_t j = 0; j < len; ++j) lanes[t][j] += std::min(b[j], static_cast<double>(dt[j]));
    }
  }
  std::size_t chosen = 0;
  double chosen_potential = INFINITY;
  for (std::size_t t = 0; t < nc; ++t) {
    double pot = 0;
    for (std::int64_t j = 0; j < kSeedLanes; ++j) pot += lanes[t][j];
    if (pot < chosen_potential) {
      chosen_potential = pot;
      chosen = t;
    }
  }
  set_from_pool(c_, cand_[chosen]);
  update_best(dist + static_cast<std::int64_t>(chosen) * m_, false);
  ++c_;
}

SeedingPlan SeedingRun::plan() {
  SeedingPlan p;
  p.k = k_;
  p.first = static_cast<std::int64_t>(rng_.below(static_cast<std::uint64_t>(m_)));  // as next() at c = 0
  p.trials = trials_;
  p.uniforms.resize(static_cast<std::size_t>((k_ - 1) * trials_));
  for (double& u : p.uniforms) u = rng_.uniform();
  c_ = k_;  // next() has nothing left to do
  return p;
}

void SeedingRun::set_chosen(const std::int64_t* pool_indices) {
  if (centroids_.empty()) centroids_.resize(static_cast<std::size_t>(k_ * x_.dim));
  set_chosen(pool_indices, centroids_.data());
}

void SeedingRun::set_chosen(const std::int64_t* pool_indices, float* out) const {
  for (std::int64_t c = 0; c < k_; ++c) {
    const std::int64_t i = pool_indices[c];
    if (i < 0 || i >= m_)
      throw_error(ErrorCode::kInternal, "k-means++: centroid " + std::to_string(c) + " chose pool index " +
                                            std::to_string(i) + ", outside the pool of " + std::to_string(m_));
    row_f32(x_, pool_[static_cast<std::size_t>(i)], out + c * x_.dim);
  }
}

// ---- Lloyd --------------------------------------------------------------------------------

LloydRun::LloydRun(const MatrixView& x, const KMeansParams& p, std::vector<float> centroids)
    : x_(x), p_(p) {
  r_.centroids = std::move(centroids);
  c_ = r_.centroids.data();
  init();
}

LloydRun::LloydRun(const MatrixView& x, const KMeansParams& p, float* centroids) : x_(x), p_(p), c_(centroids) {
  init();
}

void LloydRun::init() {
  if (p_.spherical)
    for (std::int64_t c = 0; c < p_.k; ++c) normalise(c_ + c * x_.dim, x_.dim);
  r_.labels.resize(static_cast<std::size_t>(x_.rows));
  dist_.resize(static_cast<std::size_t>(x_.rows));
}

bool LloydRun::wants_assignment() const noexcept {
  // Without the final assignment, the last update's centroids are returned unscored.
  return !done_ && !(iter_ == p_.max_iter && iter_ > 0 && !p_.final_assignment);
}

bool LloydRun::assigned() { return assigned(total(dist_)); }

bool LloydRun::assigned(double inertia) {
  r_.inertia.push_back(inertia);
  if (p_.on_iteration) p_.on_iteration(iter_, inertia);
  if (iter_ > 0) {
    const double prev = r_.inertia[r_.inertia.size() - 2];
    const double change = std::fabs(prev - inertia) / std::max(std::fabs(inertia), 1e-300);
    if (change < p_.tol) {
      r_.converged = true;
      done_ = true;
      return false;
    }
  }
  if (iter_ == p_.max_iter) {
    done_ = true;
    return false;
  }
  return true;
}

void cluster_means(const double* sums, const std::int64_t* counts, std::int64_t k, std::int64_t d,
                   bool spherical, float* centroids, int threads) {
  // Clusters in parallel: deterministic.
  parallel_for(threads, (k + 63) / 64, [&](std::int64_t task, int) {
    for (std::int64_t c = task * 64; c < std::min(k, (task + 1) * 64); ++c) {
      const std::int64_t count = counts[c];
      if (count == 0) continue;
      const double* s = sums + c * d;
      float* cen = centroids + c * d;
      for (std::int64_t j = 0; j < d; ++j) cen[j] = static_cast<float>(s[j] / static_cast<double>(count));
      if (spherical) normalise(cen, d);
    }
  });
}

void LloydRun::update(const double* sums, const std::int64_t* counts, int threads) {
  cluster_means(sums, counts, p_.k, x_.dim, p_.spherical, c_, threads);
  repair(counts);
  r_.iterations = iter_ + 1;
  ++iter_;
}

std::vector<std::int64_t> LloydRun::updated_elsewhere(const std::int64_t* counts) {
  std::vector<std::int64_t> moved = repair(counts);
  r_.iterations = iter_ + 1;
  ++iter_;
  return moved;
}

// Empty clusters: each takes the worst-served point, in cluster order. Returns them.
std::vector<std::int64_t> LloydRun::repair(const std::int64_t* counts) {
  const std::int64_t k = p_.k, d = x_.dim, n = x_.rows;
  moved_points_.clear();
  std::vector<std::int64_t> empty;
  for (std::int64_t c = 0; c < k; ++c)
    if (counts[c] == 0) empty.push_back(c);
  if (empty.empty()) return empty;
  const bool maximise = p_.metric == Metric::kInnerProduct;
  std::vector<std::int64_t> cand(static_cast<std::size_t>(n));
  std::iota(cand.begin(), cand.end(), 0);
  const std::size_t need = std::min(empty.size(), cand.size());
  std::partial_sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(need), cand.end(),
                    [&](std::int64_t a, std::int64_t b) {
                      const float da = dist_[static_cast<std::size_t>(a)], db = dist_[static_cast<std::size_t>(b)];
                      // kL2: farthest first; inner product: least similar first.
                      if (da != db) return maximise ? da < db : da > db;
                      return a < b;
                    });
  moved_points_.assign(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(need));
  if (x_.data != nullptr)  // else the rows live on a device only (LloydRun::moved_points)
    for (std::size_t e = 0; e < need; ++e) row_f32(x_, cand[e], c_ + empty[e] * d);
  empty.resize(need);
  return empty;
}

KMeansResult LloydRun::finish() {
  r_.counts.assign(static_cast<std::size_t>(p_.k), 0);
  for (std::int64_t l : r_.labels) ++r_.counts[static_cast<std::size_t>(l)];
  return std::move(r_);
}

void cluster_sums(const MatrixView& x, const std::vector<std::int64_t>& labels, std::int64_t k,
                  int threads, double* sums, std::int64_t* counts) {
  const std::int64_t n = x.rows, d = x.dim;
  // Group points by label (counting sort keeps point order inside each cluster).
  std::vector<std::int64_t> order(static_cast<std::size_t>(n)), start(static_cast<std::size_t>(k + 1), 0);
  for (std::int64_t i = 0; i < n; ++i) ++start[static_cast<std::size_t>(labels[static_cast<std::size_t>(i)] + 1)];
  for (std::int64_t c = 0; c < k; ++c) start[static_cast<std::size_t>(c + 1)] += start[static_cast<std::size_t>(c)];
  {
    std::vector<std::int64_t> fill(start.begin(), start.end() - 1);
    for (std::int64_t i = 0; i < n; ++i)
      order[static_cast<std::size_t>(fill[static_cast<std::size_t>(labels[static_cast<std::size_t>(i)])]++)] = i;
  }
  parallel_for(threads, (k + 63) / 64, [&](std::int64_t task, int) {
    std::vector<float> row(static_cast<std::size_t>(d));
    for (std::int64_t c = task * 64; c < std::min(k, (task + 1) * 64); ++c) {
      double* s = sums + c * d;
      std::fill(s, s + d, 0.0);
      const std::int64_t b = start[static_cast<std::size_t>(c)], e = start[static_cast<std::size_t>(c + 1)];
      counts[c] = e - b;
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
    }
  });
}

void validate_problem(const MatrixView& x, const KMeansParams& p) {
  validate_view(x, "k-means points");
  if (p.k < 1) throw_error(ErrorCode::kInvalidArgument, "k-means: k must be >= 1, got " + std::to_string(p.k));
  if (x.rows < p.k)
    throw_error(ErrorCode::kInvalidArgument, "k-means: " + std::to_string(x.rows) +
                                                 " points are fewer than k = " + std::to_string(p.k));
}

}  // namespace detail

std::vector<float> kmeans_plus_plus(const MatrixView& x, std::int64_t k, std::uint64_t seed,
                                    std::int64_t sample_per_centroid, int threads, Assigner* device) {
  const std::int64_t d = x.dim;
  detail::SeedingRun run(x, k, seed, sample_per_centroid);
  const std::vector<std::int64_t>& pool = run.pool();
  const auto m = static_cast<std::int64_t>(pool.size());
  // The distances run on the device when the assigner offers it (its prepared copy of x),
  // else on the CPU kernels over the pool's rows packed as float32.
  const bool on_device = device != nullptr && device->set_seeding_pool(pool);
  kernels::PackedMatrix packed(d, DType::kF32);
  std::vector<float> row(static_cast<std::size_t>(d));
  if (!on_device) {
    packed.reserve(m);
    for (std::int64_t i : pool) {
      row_f32(x, i, row.data());
      packed.append(f32_view(row.data(), 1, d));
    }
  }
  kernels::KnnOptions opt;
  opt.threads = threads;
  std::vector<std::int64_t> cand;
  std::vector<float> cand_rows, dist;
  while (run.next(&cand)) {
    if (cand.empty()) continue;
    const auto nc = static_cast<std::int64_t>(cand.size());
    dist.resize(static_cast<std::size_t>(nc * m));
    if (on_device) {
      device->seeding_distances(cand, dist.data());
    } else {
      cand_rows.resize(static_cast<std::size_t>(nc * d));
      for (std::int64_t t = 0; t < nc; ++t) packed.get_row_f32(cand[static_cast<std::size_t>(t)], cand_rows.data() + t * d);
      kernels::all_distances(f32_view(cand_rows.data(), nc, d), packed, Metric::kL2, dist.data(), m, opt);
    }
    run.take(dist.data());
  }
  return std::move(run.centroids());
}

KMeansResult fit_kmeans(const MatrixView& x, const KMeansParams& p, Assigner& assigner) {
  detail::validate_problem(x, p);
  const std::int64_t k = p.k, d = x.dim;
  using Clock = std::chrono::steady_clock;
  auto since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  auto t_step = Clock::now();
  assigner.prepare(x);  // a device upload, counted with the assignments; seeding may use it
  const double prepare_seconds = since(t_step);
  t_step = Clock::now();
  std::vector<float> seeds = kmeans_plus_plus(x, k, p.seed, p.init_sample_per_centroid, p.threads, &assigner);
  const double seed_seconds = since(t_step);
  detail::LloydRun run(x, p, std::move(seeds));
  KMeansResult& r = run.result();
  r.seed_seconds = seed_seconds;
  r.assign_seconds = prepare_seconds;
  std::vector<double> sums(static_cast<std::size_t>(k * d));
  std::vector<std::int64_t> members(static_cast<std::size_t>(k));
  while (run.wants_assignment()) {
    t_step = Clock::now();
    assigner.set_centroids(run.centroid_data(), k, d);
    assigner.assign(x, run.labels(), run.distances());
    r.assign_seconds += since(t_step);
    if (!run.assigned()) break;
    t_step = Clock::now();
    if (!assigner.cluster_sums(k, sums.data(), members.data()))
      detail::cluster_sums(x, run.label_vector(), k, p.threads, sums.data(), members.data());
    run.update(sums.data(), members.data(), p.threads);
    r.update_seconds += since(t_step);
  }
  return run.finish();
}

}  // namespace megatax::cluster
