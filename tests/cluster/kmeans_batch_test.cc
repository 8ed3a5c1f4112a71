// fit_kmeans_batch (many problems in lock-step) against fit_kmeans (one problem at a time),
// the independent reference: with a device that computes every step exactly as the single
// path does (CPU kernels), each problem's result must be the same, bit for bit, whatever
// other problems share its batch.
#include "cluster/kmeans_batch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cluster/kmeans_steps.h"
#include "kernels/cpu/knn.h"
#include "megatax/error.h"

namespace megatax::cluster {
namespace {

// BatchKMeansDevice on the CPU kernels, step by step as fit_kmeans with a CpuAssigner:
// seeding distances over the pool packed as float32, assignment through CpuAssigner, the
// update through the point-order float64 sums and the same means.
class CpuBatchDevice final : public BatchKMeansDevice {
 public:
  void prepare(std::span<const MatrixView> xs) override {
    xs_.assign(xs.begin(), xs.end());
    ++prepares;
  }
  void set_seeding_pools(const std::vector<std::span<const std::int64_t>>& pools) override {
    packed_.clear();
    for (std::size_t p = 0; p < pools.size(); ++p) {
      packed_.emplace_back(xs_[p].dim, DType::kF32);
      std::vector<float> row(static_cast<std::size_t>(xs_[p].dim));
      for (std::int64_t i : pools[p]) {
        convert_to_f32(xs_[p].dtype, xs_[p].row(i), row.size(), row.data());
        packed_.back().append(f32_view(row.data(), 1, xs_[p].dim));
      }
    }
  }
  // With seed_on_device: the whole seeding here, written as cuda::seed_grouped does it
  // (each candidate's 32 lane sums, a running sum per lane for the draws, uniforms consumed
  // by a counter), not as SeedingRun's passes: the test holds the two to the same choices.
  bool can_seed() const override { return seed_on_device; }
  void seed(const std::vector<detail::SeedingPlan>& plans, std::vector<std::vector<std::int64_t>>* chosen) override {
    ++seed_calls;
    chosen->assign(plans.size(), {});
    for (std::size_t p = 0; p < plans.size(); ++p) {
      const auto& pl = plans[p];
      const std::int64_t m = packed_[p].rows();
      std::vector<std::int64_t>& out = (*chosen)[p];
      out.assign(static_cast<std::size_t>(pl.k), -1);
      std::vector<float> best(static_cast<std::size_t>(m));
      constexpr std::int64_t L = 32;  // lanes: point i in lane i % L
      // Lane sums of v (float64, pool order within a lane).
      auto lane_sums = [&](const auto& v) {
        std::vector<double> sums(L, 0.0);
        for (std::int64_t j = 0; j < L; ++j)
          for (std::int64_t i = j; i < m; i += L) sums[static_cast<std::size_t>(j)] += static_cast<double>(v(i));
        return sums;
      };
      std::vector<std::int64_t> cand = {pl.first};
      std::int64_t used = 0;
      for (std::int64_t c = 0;;) {
        const std::vector<float> d = pool_distances(p, cand);
        if (c == 0) {
          out[0] = pl.first;
          best.assign(d.begin(), d.begin() + m);
        } else {
          std::size_t choice = 0;
          double lowest = INFINITY;
          for (std::size_t t = 0; t < cand.size(); ++t) {
            const auto sums = lane_sums([&](std::int64_t i) {
              return std::min(best[static_cast<std::size_t>(i)], d[t * static_cast<std::size_t>(m) + static_cast<std::size_t>(i)]);
            });
            double pot = 0;
            for (double v : sums) pot += v;
            if (pot < lowest) {
              lowest = pot;
              choice = t;
            }
          }
          out[static_cast<std::size_t>(c)] = cand[choice];
          for (std::int64_t i = 0; i < m; ++i)
            best[static_cast<std::size_t>(i)] = std::min(best[static_cast<std::size_t>(i)],
                                                         d[choice * static_cast<std::size_t>(m) + static_cast<std::size_t>(i)]);
        }
        const auto sums = lane_sums([&](std::int64_t i) { return best[static_cast<std::size_t>(i)]; });
        std::vector<double> cum(L);
        double acc = 0;
        for (std::int64_t j = 0; j < L; ++j) cum[static_cast<std::size_t>(j)] = acc += sums[static_cast<std::size_t>(j)];
        // The last point with a positive distance, in the pool and in lane j.
        auto last_positive = [&](std::int64_t lane) {
          std::int64_t last = -1;
          for (std::int64_t i = 0; i < m; ++i)
            if (best[static_cast<std::size_t>(i)] > 0 && (lane < 0 || i % L == lane)) last = i;
          return last;
        };
        ++c;
        while (c < pl.k && acc <= 0) {
          out[static_cast<std::size_t>(c)] = c % m;
          ++c;
        }
        if (c >= pl.k) break;
        cand.clear();
        for (std::int64_t t = 0; t < pl.trials; ++t) {
          const double target = pl.uniforms[static_cast<std::size_t>(used + t)] * acc;
          const auto it = std::find_if(cum.begin(), cum.end(), [&](double v) { return v > target; });
          if (it == cum.end()) {
            cand.push_back(last_positive(-1));
            continue;
          }
          const std::int64_t lane = it - cum.begin();
          double run = lane == 0 ? 0.0 : cum[static_cast<std::size_t>(lane - 1)];
          std::int64_t pick = -1;
          for (std::int64_t i = lane; i < m && pick < 0; i += L)
            if ((run += best[static_cast<std::size_t>(i)]) > target) pick = i;
          cand.push_back(pick >= 0 ? pick : last_positive(lane));
        }
        used += pl.trials;
      }
    }
  }
  void seeding_distances(const std::vector<std::vector<std::int64_t>>& cands,
                         std::vector<const float*>* out) override {
    ++seeding_calls;
    dist_.resize(cands.size());
    out->assign(cands.size(), nullptr);
    for (std::size_t p = 0; p < cands.size(); ++p) {
      if (cands[p].empty()) continue;
      dist_[p] = pool_distances(p, cands[p]);
      (*out)[p] = dist_[p].data();
    }
  }
  // Squared L2 from the candidates (pool indices) to every pool point, candidate-major.
  std::vector<float> pool_distances(std::size_t p, const std::vector<std::int64_t>& cand) const {
    const std::int64_t d = xs_[p].dim, nc = static_cast<std::int64_t>(cand.size());
    std::vector<float> rows(static_cast<std::size_t>(nc * d));
    for (std::int64_t t = 0; t < nc; ++t) packed_[p].get_row_f32(cand[static_cast<std::size_t>(t)], rows.data() + t * d);
    kernels::KnnOptions opt;
    opt.threads = 1;
    std::vector<float> out(static_cast<std::size_t>(nc * packed_[p].rows()));
    kernels::all_distances(f32_view(rows.data(), nc, d), packed_[p], Metric::kL2, out.data(), packed_[p].rows(), opt);
    return out;
  }
  void set_centroids(const std::vector<const float*>& centroids, const std::vector<std::int64_t>& k) override {
    centroids_.clear();
    for (std::size_t p = 0; p < centroids.size(); ++p)
      centroids_.emplace_back(centroids[p], centroids[p] + k[p] * xs_[p].dim);
    k_ = k;
  }
  void assign(const std::vector<std::int64_t*>& labels, const std::vector<float*>& distances) override {
    labels_.resize(labels.size());
    dist_.resize(labels.size());
    for (std::size_t p = 0; p < labels.size(); ++p) {
      assign_one(p);
      if (labels[p] != nullptr) {
        std::copy(labels_[p].begin(), labels_[p].end(), labels[p]);
        std::copy(dist_[p].begin(), dist_[p].end(), distances[p]);
      }
    }
  }
  // With step_on_device: Lloyd's decisions made here, written as cuda::lloyd_decide makes
  // them (its own inertia sum and rule, not LloydRun's): the driver checks them against its
  // runs, and the test holds the results to fit_kmeans'.
  bool can_step() const override { return step_on_device; }
  void begin_steps(std::span<const KMeansParams> params) override {
    state_.assign(params.size(), {});
    for (std::size_t p = 0; p < params.size(); ++p) {
      state_[p].tol = params[p].tol;
      state_[p].max_iter = params[p].max_iter;
    }
    labels_.assign(params.size(), {});
    dist_.assign(params.size(), {});
  }
  void step(const std::vector<std::uint8_t>& assigned, std::vector<double>* inertia,
            std::vector<std::uint8_t>* updated, const std::vector<std::int64_t*>& counts, bool spherical) override {
    ++steps;
    inertia->assign(assigned.size(), 0.0);
    updated->assign(assigned.size(), 0);
    for (std::size_t p = 0; p < assigned.size(); ++p) {
      if (assigned[p] == 0) continue;
      assign_one(p);
      double sum = 0;
      for (float v : dist_[p]) sum += v;
      State& st = state_[p];
      const bool converged = st.updates > 0 && std::fabs(st.last - sum) / std::fmax(std::fabs(sum), 1e-300) < st.tol;
      const bool update = !converged && st.updates < st.max_iter;
      st.last = sum;
      (*inertia)[p] = sum;
      if (!update) continue;
      ++st.updates;
      (*updated)[p] = 1;
      std::vector<double> sums(static_cast<std::size_t>(k_[p] * xs_[p].dim));
      detail::cluster_sums(xs_[p], labels_[p], k_[p], 1, sums.data(), counts[p]);
      detail::cluster_means(sums.data(), counts[p], k_[p], xs_[p].dim, spherical, centroids_[p].data(), 1);
    }
  }
  void last_distances(std::size_t p, float* out) override {
    ++distance_reads;
    std::copy(dist_[p].begin(), dist_[p].end(), out);
  }
  void last_labels(const std::vector<std::int64_t*>& out) override {
    for (std::size_t p = 0; p < out.size(); ++p) std::copy(labels_[p].begin(), labels_[p].end(), out[p]);
  }
  void update_centroids(const std::vector<std::int64_t*>& counts, bool spherical) override {
    for (std::size_t p = 0; p < counts.size(); ++p) {
      if (counts[p] == nullptr) continue;
      std::vector<double> sums(static_cast<std::size_t>(k_[p] * xs_[p].dim));
      detail::cluster_sums(xs_[p], labels_[p], k_[p], 1, sums.data(), counts[p]);
      detail::cluster_means(sums.data(), counts[p], k_[p], xs_[p].dim, spherical, centroids_[p].data(), 1);
    }
  }
  void set_centroid(std::size_t p, std::int64_t c, const float* row) override {
    std::copy(row, row + xs_[p].dim, centroids_[p].begin() + c * xs_[p].dim);
  }
  void get_centroids(const std::vector<float*>& out) override {
    for (std::size_t p = 0; p < out.size(); ++p) std::copy(centroids_[p].begin(), centroids_[p].end(), out[p]);
  }
  int prepares = 0, seeding_calls = 0, seed_calls = 0, steps = 0, distance_reads = 0;
  bool seed_on_device = false, step_on_device = false;

