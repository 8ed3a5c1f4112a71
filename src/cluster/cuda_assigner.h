// cluster/cuda_assigner.h -- k-means assignment on one CUDA device (the fused assign kernel of
// megatax/cuda.h), behind the Assigner seam.
//
// The points announced by prepare() are converted once to the compute dtype (copied as they
// are when already in it) and kept on the device for the whole k-means problem: k-means++
// distances (set_seeding_pool / seeding_distances), the assignments and the per-cluster
// float64 sums (cluster_sums: deterministic, another summation order than the CPU's) run
// there; the centroids are uploaded at each set_centroids() (small). Labels and distances
// come back to the host (assign() waits for the device).
//
// Numerics: those of cuda::assign in the compute dtype (f32: 3xTF32, f16/bf16: tensor cores
// with f32 accumulation, inputs rounded to 16 bits).
// Thread-safety: one thread at a time. Each assigner has its own stream (Resources), so
// several assigners may run concurrently on one device from several threads.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "cluster/assigner.h"
#include "megatax/cuda.h"

namespace megatax::cluster {

class CudaAssigner final : public Assigner {
 public:
  CudaAssigner(int device, Metric metric, DType compute_dtype);
  void prepare(const MatrixView& x) override;
  void set_centroids(const float* centroids, std::int64_t k, std::int64_t dim) override;
  void assign(const MatrixView& x, std::int64_t* labels, float* distances) override;
  // k-means++ distances and per-label sums on the device (the prepared copy of the points):
  // only the pool, the candidates' indices and the results cross the bus.
  bool set_seeding_pool(std::span<const std::int64_t> rows) override;
  void seeding_distances(std::span<const std::int64_t> cand, float* out) override;
  bool cluster_sums(std::int64_t k, double* sums, std::int64_t* counts) override;

  Metric metric() const noexcept { return metric_; }
  // Forgets the points and centroids (keeps the device buffers and stream): the assigner can
  // serve another k-means problem, as if new, without allocating (allocations and frees
  // synchronise the whole device, stalling the other problems' streams).
  void reset() noexcept;

 private:
  void upload_points(const MatrixView& x);

  cuda::Resources res_;
  Metric metric_;
  DType compute_;
  cuda::DeviceBuffer x_dev_, c_dev_, labels_dev_, dist_dev_;
  cuda::DeviceBuffer pool_dev_, cand_dev_, seed_out_dev_, sums_dev_, counts_dev_;
  MatrixView prepared_;  // the host view whose copy is in x_dev_ (data null: none)
  std::int64_t n_dev_ = 0, k_ = 0, dim_ = 0;
  std::vector<std::int64_t> pool_;   // the seeding pool (row numbers), also in pool_dev_
  bool labels_of_prepared_ = false;  // labels_dev_ holds the last assign() of the prepared points
};

// Converts one row of d values from `from` to `to` (tmp: d floats of scratch).
void convert_row(DType from, const void* src, std::size_t d, DType to, void* dst, float* tmp) noexcept;
// Converts the rows of x (any dtype) to `to`, densely packed (stride = dim), into out.
void convert_rows(const MatrixView& x, DType to, void* out);

}  // namespace megatax::cluster
