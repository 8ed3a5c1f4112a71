// cluster/cuda_batch_kmeans.h -- BatchKMeansDevice on one CUDA device: the batch's points
// live on the device in the compute dtype, one after the other (problem p's rows from
// row_begin[p]); each step is one launch for every problem: k-means++ distances through
// cuda::row_distances_grouped (or the whole seeding at once through cuda::seed_grouped),
// assignments through cuda::assign_grouped (each problem's
// points against its own centroids), updates through cuda::accumulate (clusters numbered
// across the batch) and cuda::means: the centroids stay on the device (float32, and in the
// compute dtype for the assignments) and only labels, distances and counts come back each
// iteration. A problem's numbers do not depend on the other problems of its batch.
//
// Numerics: as CudaAssigner (the compute dtype; f16/bf16: tensor cores, f32 accumulation).
// Thread-safety: one thread at a time; its own stream.
#pragma once

#include <cstdint>
#include <future>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cluster/kmeans_batch.h"
#include "core/parallel.h"
#include "megatax/cuda.h"
#include "megatax/dtype.h"
#include "megatax/metric.h"

namespace megatax::cluster {

class CudaBatchKMeans final : public BatchKMeansDevice {
 public:
  CudaBatchKMeans(int device, Metric metric, DType compute_dtype);
  void prepare(std::span<const MatrixView> xs) override;
  // Rows in the compute dtype anywhere in this device's memory (gathered by address).
  bool takes_device_rows(DType dtype) const override { return dtype == compute_; }
  void prepare_from_device(std::span<const MatrixView> xs, std::span<const void* const> rows) override;
  // Rows over the bus: the gather keeps to kBusGatherSms SMs (cuda::gather_rows_at's max_sms).
  void set_rows_over_bus(bool over_bus) override { rows_over_bus_ = over_bus; }
  // On a stream of its own into a second points buffer, after what the lane queued before
  // (its kernels may still read that buffer).
  void prefetch_from_device(std::span<const MatrixView> xs, std::span<const void* const> rows) override;
  ~CudaBatchKMeans() override;
  unsigned char* points_buffer(int slot, std::size_t bytes) override;
  void set_seeding_pools(const std::vector<std::span<const std::int64_t>>& pools) override;
  void seeding_distances(const std::vector<std::vector<std::int64_t>>& cands,
                         std::vector<const float*>* out) override;
  // Seeding on the device (cuda::seed_grouped) unless turned off (then step by step through
  // seeding_distances; the same choices: for tests and comparisons).
  bool can_seed() const override { return seed_on_device_; }
  void seed(const std::vector<detail::SeedingPlan>& plans, std::vector<std::vector<std::int64_t>>* chosen) override;
  void set_seed_on_device(bool on) noexcept { seed_on_device_ = on; }
  // How seed()'s rounds get their distances: kAuto reads the pools' Gram matrices
  // (cuda::pool_gram) where that is cheaper than reading the pools each round, unless
  // MEGATAX_CUDA_SEED_GRAM=0; kGram whenever they fit; kPools never. The same choices.
  enum class SeedDistances { kAuto, kGram, kPools };
  void set_seed_distances(SeedDistances how) noexcept { seed_distances_ = how; }
  // What the last seed() used: "gram" (with the chunks) or "pools".
  const std::string& last_seed_path() const noexcept { return last_seed_path_; }
  void set_centroids(const std::vector<const float*>& centroids, const std::vector<std::int64_t>& k) override;
  // When every problem's points came in the compute dtype (the device's rows are then their
  // exact values): after seed(), the chosen rows gathered on the device.
  bool can_keep_seeds() const override { return points_exact_; }
  void seeds_as_centroids(const std::vector<std::int64_t>& k) override;
  void assign(const std::vector<std::int64_t*>& labels, const std::vector<float*>& distances) override;
  void update_centroids(const std::vector<std::int64_t*>& counts, bool spherical) override;
  // Lloyd's steps with their decisions on the device (cuda::lloyd_decide between the
  // assignment and the update): one wait an iteration, for the problems' inertia, decisions
  // and counts; labels come back once, at the end. Unless turned off (then assign() and
  // update_centroids() step by step: the same results; for tests and comparisons).
  bool can_step() const override { return steps_on_device_; }
  void set_steps_on_device(bool on) noexcept { steps_on_device_ = on; }
  void begin_steps(std::span<const KMeansParams> params) override;
  void step(const std::vector<std::uint8_t>& assigned, std::vector<double>* inertia,
            std::vector<std::uint8_t>* updated, const std::vector<std::int64_t*>& counts, bool spherical) override;
  void last_distances(std::size_t p, float* out) override;
  void last_labels(const std::vector<std::int64_t*>& out) override;
  void set_centroid(std::size_t p, std::int64_t c, const float* row) override;
  void set_centroid_to_point(std::size_t p, std::int64_t c, std::int64_t i) override;
  void get_centroids(const std::vector<float*>& out) override;
  // The read-back queued behind the batch's last step into one of two page-locked stages;
  // a thread of its own waits for it and copies the stage into `out` while the next batch
  // runs (the next batch's kernels queue after the copy: it reads the centroids before they
  // can change).
  void get_centroids_later(const std::vector<float*>& out) override;
  void centroids_landed() override;
  // Both page-locked stages grown to `floats` on a thread of their own (page-locking
  // ~100 MB takes tens of milliseconds), waited for by the next read-back.
  void expect_read_backs(std::size_t floats) override;
  // Lloyd's steps: the assignment's launch (work list made on the host), its wait for the
  // labels and distances, their scatter to the runs; the update's host labels, its wait for
  // the counts (seconds, reset by the call).
  std::string take_breakdown() override;

