// cluster/assigner.h -- how k-means assigns points to centroids (STYLE: k-means takes an
// assigner; it never knows which backend computes the distances).
//
// Thread-safety: an Assigner is used by one thread at a time (it may use threads inside).
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "kernels/cpu/knn.h"
#include "megatax/matrix.h"
#include "megatax/metric.h"

namespace megatax::cluster {

class Assigner {
 public:
  virtual ~Assigner() = default;
  // Announces that assign() will be called with this same x (unchanged) until the next
  // prepare(): an assigner may keep a copy of it (the CUDA one keeps it on the device).
  virtual void prepare(const MatrixView& /*x*/) {}
  // Replaces the centroids: k x dim floats, row-major (copied).
  virtual void set_centroids(const float* centroids, std::int64_t k, std::int64_t dim) = 0;
  // For each row i of x: labels[i] = index of the nearest centroid (ties to the smaller
  // index), distances[i] = its distance (kL2: squared L2; kInnerProduct: similarity).
  // Requires set_centroids() first; x.dim == dim.
  virtual void assign(const MatrixView& x, std::int64_t* labels, float* distances) = 0;

  // ---- optional device work of k-means (fit_kmeans uses it when offered, else the CPU) ----
  // k-means++ on the prepared points: set_seeding_pool announces a pool of their rows
  // (ascending row numbers, copied); seeding_distances then writes out[t * pool + i] =
  // squared L2 distance between pool rows cand[t] and i (cand: indices into the pool).
  // set_seeding_pool returns false when not offered.
  virtual bool set_seeding_pool(std::span<const std::int64_t> /*rows*/) { return false; }
  virtual void seeding_distances(std::span<const std::int64_t> /*cand*/, float* /*out*/) {}
  // Per-label float64 sums (k x dim, overwritten) and counts (k) of the prepared points
  // under the labels of the last assign() of them. Returns false when not offered.
  virtual bool cluster_sums(std::int64_t /*k*/, double* /*sums*/, std::int64_t* /*counts*/) {
    return false;
  }
};

// The CPU assigner: the fused distance + argmin kernels of kernels/cpu.
class CpuAssigner final : public Assigner {
 public:
  CpuAssigner(Metric metric, kernels::KnnOptions options) : metric_(metric), options_(options) {}
  void set_centroids(const float* centroids, std::int64_t k, std::int64_t dim) override;
  void assign(const MatrixView& x, std::int64_t* labels, float* distances) override;

 private:
  Metric metric_;
  kernels::KnnOptions options_;
  std::unique_ptr<kernels::PackedMatrix> centroids_;
};

}  // namespace megatax::cluster
