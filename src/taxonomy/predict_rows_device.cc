// TaxonomyEngine::predict(x, options): in-memory rows descended on a device (predict_device
// "cuda"), the same way predict-to-files descends a shard's batches on a GPU (fit.cc), so the
// same rows give the same paths and distances bit for bit; "cpu" is predict(x, beam).
//
// Per batch of config.batch_rows rows: the rows are checked (finite, and representable in the
// GPU's dtype), written on the engine's threads into the backend's page-locked buffer in the
// dtype it multiplies in (as they are, or through f32 rounded to nearest: BatchReader's
// convert_into values; a cosine model's rows normalised as f32 first unless the device
// normalises them itself), each thread's range queued to the device as soon as it is written;
// level 1 is descended from there, the deeper levels from the rows kept on the device, which
// are dropped after the batch. The backend (every level's centroids on the device, the
// page-locked buffer) stays with the engine between calls of the same gpu and dtype.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "megatax/error.h"
#include "taxonomy/compute_backend.h"
#include "taxonomy/engine_impl.h"

namespace megatax {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Rows [first, first + count) of `x` (global row numbers `row0 + first ...` in errors) as
// `to` into `dst` (packed rows): as they are when x.dtype == to and not normalised, else
// through f32 (normalised when `normalise`, then rounded to `to`). Throws Error(kInvalidArgument)
// for a non-finite value and Error(kDataLoss) for a finite value too large for f16 (bf16),
// naming the row and column.
void write_rows(const MatrixView& x, std::int64_t row0, std::int64_t first, std::int64_t count,
                DType to, bool normalise, unsigned char* dst, std::vector<float>& f32) {
  const std::int64_t d = x.dim;
  const std::size_t row_bytes = static_cast<std::size_t>(d) * dtype_size(to);
  const auto values = static_cast<std::size_t>(d);
  auto bad_value = [&](std::int64_t r, std::size_t j) {
    throw_error(ErrorCode::kInvalidArgument, "predict: row " + std::to_string(row0 + r) +
                                                 " has a non-finite value in column " +
                                                 std::to_string(j));
  };
  f32.resize(values);
  for (std::int64_t r = first; r < first + count; ++r) {
    unsigned char* out = dst + static_cast<std::size_t>(r) * row_bytes;
    if (x.dtype == to && !normalise) {  // as they are
      std::memcpy(out, x.row(r), row_bytes);
      if (const std::size_t j = first_non_finite(to, out, values); j < values) bad_value(r, j);
      continue;
    }
    float* row = f32.data();
    convert_to_f32(x.dtype, x.row(r), values, row);
    if (const std::size_t j = first_non_finite(DType::kF32, row, values); j < values) bad_value(r, j);
    if (normalise) taxonomy::normalise_rows(row, 1, d, 1);
    convert_from_f32(row, values, to, out);
    if (const std::size_t j = first_non_finite(to, out, values); j < values) {
      char value[32];
      std::snprintf(value, sizeof value, "%g", static_cast<double>(row[j]));
      throw_error(ErrorCode::kDataLoss, "predict: row " + std::to_string(row0 + r) + " column " +
                                            std::to_string(j) + ": value " + value +
                                            " is too large for " + dtype_name(to) +
                                            " (the GPU's dtype; gpu_dtype f32 keeps it)");
    }
  }
}

}  // namespace

taxonomy::ComputeBackend& TaxonomyEngine::Impl::gpu_predictor(const FitOptions& options,
                                                              DType data_dtype) const {
  const std::string dtype = predict_gpu_dtype(options);
  const std::string key =
      std::to_string(options.predict_gpu) + "/" + dtype + "/" + dtype_name(data_dtype);
  if (gpu_backend == nullptr || gpu_backend_key != key) {
    gpu_backend.reset();
    auto backend = taxonomy::make_compute_backend("cuda", dtype, options.predict_gpu, data_dtype);
    backend->keep_prepared_levels();
    for (int l = 1; l <= tree.levels(); ++l) backend->prepare_level(tree, l);
    gpu_backend = std::move(backend);
    gpu_backend_key = key;
  }
  return *gpu_backend;
}

bool TaxonomyEngine::Impl::predict_on_gpu(const FitOptions& options) {
  const bool on_gpu = options.predict_device == "cuda";
  if (!on_gpu && options.predict_device != "cpu")
    throw_error(ErrorCode::kInvalidArgument,
                "predict: device must be cpu or cuda, got '" + options.predict_device + "'");
  if (on_gpu && options.beam != 1)
    throw_error(ErrorCode::kInvalidArgument, "predict: beam search (beam " +
                                                 std::to_string(options.beam) +
                                                 ") runs on the cpu; device cuda "
                                                 "descends greedily");
  return on_gpu;
}

