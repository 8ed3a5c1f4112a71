// cluster/kmeans_batch.h -- many small k-means problems at once on one device: every step
// (a k-means++ step, an assignment, the per-cluster sums) is one device call for all the
// problems, instead of one small call per problem (a node level of a taxonomy has 100s to
// 10,000s of problems of a few thousand points each; per-call latency then dominates).
//
// fit_kmeans_batch(xs, params, device) returns what fit_kmeans would for each problem given
// the same distances, assignments and sums (kmeans.h's algorithm, the same steps in
// kmeans_steps.h): each problem's result depends on its own points and parameters only, not
// on which other problems share the batch. All problems share dim and metric.
//
// Thread-safety: one call at a time per device object.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cluster/kmeans.h"
#include "cluster/kmeans_steps.h"
#include "megatax/dtype.h"
#include "megatax/matrix.h"

namespace megatax::cluster {

// What a device does for a batch of problems p = 0..P-1 (P fixed by prepare()).
class BatchKMeansDevice {
 public:
  virtual ~BatchKMeansDevice() = default;
  // Keeps a copy of every problem's points (xs[p]: any dtype, one dim) until the next prepare().
  virtual void prepare(std::span<const MatrixView> xs) = 0;
  // Optional: host memory of at least `bytes` that prepare() copies from fastest (a GPU's
  // page-locked memory: problems laid out one after the other in it, dense, in the compute
  // dtype, go to the device in one copy). Two slots (0, 1), so that one batch's points can
  // be gathered while the other trains; valid until the next call for the same slot.
  // Null: any memory serves as well.
  virtual unsigned char* points_buffer(int slot, std::size_t bytes) {
    (void)slot, (void)bytes;
    return nullptr;
  }
  // Optional: prepare() from rows the device already holds (they cross no bus): rows[i] =
  // the device address of the batch's row i (problem 0's xs[0].rows rows, then problem 1's,
  // ...) holding its values in `dtype`, xs' dtype; xs' data is not read (may be null).
  // takes_device_rows(dtype): whether the device offers it for rows of that dtype.
  virtual bool takes_device_rows(DType /*dtype*/) const { return false; }
  virtual void prepare_from_device(std::span<const MatrixView> xs, std::span<const void* const> rows);
  // Optional: whether prepare_from_device's rows may lie in host memory the device reads over
  // the bus (page-locked, mapped): its gather then keeps to a few of the device's cores, the
  // bus being the limit, and leaves the rest to whatever runs beside it (another lane's
  // batch). Until the next call; default false.
  virtual void set_rows_over_bus(bool over_bus) { (void)over_bus; }
  // Optional: the rows of the prepare_from_device after the next one (its xs and rows,
  // copied): the device starts gathering them once the next one has queued its own, so that
  // they are there while the next batch trains. One at a time (a second call before the next
  // prepare_from_device is ignored). A prepare_from_device given other rows, or prepare(),
  // drops what was gathered ahead.
  virtual void prefetch_from_device(std::span<const MatrixView> xs, std::span<const void* const> rows) {
    (void)xs, (void)rows;
  }
  // Seeding pools: pools[p] = ascending row numbers of xs[p] (borrowed for the call).
  virtual void set_seeding_pools(const std::vector<std::span<const std::int64_t>>& pools) = 0;
  // For every p with cands[p] non-empty (indices into pools[p], at most 16):
  // (*out)[p][t * pools[p].size() + i] = squared L2 between pool points cands[p][t] and i,
  // in host memory the device owns, valid until its next call.
  virtual void seeding_distances(const std::vector<std::vector<std::int64_t>>& cands,
                                 std::vector<const float*>* out) = 0;
  // Optional: every problem's whole greedy k-means++ on the device, no host round trip per
  // step (cuda::seed_grouped's contract: SeedingRun's choices given the same distances).
  // can_seed(): whether seed() is there (else the driver steps on the host through
  // seeding_distances). plans[p] = problem p's SeedingRun::plan(); (*chosen)[p] = the
  // plans[p].k pool indices chosen. Pools: set_seeding_pools.
  virtual bool can_seed() const { return false; }
  virtual void seed(const std::vector<detail::SeedingPlan>& plans, std::vector<std::vector<std::int64_t>>* chosen);
  // Centroids of every problem (centroids[p] = k[p] x dim floats), kept on the device.
  virtual void set_centroids(const std::vector<const float*>& centroids,
                             const std::vector<std::int64_t>& k) = 0;
  // Optional: whether seeds_as_centroids() can follow the last seed() (the device has the
  // chosen rows exactly as their float32 values would be: the points it keeps are the
  // problems' own values).
  virtual bool can_keep_seeds() const { return false; }
  // After seed(): the chosen pool points become the problems' centroids on the device,
  // exactly what set_centroids would be given (SeedingRun::set_chosen's rows), without the
  // host copies; k[p] = plans[p].k.
  virtual void seeds_as_centroids(const std::vector<std::int64_t>& k);
  // Assigns each problem's points to its own centroids; for every p with labels[p] non-null,
  // labels[p][i] / distances[p][i] (kmeans.h's Assigner contract, labels in [0, k[p])).
  // Problems with null labels may be skipped (those that no longer iterate).
  virtual void assign(const std::vector<std::int64_t*>& labels, const std::vector<float*>& distances) = 0;
  // Lloyd's update on the device for every p with counts[p] non-null (each assigned by the
  // last assign(): labels[p] non-null there): each cluster with
  // points under the last assignment moves to their mean (detail::cluster_means' arithmetic
  // on float64 sums; spherical: normalised); counts[p] (k[p]) = points per cluster. Other
  // problems' centroids stay as they are.
  virtual void update_centroids(const std::vector<std::int64_t*>& counts, bool spherical) = 0;
  // Optional: Lloyd's iterations with their decisions made on the device, so that no
  // labels or distances cross to the host each iteration. can_step(): whether offered.
  // begin_steps(params), after the centroids are set (set_centroids or seeds_as_centroids):
  // every problem's max_iter and tol, no update made yet. step(): assigns every problem with
  // assigned[p] != 0, then for each of them (LloydRun::assigned()'s rule, on the device)
  // (*inertia)[p] = the float64 sum of its distances in point order and (*updated)[p] = 1
  // when it updates now: unless its relative change of inertia against its last
  // assignment's is below tol after an update, or it has made max_iter updates; the updated
  // problems' centroids move to their means (update_centroids' arithmetic) and counts[p]
  // (non-null for every assigned p; k[p]) gets their clusters' sizes. The other problems are
  // neither assigned nor updated. last_distances(p, out) / last_labels(out): problem p's
  // distances (x.rows floats) / every problem's labels (out[p]: x.rows) from the last step
  // that assigned it.
  virtual bool can_step() const { return false; }
  virtual void begin_steps(std::span<const KMeansParams> params);
  virtual void step(const std::vector<std::uint8_t>& assigned, std::vector<double>* inertia,
                    std::vector<std::uint8_t>* updated, const std::vector<std::int64_t*>& counts, bool spherical);
  virtual void last_distances(std::size_t p, float* out);
  virtual void last_labels(const std::vector<std::int64_t*>& out);
  // Overwrites centroid c of problem p (the empty-cluster repair): dim floats.
  virtual void set_centroid(std::size_t p, std::int64_t c, const float* row) = 0;
  // Optional (required with prepare_from_device): centroid c of problem p = point i of
  // problem p, as its float32 values (the empty-cluster repair when the host has no rows).
  virtual void set_centroid_to_point(std::size_t p, std::int64_t c, std::int64_t i);
  // Reads every problem's centroids back: out[p] = k[p] x dim floats.
  virtual void get_centroids(const std::vector<float*>& out) = 0;
  // Optional: get_centroids that may return before the centroids are in `out` (the device
  // may take its next batch meanwhile: the read-back overlaps it). They are there once
  // centroids_landed() returns, which the caller must call before it reads them or lets
  // their memory go (errors of the read-back are thrown there). Default: get_centroids.
  virtual void get_centroids_later(const std::vector<float*>& out) { get_centroids(out); }
  virtual void centroids_landed() {}
  // Optional: the most floats one batch's get_centroids_later will read back from now on
  // (a level's largest batch): the device may make its buffers for them in the background.
  virtual void expect_read_backs(std::size_t floats) { (void)floats; }
  // Optional: where the device's steps spent their time since the last call (a log line's
  // words; empty when not kept).
  virtual std::string take_breakdown() { return {}; }
};

// Where a batch's time went (wall seconds).
struct BatchKMeansTimes {
  // assign / update: the device's assignments / updates and the host's repairs; with the
  // steps on the device (BatchKMeansDevice::can_step), assign = the device's steps (both),
  // update = the host's checks of their decisions and its repairs.
  double prepare = 0, seeding = 0, assign = 0, update = 0;
  double collect = 0;         // the centroids read back and the results put together
  double seeding_device = 0;  // of `seeding`: in the device's seeding calls (seed or seeding_distances)
  double seeding_runs = 0;    // of `seeding`: the runs, their pools and plans set up on the host
  double seeding_pools = 0;   // of `seeding_runs`: the pools handed to the device (set_seeding_pools)
  double seeding_chosen = 0;  // of `seeding`: the chosen rows copied out, the Lloyd runs set up
  std::int64_t seeding_steps = 0;
};

// Requires xs.size() == params.size(), every problem valid for fit_kmeans (Error naming the
// problem otherwise), one dim, metric and spherical flag. `threads`: host threads for the per-problem steps.
// `out`: empty, or one destination per problem (params[p].k x dim floats, caller memory):
// problem p's centroids are there on return (not before: a device that keeps the seeds
// never copies them there), its result's `centroids` stay empty, and no per-problem
// centroid buffers are allocated (a wide level's batches hold gigabytes of them: the
// caller's one array instead of thousands of fresh buffers).
// `device_rows`: empty, or the points already on the device (BatchKMeansDevice::
// prepare_from_device's `rows`: one address per row, problem after problem); xs' data is then
// never read (null allowed) and the device must take them (takes_device_rows), seed on its
// own and keep the seeds (can_seed, can_keep_seeds), with `out` given and the metric not
// spherical (Error(kInvalidArgument) otherwise): the host never needs a row.
// `centroids_later` (with `out` given): the centroids are read back through
// get_centroids_later: they are in `out` only once the caller's device.centroids_landed()
// returns (the read-back then overlaps what the caller does next, e.g. the next batch).
std::vector<KMeansResult> fit_kmeans_batch(std::span<const MatrixView> xs,
                                           std::span<const KMeansParams> params,
                                           BatchKMeansDevice& device, int threads,
                                           BatchKMeansTimes* times = nullptr,
                                           std::span<float* const> out = {},
                                           std::span<const void* const> device_rows = {},
                                           bool centroids_later = false);

}  // namespace megatax::cluster
