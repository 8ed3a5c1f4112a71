#include "cluster/assigner.h"

#include "megatax/error.h"

namespace megatax::cluster {

void CpuAssigner::set_centroids(const float* centroids, std::int64_t k, std::int64_t dim) {
  centroids_ = std::make_unique<kernels::PackedMatrix>(dim, DType::kF32);
  centroids_->append(f32_view(centroids, k, dim));
}

void CpuAssigner::assign(const MatrixView& x, std::int64_t* labels, float* distances) {
  if (!centroids_)
    throw_error(ErrorCode::kFailedPrecondition, "assign: set_centroids was not called");
  kernels::nearest(x, *centroids_, metric_, labels, distances, options_);
}

}  // namespace megatax::cluster