Prediction TaxonomyEngine::predict(const MatrixView& x, const FitOptions& options) const {
  if (!Impl::predict_on_gpu(options)) return predict(x, options.beam);
  const Impl& s = *impl_;
  if (!s.fitted) throw_error(ErrorCode::kFailedPrecondition, "predict: the taxonomy is not fitted");
  validate_view(x, "vectors");
  const std::int64_t d = s.tree.dim();
  if (x.dim != d)
    throw_error(ErrorCode::kInvalidArgument, "predict: vectors have dim " + std::to_string(x.dim) +
                                                 ", taxonomy has dim " + std::to_string(d));
  const int L = s.tree.levels();
  Prediction p;
  p.n_levels = L;
  p.paths.assign(static_cast<std::size_t>(x.rows * L), -1);
  p.distances.assign(static_cast<std::size_t>(x.rows), 0.f);
  if (x.rows == 0) return p;

  std::lock_guard<std::mutex> lock(s.gpu_mutex);
  const auto t_start = Clock::now();
  double write_s = 0, descend_s = 0;
  try {
    taxonomy::ComputeBackend& gpu = s.gpu_predictor(options, x.dtype);
    const double prepare_s = since(t_start);
    // As route_rows (fit.cc) decides for a shard of x's dtype.
    const DType into = gpu.compute_dtype();
    const bool as_stored = gpu.takes_stored_rows(x.dtype);
    const DType to = as_stored ? x.dtype : into;
    const bool device_normalises =
        s.normalise() && gpu.normalises_rows() && (as_stored || into == DType::kF32);
    const bool host_normalises = s.normalise() && !device_normalises;
    const std::int64_t batch = std::max<std::int64_t>(1, s.config.batch_rows);
    const std::size_t row_bytes = static_cast<std::size_t>(d) * dtype_size(to);
    const int threads = resolve_threads(s.config.threads, x.rows);
    std::vector<std::vector<float>> scratch(static_cast<std::size_t>(threads));
    std::vector<std::int32_t> prev, node, child;
    for (std::int64_t b0 = 0; b0 < x.rows; b0 += batch) {
      const std::int64_t n = std::min(batch, x.rows - b0);
      auto t = Clock::now();
      unsigned char* buffer = gpu.batch_buffer(static_cast<std::size_t>(n) * row_bytes);
      if (buffer == nullptr)
        throw_error(ErrorCode::kInternal, "predict: the GPU backend has no batch buffer");
      const MatrixView rows = x.slice(b0, n);
      // Ranges of at least 4096 rows, each queued to the device as soon as it is written.
      const std::int64_t ranges = std::clamp<std::int64_t>(n / 4096, 1, 4 * threads);
      parallel_for(threads, ranges, [&](std::int64_t r, int worker) {
        const std::int64_t first = n * r / ranges, last = n * (r + 1) / ranges;
        write_rows(rows, b0, first, last - first, to, host_normalises, buffer,
                   scratch[static_cast<std::size_t>(worker)]);
        gpu.batch_rows_landed(0, b0, n, first, last - first);
      });
      write_s += since(t);
      t = Clock::now();
      const MatrixView view(buffer, n, d, to);
      prev.assign(static_cast<std::size_t>(n), 0);
      node.resize(static_cast<std::size_t>(n));
      child.resize(static_cast<std::size_t>(n));
      float* dist = p.distances.data() + b0;
      for (int l = 1; l <= L; ++l) {
        if (l > 1 && gpu.resident(0, b0, n)) {
          gpu.descend_resident(s.tree, l, 0, b0, n, prev.data(), node.data(), child.data(), dist);
        } else {
          if (l == 1) gpu.offer_resident(0, b0);
          if (device_normalises) gpu.normalise_next_rows();
          gpu.descend(s.tree, l, view, prev.data(), node.data(), child.data(), dist,
                      s.knn_options());
        }
        for (std::int64_t i = 0; i < n; ++i)
          p.paths[static_cast<std::size_t>((b0 + i) * L + l - 1)] =
              child[static_cast<std::size_t>(i)];
        prev.swap(node);
      }
      gpu.forget_resident(0, b0);
      descend_s += since(t);
    }
    if (options.log) {
      char line[256];
      std::snprintf(line, sizeof line,
                    "predict: %lld rows in %.3f s on %s (prepare %.3f, write %.3f, descend %.3f)",
                    static_cast<long long>(x.rows), since(t_start), gpu.describe().c_str(),
                    prepare_s, write_s, descend_s);
      options.log(line);
      options.log("predict: " + gpu.take_descend_breakdown());
    }
  } catch (...) {
    s.gpu_backend.reset();  // nothing half-done stays for the next call
    throw;
  }
  return p;
}

void TaxonomyEngine::release_gpu() noexcept {
  std::lock_guard<std::mutex> lock(impl_->gpu_mutex);
  impl_->gpu_backend.reset();
}

}  // namespace megatax