 private:
  struct State {
    double last = 0, tol = 0;
    int updates = 0, max_iter = 0;
  };
  void assign_one(std::size_t p) {
    kernels::KnnOptions opt;
    opt.threads = 1;
    CpuAssigner a(Metric::kL2, opt);
    a.set_centroids(centroids_[p].data(), k_[p], xs_[p].dim);
    labels_[p].resize(static_cast<std::size_t>(xs_[p].rows));
    dist_[p].resize(static_cast<std::size_t>(xs_[p].rows));
    a.assign(xs_[p], labels_[p].data(), dist_[p].data());
  }
  std::vector<State> state_;
  std::vector<MatrixView> xs_;
  std::vector<kernels::PackedMatrix> packed_;
  std::vector<std::vector<float>> centroids_, dist_;
  std::vector<std::vector<std::int64_t>> labels_;
  std::vector<std::int64_t> k_;
};

struct Problem {
  std::vector<float> x;
  std::int64_t n, d;
  KMeansParams p;
};

Problem make_problem(std::mt19937_64& rng, std::int64_t n, std::int64_t d, std::int64_t k, int max_iter) {
  Problem pr{std::vector<float>(static_cast<std::size_t>(n * d)), n, d, {}};
  std::normal_distribution<float> g;
  const int blobs = static_cast<int>(k) + 3;
  std::vector<float> centres(static_cast<std::size_t>(blobs * d));
  for (auto& v : centres) v = 4.f * g(rng);
  std::uniform_int_distribution<int> pick(0, blobs - 1);
  for (std::int64_t i = 0; i < n; ++i) {
    const int c = pick(rng);
    for (std::int64_t j = 0; j < d; ++j) pr.x[static_cast<std::size_t>(i * d + j)] = centres[static_cast<std::size_t>(c * d + j)] + g(rng);
  }
  pr.p.k = k;
  pr.p.seed = rng();
  pr.p.max_iter = max_iter;
  pr.p.tol = 1e-6;
  pr.p.threads = 1;
  return pr;
}

// Every problem of a batch against fit_kmeans alone; seed_on_device: the seeding through
// the device's seed() (the device algorithm's formulation) instead of host steps;
// step_on_device: Lloyd's decisions through the device's step().
void check_batch_matches_single(bool seed_on_device, bool step_on_device = false) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::int64_t d = 12;
  // Different sizes, k and iteration budgets: problems finish seeding and Lloyd at
  // different steps (one converges at once, one runs out of iterations, one has k = 1).
  std::vector<Problem> probs;
  probs.push_back(make_problem(rng, 3000, d, 20, 25));
  probs.push_back(make_problem(rng, 700, d, 7, 3));
  probs.push_back(make_problem(rng, 50, d, 1, 10));
  probs.push_back(make_problem(rng, 2500, d, 40, 0));
  probs.push_back(make_problem(rng, 400, d, 400 / 2, 25));
  probs[1].p.final_assignment = false;
  // Only 4 distinct points for k = 9: the potential reaches 0 and the seeding copies.
  probs.push_back(make_problem(rng, 60, d, 9, 5));
  for (std::int64_t i = 4; i < 60; ++i)
    std::copy_n(probs.back().x.begin() + (i % 4) * d, d, probs.back().x.begin() + i * d);
  std::vector<MatrixView> views;
  std::vector<KMeansParams> params;
  for (const auto& pr : probs) {
    views.push_back(f32_view(pr.x.data(), pr.n, pr.d));
    params.push_back(pr.p);
  }
  CpuBatchDevice dev;
  dev.seed_on_device = seed_on_device;
  dev.step_on_device = step_on_device;
  BatchKMeansTimes times;
  const auto batch = fit_kmeans_batch(views, params, dev, 2, &times);
  ASSERT_EQ(batch.size(), probs.size());
  if (seed_on_device) {
    EXPECT_EQ(dev.seed_calls, 1);
    EXPECT_EQ(dev.seeding_calls, 0);
  } else {
    // Seeding ran in lock-step: as many device calls as the largest k needs, not the sum.
    EXPECT_LE(dev.seeding_calls, 200);
  }
  if (step_on_device) {
    // Lock-step: as many steps as the longest run assigns (25 updates + the final one), and
    // the repairs of the problems with empty clusters read their distances.
    EXPECT_GE(dev.steps, 2);
    EXPECT_LE(dev.steps, 26);
  } else {
    EXPECT_EQ(dev.steps, 0);
  }
  for (std::size_t p = 0; p < probs.size(); ++p) {
    SCOPED_TRACE("problem " + std::to_string(p));
    kernels::KnnOptions opt;
    opt.threads = 1;
    CpuAssigner single(Metric::kL2, opt);
    const auto ref = fit_kmeans(views[p], params[p], single);
    EXPECT_EQ(batch[p].centroids, ref.centroids);
    EXPECT_EQ(batch[p].labels, ref.labels);
    EXPECT_EQ(batch[p].counts, ref.counts);
    EXPECT_EQ(batch[p].inertia, ref.inertia);
    EXPECT_EQ(batch[p].iterations, ref.iterations);
    EXPECT_EQ(batch[p].converged, ref.converged);
  }
  // Into caller memory (one array, slices poisoned with NaN first): the same centroids
  // there, none in the results, everything else equal.
  std::vector<std::size_t> offset{0};
  for (const auto& pr : probs) offset.push_back(offset.back() + static_cast<std::size_t>(pr.p.k * d));
  std::vector<float> flat(offset.back(), std::numeric_limits<float>::quiet_NaN());
  std::vector<float*> out;
  for (std::size_t p = 0; p < probs.size(); ++p) out.push_back(flat.data() + offset[p]);
  CpuBatchDevice dev_out;
  dev_out.seed_on_device = seed_on_device;
  dev_out.step_on_device = step_on_device;
  const auto placed = fit_kmeans_batch(views, params, dev_out, 2, nullptr, out);
  ASSERT_EQ(placed.size(), probs.size());
  for (std::size_t p = 0; p < probs.size(); ++p) {
    SCOPED_TRACE("into caller memory, problem " + std::to_string(p));
    EXPECT_TRUE(placed[p].centroids.empty());
    EXPECT_EQ(std::vector<float>(flat.begin() + static_cast<std::ptrdiff_t>(offset[p]),
                                 flat.begin() + static_cast<std::ptrdiff_t>(offset[p + 1])),
              batch[p].centroids);
    EXPECT_EQ(placed[p].labels, batch[p].labels);
    EXPECT_EQ(placed[p].counts, batch[p].counts);
    EXPECT_EQ(placed[p].inertia, batch[p].inertia);
    EXPECT_EQ(placed[p].iterations, batch[p].iterations);
  }
  // A problem alone gives what it gave in the batch.
  CpuBatchDevice alone;
  alone.seed_on_device = seed_on_device;
  alone.step_on_device = step_on_device;
  const auto one = fit_kmeans_batch(std::span<const MatrixView>(views.data() + 1, 1),
                                    std::span<const KMeansParams>(params.data() + 1, 1), alone, 1);
  EXPECT_EQ(one[0].centroids, batch[1].centroids);
}

TEST(KMeansBatch, EachProblemMatchesFitKMeansBitForBit) { check_batch_matches_single(false); }

TEST(KMeansBatch, SeedingOnTheDeviceChoosesAsTheHostSteps) { check_batch_matches_single(true); }

TEST(KMeansBatch, LloydDecisionsOnTheDeviceMatchTheHostRuns) { check_batch_matches_single(true, true); }

// A problem whose clusters go empty (duplicated points, k above the distinct ones) and a
// problem reporting its iterations (the host-driven path for the whole batch then).
TEST(KMeansBatch, DeviceStepsRepairEmptyClustersAndGiveWayToReports) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::int64_t d = 6;
  auto dup = make_problem(rng, 300, d, 12, 15);
  // 8 distinct points, each repeated, for k = 12: the seeding runs out of distinct points
  // (potential 0: it copies), coinciding centroids leave clusters empty, and the repair moves
  // them to the worst-served points.
  for (std::int64_t i = 8; i < 300; ++i) std::copy_n(dup.x.begin() + (i % 8) * d, d, dup.x.begin() + i * d);
  auto plain = make_problem(rng, 800, d, 9, 20);
  std::vector<MatrixView> views = {f32_view(dup.x.data(), dup.n, d), f32_view(plain.x.data(), plain.n, d)};
  std::vector<KMeansParams> params = {dup.p, plain.p};
  std::vector<KMeansResult> ref;
  for (std::size_t p = 0; p < views.size(); ++p) {
    kernels::KnnOptions opt;
    opt.threads = 1;
    CpuAssigner single(Metric::kL2, opt);
    ref.push_back(fit_kmeans(views[p], params[p], single));
  }
  CpuBatchDevice dev;
  dev.step_on_device = true;
  const auto batch = fit_kmeans_batch(views, params, dev, 2);
  EXPECT_GT(dev.steps, 0);
  EXPECT_GT(dev.distance_reads, 0);  // the repairs read their problem's distances
  for (std::size_t p = 0; p < views.size(); ++p) {
    SCOPED_TRACE("problem " + std::to_string(p));
    EXPECT_EQ(batch[p].centroids, ref[p].centroids);
    EXPECT_EQ(batch[p].labels, ref[p].labels);
    EXPECT_EQ(batch[p].inertia, ref[p].inertia);
    EXPECT_EQ(batch[p].iterations, ref[p].iterations);
    EXPECT_EQ(batch[p].converged, ref[p].converged);
  }
  std::vector<double> reported;
  params[1].on_iteration = [&](int, double inertia) { reported.push_back(inertia); };
  CpuBatchDevice reporting;
  reporting.step_on_device = true;
  const auto with_reports = fit_kmeans_batch(views, params, reporting, 2);
  EXPECT_EQ(reporting.steps, 0);
  EXPECT_EQ(reported, ref[1].inertia);
  EXPECT_EQ(with_reports[0].centroids, ref[0].centroids);
  EXPECT_EQ(with_reports[1].centroids, ref[1].centroids);
}

TEST(KMeansBatch, BadProblemIsNamed) {
  std::mt19937_64 rng(5);
  auto a = make_problem(rng, 100, 4, 3, 5), b = make_problem(rng, 5, 4, 9, 5);
  std::vector<MatrixView> views = {f32_view(a.x.data(), a.n, a.d), f32_view(b.x.data(), b.n, b.d)};
  std::vector<KMeansParams> params = {a.p, b.p};
  CpuBatchDevice dev;
  try {
    fit_kmeans_batch(views, params, dev, 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("problem 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("5 points are fewer than k = 9"), std::string::npos) << e.what();
  }
  EXPECT_EQ(dev.prepares, 0);  // refused before any device work
}

}  // namespace
}  // namespace megatax::cluster
