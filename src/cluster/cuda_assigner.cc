#include "cluster/cuda_assigner.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "megatax/error.h"

namespace megatax::cluster {

void convert_row(DType from, const void* src, std::size_t d, DType to, void* dst, float* tmp) noexcept {
  if (from == to) {
    std::memcpy(dst, src, d * dtype_size(to));
  } else if (to == DType::kF32) {
    convert_to_f32(from, src, d, static_cast<float*>(dst));
  } else {
    convert_to_f32(from, src, d, tmp);
    convert_from_f32(tmp, d, to, dst);
  }
}

void convert_rows(const MatrixView& x, DType to, void* out) {
  const auto d = static_cast<std::size_t>(x.dim);
  const std::size_t out_row = d * dtype_size(to);
  std::vector<float> tmp(d);
  for (std::int64_t i = 0; i < x.rows; ++i)
    convert_row(x.dtype, x.row(i), d, to, static_cast<char*>(out) + static_cast<std::size_t>(i) * out_row,
                tmp.data());
}

CudaAssigner::CudaAssigner(int device, Metric metric, DType compute_dtype)
    : res_(device), metric_(metric), compute_(compute_dtype) {}

void CudaAssigner::upload_points(const MatrixView& x) {
  res_.activate();  // this device on the calling thread (allocations included)
  const std::size_t bytes = static_cast<std::size_t>(x.rows * x.dim) * dtype_size(compute_);
  x_dev_.reserve(std::max<std::size_t>(bytes, 16));
  if (x.dtype == compute_ && x.stride == x.dim) {
    cuda::copy_to_device(res_, x_dev_.data(), x.data, bytes);  // as they are: no host copy
  } else {
    std::vector<unsigned char> host(bytes);
    convert_rows(x, compute_, host.data());
    cuda::copy_to_device(res_, x_dev_.data(), host.data(), bytes);
    res_.synchronize();  // `host` dies here
  }
  res_.synchronize();
  n_dev_ = x.rows;
  labels_of_prepared_ = false;
}

void CudaAssigner::reset() noexcept {
  prepared_ = MatrixView();
  n_dev_ = k_ = dim_ = 0;
  pool_.clear();
  labels_of_prepared_ = false;
}

void CudaAssigner::prepare(const MatrixView& x) {
  res_.activate();  // this device on the calling thread (allocations included)
  upload_points(x);
  prepared_ = x;
  pool_.clear();
}

bool CudaAssigner::set_seeding_pool(std::span<const std::int64_t> rows) {
  res_.activate();  // this device on the calling thread (allocations included)
  if (prepared_.data == nullptr) return false;  // nothing on the device to seed from
  for (std::int64_t r : rows)
    if (r < 0 || r >= n_dev_)
      throw_error(ErrorCode::kInvalidArgument, "seeding pool: row " + std::to_string(r) +
                                                   " is not one of the " + std::to_string(n_dev_) +
                                                   " prepared points");
  pool_.assign(rows.begin(), rows.end());
  pool_dev_.reserve(std::max<std::size_t>(pool_.size() * sizeof(std::int64_t), 16));
  cuda::copy_to_device(res_, pool_dev_.data(), pool_.data(), pool_.size() * sizeof(std::int64_t));
  return true;
}

void CudaAssigner::seeding_distances(std::span<const std::int64_t> cand, float* out) {
  res_.activate();  // this device on the calling thread (allocations included)
  const auto m = static_cast<std::int64_t>(pool_.size());
  if (m == 0) throw_error(ErrorCode::kFailedPrecondition, "seeding_distances: no seeding pool");
  const MatrixView x(x_dev_.data(), n_dev_, prepared_.dim, compute_, prepared_.dim);
  for (std::size_t t0 = 0; t0 < cand.size(); t0 += cuda::kMaxRowDistanceCandidates) {
    const auto nc = static_cast<std::int64_t>(
        std::min<std::size_t>(cuda::kMaxRowDistanceCandidates, cand.size() - t0));
    std::int64_t rows[cuda::kMaxRowDistanceCandidates];
    for (std::int64_t t = 0; t < nc; ++t) {
      const std::int64_t c = cand[t0 + static_cast<std::size_t>(t)];
      if (c < 0 || c >= m)
        throw_error(ErrorCode::kInvalidArgument, "seeding_distances: candidate " + std::to_string(c) +
                                                     " is outside the pool of " + std::to_string(m));
      rows[t] = pool_[static_cast<std::size_t>(c)];
    }
    cand_dev_.reserve(sizeof(rows));
    seed_out_dev_.reserve(static_cast<std::size_t>(nc * m) * sizeof(float));
    cuda::copy_to_device(res_, cand_dev_.data(), rows, static_cast<std::size_t>(nc) * sizeof(std::int64_t));
    cuda::RowDistanceArgs a;
    a.x = x;
    a.a = cand_dev_.as<std::int64_t>();
    a.n_a = nc;
    a.b = pool_dev_.as<std::int64_t>();
    a.n_b = m;
    a.out = seed_out_dev_.as<float>();
    cuda::row_distances(res_, a);
    cuda::copy_to_host(res_, out + static_cast<std::int64_t>(t0) * m, seed_out_dev_.data(),
                       static_cast<std::size_t>(nc * m) * sizeof(float));
  }
}

bool CudaAssigner::cluster_sums(std::int64_t k, double* sums, std::int64_t* counts) {
  res_.activate();  // this device on the calling thread (allocations included)
  if (!labels_of_prepared_) return false;
  const std::int64_t d = prepared_.dim;
  const std::size_t sum_bytes = static_cast<std::size_t>(k * d) * sizeof(double);
  sums_dev_.reserve(std::max<std::size_t>(sum_bytes, 16));
  counts_dev_.reserve(static_cast<std::size_t>(k) * sizeof(std::int64_t));
  cuda::fill_zero(res_, sums_dev_.data(), sum_bytes);
  cuda::fill_zero(res_, counts_dev_.data(), static_cast<std::size_t>(k) * sizeof(std::int64_t));
  cuda::AccumulateArgs a;
  a.x = MatrixView(x_dev_.data(), n_dev_, d, compute_, d);
  a.label_type = cuda::IndexType::kI64;
  a.labels = labels_dev_.data();
  a.k = k;
  a.sum_type = cuda::SumType::kF64;
  a.sums = sums_dev_.data();
  a.counts = counts_dev_.as<std::int64_t>();
  a.check_labels = false;  // the assign's labels: each in [0, k)
  cuda::accumulate(res_, a);
  cuda::copy_to_host(res_, sums, sums_dev_.data(), sum_bytes);
  cuda::copy_to_host(res_, counts, counts_dev_.data(), static_cast<std::size_t>(k) * sizeof(std::int64_t));
  return true;
}

void CudaAssigner::set_centroids(const float* centroids, std::int64_t k, std::int64_t dim) {
  res_.activate();  // this device on the calling thread (allocations included)
  const std::size_t bytes = static_cast<std::size_t>(k * dim) * dtype_size(compute_);
  std::vector<unsigned char> host(bytes);
  convert_rows(f32_view(centroids, k, dim), compute_, host.data());
  c_dev_.reserve(std::max<std::size_t>(bytes, 16));
  cuda::copy_to_device(res_, c_dev_.data(), host.data(), bytes);
  res_.synchronize();
  k_ = k;
  dim_ = dim;
}

void CudaAssigner::assign(const MatrixView& x, std::int64_t* labels, float* distances) {
  res_.activate();  // this device on the calling thread (allocations included)
  if (k_ == 0) throw_error(ErrorCode::kFailedPrecondition, "assign: set_centroids was not called");
  if (x.dim != dim_)
    throw_error(ErrorCode::kInvalidArgument, "assign: points have dim " + std::to_string(x.dim) +
                                                 ", centroids " + std::to_string(dim_));
  const bool same = prepared_.data == x.data && prepared_.rows == x.rows && prepared_.dim == x.dim &&
                    prepared_.stride == x.stride && prepared_.dtype == x.dtype;
  if (!same) {
    prepared_ = MatrixView();
    pool_.clear();
    upload_points(x);
  }
  const std::int64_t n = x.rows;
  if (n == 0) return;
  labels_dev_.reserve(static_cast<std::size_t>(n) * sizeof(std::int64_t));
  dist_dev_.reserve(static_cast<std::size_t>(n) * sizeof(float));
  cuda::AssignArgs a;
  a.metric = metric_;
  a.x = MatrixView(x_dev_.data(), n, dim_, compute_, dim_);
  a.centroids = MatrixView(c_dev_.data(), k_, dim_, compute_, dim_);
  a.label_type = cuda::IndexType::kI64;
  a.labels = labels_dev_.data();
  a.distances = dist_dev_.as<float>();
  cuda::assign(res_, a);
  labels_of_prepared_ = same;
  cuda::copy_to_host(res_, labels, labels_dev_.data(), static_cast<std::size_t>(n) * sizeof(std::int64_t));
  cuda::copy_to_host(res_, distances, dist_dev_.data(), static_cast<std::size_t>(n) * sizeof(float));
}

}  // namespace megatax::cluster