 private:
  // The grouped assignment of the problems with skip[p] == 0 into labels_dev_ / dist_dev_.
  void assign_on_device(std::vector<std::uint8_t> skip);
  // Lloyd's update from global_labels_dev_ (rows numbered across the batch, -1: summed
  // nowhere) and the keep flags after them: counts (counts_dev_) and the means, straight from
  // accumulate's pass (cuda::AccumulateArgs::means), or for spherical k-means through float64
  // sums (sums_dev_) and cuda::means (normalised).
  void update_on_device(bool spherical);
  // Where begin_steps / step keep their arrays (steps_dev_, steps_host_: the same layout):
  // the problems' rows and centroids, their LloydProblem states, the assigned flags, the
  // decisions' inertia and update flags.
  struct StepsLayout {
    std::size_t row_begin, centroid_begin, problems, assigned, inertia, updates, bytes;
  };
  StepsLayout steps_layout() const;
  // Numbers problem p's k[p] centroids across the batch (centroid_begin_ / centroid_end_);
  // returns their total.
  std::int64_t number_centroids(const std::vector<std::int64_t>& k);
  // prepare()'s bookkeeping for problems xs (row_begin_, dim_, x_dev_'s size...); returns
  // their total rows.
  std::int64_t lay_out(std::span<const MatrixView> xs);
  // A batch's rows gathered ahead (prefetch_from_device).
  struct Ahead {
    std::int64_t rows = 0, dim = 0;
    cuda::PinnedBuffer at;  // the rows' addresses as given (copied from here; compared)
  };
  // Queues a's gather into x_ahead_ on ahead_res_ (made on first use), after res_'s work.
  void start_ahead(Ahead a);
  // Waits for the gather under way (if any) and forgets it.
  void drop_ahead();

