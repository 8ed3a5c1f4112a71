// IndexFlat's CUDA mirror in a build without CUDA: says so.
#include "index/index_flat_cuda.h"
#include "megatax/error.h"

namespace megatax::index {

std::unique_ptr<CudaFlatMirror> make_cuda_flat_mirror(const std::vector<int>& /*devices*/) {
  throw_error(ErrorCode::kUnimplemented,
              "search: backend cuda: this build has no CUDA backend (configure with "
              "-DMEGATAX_CUDA=ON on a machine with the CUDA toolkit)");
}

}  // namespace megatax::index
