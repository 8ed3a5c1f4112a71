// The CUDA backend's factory in a build without CUDA: says so.
#include "megatax/error.h"
#include "taxonomy/compute_backend.h"

namespace megatax::taxonomy {

bool have_cuda_backend() noexcept { return false; }

std::unique_ptr<ComputeBackend> make_cuda_backend(DType, int) {
  throw_error(ErrorCode::kUnimplemented,
              "device 'cuda': this build has no CUDA backend (configure with -DMEGATAX_CUDA=ON "
              "on a machine with the CUDA toolkit)");
}

}  // namespace megatax::taxonomy
