// cluster/kmeans.h -- one k-means problem: k-means++ seeding, then Lloyd iterations.
//
// fit_kmeans(x, params, assigner):
//   1. Seeding (greedy k-means++ from params.seed): the first centroid is a uniformly drawn
//      point; for each next one, min(8, 2 + 2 ln k) candidates are drawn with probability
//      proportional to their squared distance to the nearest centroid so far, and the one
//      that lowers the total squared distance most is kept. Seeding looks at a subsample of
//      max(init_sample_per_centroid * k, 2048) points (all if fewer; drawn from the seed),
//      which bounds its cost at O(init_sample_per_centroid * k^2 * dim).
//   2. Lloyd: assign every point of x (through the Assigner), record the inertia, stop when
//      the relative change of inertia is below tol or after max_iter updates; else move each
//      centroid to the mean of its points (sums in float64, in point order: the result does
//      not depend on threads; an assigner offering cluster_sums() computes them on its
//      device instead, deterministically in its own order). Empty clusters are re-seeded deterministically: in index
//      order, each takes the point farthest from its centroid (ties: smaller point index)
//      among points not already taken; that point moves to it.
//   3. The final centroids are assigned once more, so inertia.back() and labels describe
//      the returned centroids exactly.
// Inertia (kL2) = sum over points of the squared distance to their centroid. For
// kInnerProduct the objective is the sum of similarities (maximised) and `spherical`
// normalises centroids after every update (cosine k-means).
//
// An assigner that offers device seeding (Assigner::set_seeding_pool) computes step 1's
// distances from its prepared copy of x (prepare() is called before seeding).
// Requires x.rows >= k (Error(kInvalidArgument) otherwise, naming both numbers), k >= 1,
// finite x (the callers validate data). x may be any dtype; it is read as float.
// Thread-safety: independent calls may run concurrently with separate assigners.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "cluster/assigner.h"
#include "megatax/matrix.h"
#include "megatax/metric.h"

namespace megatax::cluster {

struct KMeansParams {
  std::int64_t k = 0;                          // number of centroids (>= 1)
  int max_iter = 20;                           // Lloyd updates at most
  double tol = 1e-4;                           // stop when |I_prev - I| / |I| < tol
  std::uint64_t seed = 0;                      // seeding randomness
  Metric metric = Metric::kL2;                 // kInnerProduct: spherical when `spherical`
  bool spherical = false;                      // normalise centroids after each update
  std::int64_t init_sample_per_centroid = 8;  // k-means++ subsample per centroid (>= 2048 in all)
  int threads = 0;                             // for seeding and updates; 0 = all
  // Called after each assignment with (iteration, inertia); may be empty.
  std::function<void(int, double)> on_iteration;
  // Assign once more after the last update (step 3 below). Off: saves one assignment when
  // the caller re-assigns anyway (the taxonomy's pass) -- labels, counts and inertia.back()
  // then describe the centroids before the last update.
  bool final_assignment = true;
};

struct KMeansResult {
  std::vector<float> centroids;      // k x dim, row-major
  std::vector<std::int64_t> labels;  // x.rows: final assignment
  std::vector<std::int64_t> counts;  // k: points per centroid in the final assignment
  std::vector<double> inertia;       // inertia[i]: after i updates (0 = seeding); last = final
  int iterations = 0;                // Lloyd updates done
  bool converged = false;            // stopped by tol rather than max_iter
  // Wall time of the steps (where the time goes): seeding, assignments (set_centroids +
  // assign, including any transfer to a device), updates (means + empty-cluster repair).
  double seed_seconds = 0, assign_seconds = 0, update_seconds = 0;
};

KMeansResult fit_kmeans(const MatrixView& x, const KMeansParams& params, Assigner& assigner);

// k-means++ seeding alone (step 1): k x dim centroids.
// `device`: an assigner already prepare()d with x whose set_seeding_pool() accepts the pool
// computes the distances (null or not offered: the CPU kernels, bit-identical on every
// thread count).
std::vector<float> kmeans_plus_plus(const MatrixView& x, std::int64_t k, std::uint64_t seed,
                                    std::int64_t sample_per_centroid, int threads,
                                    Assigner* device = nullptr);

}  // namespace megatax::cluster
