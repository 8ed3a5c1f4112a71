// capi/megatax_c.cc -- the C API: argument checks and error translation, no logic.
#include "megatax/megatax_c.h"

#include <exception>
#include <memory>
#include <new>
#include <string>
#include <utility>

#include "megatax/error.h"
#include "capi/c_api_guard.h"
#include "megatax/index_flat.h"

// The opaque handle is the C++ index itself.
struct megatax_index {
  explicit megatax_index(megatax::IndexFlat&& i) : index(std::move(i)) {}
  megatax::IndexFlat index;
};

namespace {

using megatax::ErrorCode;
using megatax::capi::guarded;
using megatax::capi::require;

static_assert(MEGATAX_OK == static_cast<int>(ErrorCode::kOk));
static_assert(MEGATAX_INVALID_ARGUMENT == static_cast<int>(ErrorCode::kInvalidArgument));
static_assert(MEGATAX_NOT_FOUND == static_cast<int>(ErrorCode::kNotFound));
static_assert(MEGATAX_ALREADY_EXISTS == static_cast<int>(ErrorCode::kAlreadyExists));
static_assert(MEGATAX_OUT_OF_RANGE == static_cast<int>(ErrorCode::kOutOfRange));
static_assert(MEGATAX_FAILED_PRECONDITION == static_cast<int>(ErrorCode::kFailedPrecondition));
static_assert(MEGATAX_DATA_LOSS == static_cast<int>(ErrorCode::kDataLoss));
static_assert(MEGATAX_IO_ERROR == static_cast<int>(ErrorCode::kIoError));
static_assert(MEGATAX_UNAVAILABLE == static_cast<int>(ErrorCode::kUnavailable));
static_assert(MEGATAX_UNIMPLEMENTED == static_cast<int>(ErrorCode::kUnimplemented));
static_assert(MEGATAX_RESOURCE_EXHAUSTED == static_cast<int>(ErrorCode::kResourceExhausted));
static_assert(MEGATAX_CANCELLED == static_cast<int>(ErrorCode::kCancelled));
static_assert(MEGATAX_INTERNAL == static_cast<int>(ErrorCode::kInternal));
static_assert(MEGATAX_METRIC_L2 == static_cast<int>(megatax::Metric::kL2));
static_assert(MEGATAX_METRIC_IP == static_cast<int>(megatax::Metric::kInnerProduct));
static_assert(MEGATAX_DTYPE_F32 == static_cast<int>(megatax::DType::kF32));
static_assert(MEGATAX_DTYPE_F16 == static_cast<int>(megatax::DType::kF16));
static_assert(MEGATAX_DTYPE_BF16 == static_cast<int>(megatax::DType::kBF16));
static_assert(MEGATAX_DTYPE_U8 == static_cast<int>(megatax::DType::kU8));
static_assert(MEGATAX_BACKEND_AUTO == static_cast<int>(megatax::Backend::kAuto));
static_assert(MEGATAX_BACKEND_CPU == static_cast<int>(megatax::Backend::kCpu));
static_assert(MEGATAX_BACKEND_CUDA == static_cast<int>(megatax::Backend::kCuda));

megatax::DType to_dtype(int dtype, const char* argument) {
  if (dtype < MEGATAX_DTYPE_F32 || dtype > MEGATAX_DTYPE_U8)
    megatax::throw_error(ErrorCode::kInvalidArgument,
                         std::string("argument '") + argument +
                             "' must be a MEGATAX_DTYPE_* value (0..3), got " +
                             std::to_string(dtype));
  return static_cast<megatax::DType>(dtype);
}

}  // namespace

namespace megatax::capi {
std::string& last_error() noexcept {
  thread_local std::string message;
  return message;
}
}  // namespace megatax::capi

