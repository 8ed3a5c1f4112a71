#include "taxonomy/compute_backend.h"

#include "megatax/error.h"

namespace megatax::taxonomy {
namespace {

class CpuBackend final : public ComputeBackend {
 public:
  std::string describe() const override { return "cpu"; }
  bool concurrent_training() const override { return true; }
  std::unique_ptr<cluster::Assigner> make_assigner(Metric metric,
                                                   const kernels::KnnOptions& options) override {
    return std::make_unique<cluster::CpuAssigner>(metric, options);
  }
  void prepare_level(const Tree&, int) override {}
  void descend(const Tree& tree, int level, const MatrixView& rows, const std::int32_t* prev,
               std::int32_t* node, std::int32_t* child, float* dist,
               const kernels::KnnOptions& options) override {
    tree.descend(level, rows, prev, node, child, dist, options);
  }
};

}  // namespace

std::unique_ptr<ComputeBackend> make_compute_backend(const std::string& device,
                                                     const std::string& gpu_dtype, int gpu,
                                                     DType data_dtype) {
  if (device == "cpu") return std::make_unique<CpuBackend>();
  if (device != "cuda")
    throw_error(ErrorCode::kInvalidArgument, "device must be cpu or cuda, got '" + device + "'");
  DType compute = DType::kF32;
  if (gpu_dtype == "auto") {
    if (data_dtype == DType::kF16 || data_dtype == DType::kBF16) compute = data_dtype;
  } else if (gpu_dtype == "f16") {
    compute = DType::kF16;
  } else if (gpu_dtype == "bf16") {
    compute = DType::kBF16;
  } else if (gpu_dtype != "f32") {
    throw_error(ErrorCode::kInvalidArgument,
                "gpu_dtype must be auto, f32, f16 or bf16, got '" + gpu_dtype + "'");
  }
  return make_cuda_backend(compute, gpu);
}

}  // namespace megatax::taxonomy
