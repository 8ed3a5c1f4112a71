// cluster/kmeans_steps.h -- one k-means problem (kmeans.h's algorithm) as step machines, so
// that the same steps serve fit_kmeans (one problem, distances from an Assigner) and
// fit_kmeans_batch (many problems in lock-step, one device call per step for all of them).
// Internal to cluster/. The arithmetic of every step is fixed here; the drivers only supply
// distances, assignments and sums, so a problem's result depends on those alone.
#pragma once

#include <cstdint>
#include <vector>

#include "cluster/kmeans.h"
#include "core/random.h"
#include "megatax/matrix.h"

namespace megatax::cluster::detail {

// What a run draws, in its order, for running it elsewhere (cuda::seed_grouped): centroid 0's
// pool index, then the uniforms of the (k - 1) * trials draws a run can make (it consumes
// `trials` of them per drawn centroid, none for a centroid set while the potential is 0).
struct SeedingPlan {
  std::int64_t k = 0, first = 0, trials = 0;
  std::vector<double> uniforms;
};

// Greedy k-means++ (kmeans.h step 1) driven step by step. Its float64 sums (which
// cuda::seed_grouped repeats bit for bit): pool point i belongs to lane i % kSeedLanes; a
// lane's sum adds its nearest distances w_i in pool order; a potential adds the lane sums in
// lane order (C_j: the first j + 1 of them); a draw with target T = u * potential takes the
// first lane j with C_j > T and walks it from C_{j-1}, adding its w_i in pool order, to the
// first point whose running sum exceeds T (none, by rounding: the lane's last point with
// w_i > 0; no lane above T: the pool's last such point). The dependent chains are m / 32
// adds long (a warp on the device sums a candidate's lanes at once).
inline constexpr std::int64_t kSeedLanes = 32;

// Protocol:
//   while (run.next(&cand)) { if (!cand.empty()) run.take(distances of cand); }
// where distances[t * pool().size() + i] = squared L2 between pool points cand[t] and i.
class SeedingRun {
 public:
  SeedingRun(const MatrixView& x, std::int64_t k, std::uint64_t seed, std::int64_t sample_per_centroid);
  // The subsample seeding looks at: ascending row numbers of x.
  const std::vector<std::int64_t>& pool() const noexcept { return pool_; }
  // Prepares the next centroid: false when all k are chosen. Else *cand = the pool indices
  // whose distances take() needs (empty: this centroid was set without distances).
  bool next(std::vector<std::int64_t>* cand);
  void take(const float* distances);
  std::vector<float>& centroids() noexcept { return centroids_; }

  // The alternative to next()/take(): the whole run elsewhere (a device). Call before any
  // next(); next() then has nothing left to do.
  SeedingPlan plan();
  // Sets the centroids from the k pool indices the run chose (Error if one is outside the pool).
  void set_chosen(const std::int64_t* pool_indices);
  // The same into `out` (k x dim floats) instead of centroids(), which stay unallocated.
  void set_chosen(const std::int64_t* pool_indices, float* out) const;

 private:
  void set_from_pool(std::int64_t c, std::int64_t i);
  void update_best(const float* d, bool first);
  std::int64_t draw(double sum);

  MatrixView x_;
  std::int64_t k_, m_ = 0, trials_ = 0, c_ = 0;
  Rng rng_;
  std::vector<std::int64_t> pool_, cand_;
  std::vector<double> best_;
  // The nearest distances' lane sums added in lane order (C_j, the draws search them), each
  // lane's and the pool's last index with a positive entry (-1: none); kept by take().
  double lane_cum_[kSeedLanes] = {};
  std::int64_t lane_last_[kSeedLanes] = {};
  std::int64_t last_positive_ = -1;
  double potential_ = 0;
  std::vector<float> centroids_;
};

// Lloyd iterations (kmeans.h steps 2 and 3) driven step by step. Protocol:
//   while (run.wants_assignment()) {
//     assign run.centroid_data() -> run.labels(), run.distances();
//     if (run.assigned()) run.update(per-cluster float64 sums, counts);
//   }
//   KMeansResult r = run.finish();
class LloydRun {
 public:
  LloydRun(const MatrixView& x, const KMeansParams& p, std::vector<float> centroids);
  // The centroids in caller memory (k x dim floats, holding the seeds; it must outlive the
  // run): updated there, and finish()'s result has no centroids of its own.
  LloydRun(const MatrixView& x, const KMeansParams& p, float* centroids);
  LloydRun(const LloydRun&) = delete;
  LloydRun& operator=(const LloydRun&) = delete;
  bool wants_assignment() const noexcept;
  // The current centroids (k x dim floats), wherever they live.
  const float* centroid_data() const noexcept { return c_; }
  float* centroid_data() noexcept { return c_; }
  std::int64_t* labels() noexcept { return r_.labels.data(); }
  float* distances() noexcept { return dist_.data(); }
  // Records the inertia of the assignment just made; true when an update follows.
  bool assigned();
  // The same given the assignment's inertia (the float64 sum of distances() in point order,
  // made elsewhere: a device's; distances() are not read).
  bool assigned(double inertia);
  // Means of the clusters (sums: k x dim, counts: k), then the empty-cluster repair.
  void update(const double* sums, const std::int64_t* counts, int threads);
  // The same when a device made the means (its centroids are the true ones): the repair
  // alone, on the host copy; returns the clusters it moved (their rows: centroid_data(),
  // unless x has no data: then the device sets them to moved_points(), one per cluster).
  std::vector<std::int64_t> updated_elsewhere(const std::int64_t* counts);
  // The points the last repair moved its clusters to (in the order of the clusters).
  const std::vector<std::int64_t>& moved_points() const noexcept { return moved_points_; }
  // The labels of the last assignment (x.rows) and the problem's size.
  const std::vector<std::int64_t>& label_vector() const noexcept { return r_.labels; }
  std::int64_t k() const noexcept { return p_.k; }
  KMeansResult finish();
  KMeansResult& result() noexcept { return r_; }  // for the drivers' timings

 private:
  void init();
  std::vector<std::int64_t> repair(const std::int64_t* counts);

  MatrixView x_;
  KMeansParams p_;
  KMeansResult r_;
  float* c_ = nullptr;  // the centroids: r_.centroids' or the caller's
  std::vector<float> dist_;
  std::vector<std::int64_t> moved_points_;
  int iter_ = 0;
  bool done_ = false;
};

// Per-label float64 sums (k x dim, overwritten) and counts of x's rows: each cluster's rows
// in point order (clusters in parallel: the same bits on every thread count).
void cluster_sums(const MatrixView& x, const std::vector<std::int64_t>& labels, std::int64_t k,
                  int threads, double* sums, std::int64_t* counts);

// Lloyd's means: centroids[c] = sums[c] / counts[c] (float64, cast to float; spherical:
// normalised) for every cluster c < k with points; the others are left as they are.
void cluster_means(const double* sums, const std::int64_t* counts, std::int64_t k, std::int64_t d,
                   bool spherical, float* centroids, int threads);

// Validates one problem (kmeans.h's requirements), naming the numbers.
void validate_problem(const MatrixView& x, const KMeansParams& p);

}  // namespace megatax::cluster::detail
