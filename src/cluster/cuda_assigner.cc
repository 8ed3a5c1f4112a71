#include "cluster/cuda_assigner.h"

#include <cstring>
#include <vector>

#include "megatax/error.h"

namespace megatax::cluster {
namespace {

// Grows a device buffer to at least `bytes` (contents are not kept).
void reserve(cuda::DeviceBuffer& b, std::size_t bytes) {
  if (b.size() < bytes) b = cuda::DeviceBuffer(bytes);
}

}  // namespace

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
  const std::size_t bytes = static_cast<std::size_t>(x.rows * x.dim) * dtype_size(compute_);
  std::vector<unsigned char> host(bytes);
  convert_rows(x, compute_, host.data());
  reserve(x_dev_, std::max<std::size_t>(bytes, 16));
  cuda::copy_to_device(res_, x_dev_.data(), host.data(), bytes);
  res_.synchronize();  // `host` dies here
  n_dev_ = x.rows;
}

void CudaAssigner::reset() noexcept {
  prepared_ = MatrixView();
  n_dev_ = k_ = dim_ = 0;
}

void CudaAssigner::prepare(const MatrixView& x) {
  upload_points(x);
  prepared_ = x;
}

void CudaAssigner::set_centroids(const float* centroids, std::int64_t k, std::int64_t dim) {
  const std::size_t bytes = static_cast<std::size_t>(k * dim) * dtype_size(compute_);
  std::vector<unsigned char> host(bytes);
  convert_rows(f32_view(centroids, k, dim), compute_, host.data());
  reserve(c_dev_, std::max<std::size_t>(bytes, 16));
  cuda::copy_to_device(res_, c_dev_.data(), host.data(), bytes);
  res_.synchronize();
  k_ = k;
  dim_ = dim;
}

void CudaAssigner::assign(const MatrixView& x, std::int64_t* labels, float* distances) {
  if (k_ == 0) throw_error(ErrorCode::kFailedPrecondition, "assign: set_centroids was not called");
  if (x.dim != dim_)
    throw_error(ErrorCode::kInvalidArgument, "assign: points have dim " + std::to_string(x.dim) +
                                                 ", centroids " + std::to_string(dim_));
  const bool same = prepared_.data == x.data && prepared_.rows == x.rows && prepared_.dim == x.dim &&
                    prepared_.stride == x.stride && prepared_.dtype == x.dtype;
  if (!same) {
    prepared_ = MatrixView();
    upload_points(x);
  }
  const std::int64_t n = x.rows;
  if (n == 0) return;
  reserve(labels_dev_, static_cast<std::size_t>(n) * sizeof(std::int64_t));
  reserve(dist_dev_, static_cast<std::size_t>(n) * sizeof(float));
  cuda::AssignArgs a;
  a.metric = metric_;
  a.x = MatrixView(x_dev_.data(), n, dim_, compute_, dim_);
  a.centroids = MatrixView(c_dev_.data(), k_, dim_, compute_, dim_);
  a.label_type = cuda::IndexType::kI64;
  a.labels = labels_dev_.data();
  a.distances = dist_dev_.as<float>();
  cuda::assign(res_, a);
  cuda::copy_to_host(res_, labels, labels_dev_.data(), static_cast<std::size_t>(n) * sizeof(std::int64_t));
  cuda::copy_to_host(res_, distances, dist_dev_.data(), static_cast<std::size_t>(n) * sizeof(float));
}

}  // namespace megatax::cluster