extern "C" {

const char* megatax_last_error(void) { return megatax::capi::last_error().c_str(); }

const char* megatax_status_name(int status) {
  if (status < MEGATAX_OK || status > MEGATAX_INTERNAL) return "unknown";
  return megatax::error_code_name(static_cast<ErrorCode>(status));
}

int megatax_search_options_init(megatax_search_options_t* opts) {
  return guarded("megatax_search_options_init", [&] {
    require(opts, "opts");
    opts->backend = MEGATAX_BACKEND_AUTO;
    opts->threads = 0;
    opts->simd = "auto";
    opts->devices = nullptr;
    opts->n_devices = 0;
  });
}

int megatax_index_create(int64_t dim, int metric, int dtype, megatax_index_t** out) {
  if (out != nullptr) *out = nullptr;
  return guarded("megatax_index_create", [&] {
    require(out, "out");
    if (metric != MEGATAX_METRIC_L2 && metric != MEGATAX_METRIC_IP)
      megatax::throw_error(ErrorCode::kInvalidArgument,
                           "argument 'metric' must be MEGATAX_METRIC_L2 (0) or "
                           "MEGATAX_METRIC_IP (1), got " +
                               std::to_string(metric));
    const megatax::DType t = to_dtype(dtype, "dtype");
    *out = std::make_unique<megatax_index>(
               megatax::IndexFlat(dim, static_cast<megatax::Metric>(metric), t))
               .release();
  });
}

void megatax_index_destroy(megatax_index_t* index) {
  std::unique_ptr<megatax_index> owned(index);  // NULL: no-op
}

int megatax_index_add(megatax_index_t* index, int64_t n, const float* x) {
  return guarded("megatax_index_add", [&] {
    require(index, "index");
    if (n > 0) require(x, "x");
    index->index.add(megatax::MatrixView(x, n, index->index.dim(), megatax::DType::kF32));
  });
}

int megatax_index_add_typed(megatax_index_t* index, int64_t n, const void* x, int dtype) {
  return guarded("megatax_index_add_typed", [&] {
    require(index, "index");
    const megatax::DType t = to_dtype(dtype, "dtype");
    if (n > 0) require(x, "x");
    index->index.add(megatax::MatrixView(x, n, index->index.dim(), t));
  });
}

int megatax_index_reset(megatax_index_t* index) {
  return guarded("megatax_index_reset", [&] {
    require(index, "index");
    index->index.reset();
  });
}

int megatax_index_search(const megatax_index_t* index, int64_t n, const float* q, int64_t k,
                         float* distances, int64_t* ids, const megatax_search_options_t* opts) {
  return guarded("megatax_index_search", [&] {
    require(index, "index");
    if (n > 0) {
      require(q, "q");
      require(distances, "distances");
      require(ids, "ids");
    }
    megatax::SearchOptions options;
    if (opts != nullptr) {
      if (opts->backend < MEGATAX_BACKEND_AUTO || opts->backend > MEGATAX_BACKEND_CUDA)
        megatax::throw_error(ErrorCode::kInvalidArgument,
                             "opts->backend must be a MEGATAX_BACKEND_* value (0..2), got " +
                                 std::to_string(opts->backend));
      options.backend = static_cast<megatax::Backend>(opts->backend);
      options.threads = opts->threads;
      options.simd = opts->simd != nullptr ? opts->simd : "auto";
      if (opts->n_devices < 0)
        megatax::throw_error(ErrorCode::kInvalidArgument,
                             "opts->n_devices must be >= 0, got " + std::to_string(opts->n_devices));
      if (opts->n_devices > 0) {
        require(opts->devices, "opts->devices");
        options.devices.assign(opts->devices, opts->devices + opts->n_devices);
      }
    }
    index->index.search(megatax::MatrixView(q, n, index->index.dim(), megatax::DType::kF32), k,
                        distances, ids, options);
  });
}

int megatax_index_ntotal(const megatax_index_t* index, int64_t* out) {
  return guarded("megatax_index_ntotal", [&] {
    require(index, "index");
    require(out, "out");
    *out = index->index.ntotal();
  });
}

int megatax_index_dim(const megatax_index_t* index, int64_t* out) {
  return guarded("megatax_index_dim", [&] {
    require(index, "index");
    require(out, "out");
    *out = index->index.dim();
  });
}

int megatax_index_save(const megatax_index_t* index, const char* path) {
  return guarded("megatax_index_save", [&] {
    require(index, "index");
    require(path, "path");
    index->index.save(path);
  });
}

int megatax_index_load(const char* path, megatax_index_t** out) {
  if (out != nullptr) *out = nullptr;
  return guarded("megatax_index_load", [&] {
    require(out, "out");
    require(path, "path");
    *out = std::make_unique<megatax_index>(megatax::IndexFlat::load(path)).release();
  });
}

}  // extern "C"