  cuda::Resources res_;
  // prefetch_from_device's stream, the gather under way into x_ahead_ (in_flight_), the one
  // to start after the next prepare (deferred_); before_ahead_: res_'s work the gather waits
  // for; ahead_done_: its end.
  std::optional<cuda::Resources> ahead_res_;
  std::optional<Ahead> in_flight_, deferred_;
  cuda::Event before_ahead_, ahead_done_;
  cuda::DeviceBuffer x_ahead_, row_at_ahead_;
  cuda::PinnedBuffer spare_at_;  // a consumed gather's address buffer, for the next
  Metric metric_;
  DType compute_;
  // The per-problem host loops of every step (scattering labels, numbering clusters across
  // the batch, copying centroids): run thousands of times a level, so on kept threads.
  WorkerPool host_;
  bool seed_on_device_ = true;
  bool steps_on_device_ = true;
  bool steps_begun_ = false;  // begin_steps since the last prepare
  bool rows_over_bus_ = false;
  // SMs a gather over the bus keeps to: enough warps with their loads out to keep the bus
  // busy (bench_pinned: 4 do on an H200), few enough that another lane's kernels keep the rest.
  static constexpr int kBusGatherSms = 8;
  struct {
    double assign_launch = 0, assign_wait = 0, assign_scatter = 0, update_host = 0, update_wait = 0;
    double readback_queue = 0, readback_wait = 0;  // get_centroids_later, centroids_landed
    double stage_growth = 0;                        // (of readback_queue) page-locking stages
    double stage_wait = 0;                          // (of readback_queue) expect_read_backs' work
    double step_queue = 0, step_wait = 0, step_host = 0;  // step(): queued, waited for, decisions copied out
    double labels_back = 0;                               // last_labels
    std::int64_t assigns = 0, updates = 0, readbacks = 0, stage_growths = 0, steps = 0, repairs_read = 0;
    // Rows of the problems still iterating (assigned, summed) against every row of each
    // assignment's batch: what skipping the converged ones saves.
    std::int64_t rows_assigned = 0, rows_summed = 0, rows_batched = 0;
    // prepare_from_device: batches whose rows were gathered ahead (and the wait for them), or
    // gathered at the call.
    std::int64_t gathers_ahead = 0, gathers_here = 0;
    double ahead_wait = 0;
    double ahead_queue = 0, here_queue = 0;  // prepare_from_device: the next gather queued; lay_out and this one's
  } time_;
  SeedDistances seed_distances_ = SeedDistances::kAuto;
  std::string last_seed_path_;
  std::int64_t dim_ = 0;
  std::vector<std::int64_t> row_begin_;      // problems + 1
  std::vector<std::int64_t> pool_begin_;     // problems + 1
  // The pools' rows numbered across the batch (then pool_begin_'s copy): in pool_host_,
  // page-locked, uploaded behind pools_uploaded_.
  std::int64_t* pool_rows_ = nullptr;
  cuda::PinnedBuffer pool_host_;
  cuda::Event pools_uploaded_;
  std::vector<std::int64_t> centroid_begin_, centroid_end_;
  bool have_global_labels_ = false;          // update_host_ holds the last assignment's labels
  std::vector<std::uint8_t> last_skipped_;   // the problems the last assignment skipped
  bool points_exact_ = false;                // prepare()'s problems all in the compute dtype
  std::vector<std::int64_t> seed_rows_;      // seed()'s chosen rows of x_dev_, problem after problem
  cuda::DeviceBuffer x_dev_, pool_dev_, pool_begin_dev_, cand_dev_, n_cand_dev_, out_begin_dev_,
      seed_out_dev_, problems_dev_, uniforms_dev_, chosen_dev_, seed_rows_dev_, row_at_dev_, c_dev_, c32_dev_, labels_dev_, dist_dev_, global_labels_dev_, sums_dev_, counts_dev_,
      gram_dev_;  // seed()'s pool Gram matrices
  cuda::PinnedBuffer staging_, small_, results_, seed_host_, points_host_[2];
  cuda::DeviceBuffer steps_dev_;
  cuda::PinnedBuffer steps_host_;
  // The last assignment's labels numbered across the batch (all rows), then the update's
  // keep flags (one per centroid): the update's upload.
  cuda::PinnedBuffer update_host_;
  cuda::PinnedBuffer centroid_stage_[2];  // get_centroids_later's read-backs, batch after batch
  int centroid_slot_ = 0;
  // The stages' growth under way (expect_read_backs) and the pending read-back's copy into
  // the caller's memory (last members: destroyed first, waiting before the stages go).
  std::future<void> stages_growing_;
  std::future<void> centroids_copy_;
};

}  // namespace megatax::cluster
