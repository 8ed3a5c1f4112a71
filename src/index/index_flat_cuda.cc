#include "index/index_flat_cuda.h"

#include <algorithm>
#include <exception>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cuda_assigner.h"
#include "index/flat_shards.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::index {
namespace {

// One GPU's share of the index: shard `shard` of `layout` (all rows when layout.shards = 1).
// Ids it returns are the index's.
class Mirror {
 public:
  Mirror(int device, FlatShards layout, int shard) : res_(device), layout_(layout), shard_(shard) {}

  void sync(const kernels::PackedMatrix& db, std::uint64_t generation) {
    const std::int64_t n = layout_.rows_of(shard_, db.rows()), d = db.dim();
    const DType t = db.dtype();
    if (generation != generation_ || n < rows_ || t != dtype_ || d != dim_) {  // start over
      rows_ = 0;
      dtype_ = t;
      dim_ = d;
      generation_ = generation;
    }
    if (n == rows_) return;
    res_.activate();  // this index's device on the calling thread (allocations included)
    const std::size_t row_bytes = static_cast<std::size_t>(d) * dtype_size(t);
    if (static_cast<std::size_t>(n) * row_bytes > rows_buf_.size()) {
      // Grow geometrically; keep the rows already on the device.
      const std::size_t want = std::max<std::size_t>(static_cast<std::size_t>(n) * row_bytes,
                                                     rows_buf_.size() * 3 / 2);
      cuda::DeviceBuffer bigger(want);
      cuda::DeviceBuffer bigger_norms(want / row_bytes * sizeof(float) + sizeof(float));
      if (rows_ > 0) {
        copy_device(bigger.data(), rows_buf_.data(), static_cast<std::size_t>(rows_) * row_bytes);
        copy_device(bigger_norms.data(), norms_.data(), static_cast<std::size_t>(rows_) * sizeof(float));
      }
      rows_buf_ = std::move(bigger);
      norms_ = std::move(bigger_norms);
    }
    const std::int64_t add = n - rows_;
    std::vector<unsigned char> host(static_cast<std::size_t>(add) * row_bytes);
    for (std::int64_t i = 0; i < add; ++i)
      db.get_row_raw(layout_.global_row(shard_, rows_ + i), host.data() + static_cast<std::size_t>(i) * row_bytes);
    auto* dst = static_cast<unsigned char*>(rows_buf_.data()) + static_cast<std::size_t>(rows_) * row_bytes;
    cuda::copy_to_device(res_, dst, host.data(), host.size());
    cuda::row_norms(res_, MatrixView(dst, add, d, t, d), norms_.as<float>() + rows_);
    res_.synchronize();  // `host` dies here
    rows_ = n;
  }

  void search(const MatrixView& queries, std::int64_t k, Metric metric, float* distances,
              std::int64_t* ids) {
    const std::int64_t q = queries.rows, d = dim_;
    if (q == 0) return;
    if (rows_ == 0) {  // empty index: every id -1, distance +inf (L2) / -inf (IP)
      std::fill(ids, ids + q * k, -1);
      std::fill(distances, distances + q * k,
                metric == Metric::kL2 ? std::numeric_limits<float>::infinity()
                                      : -std::numeric_limits<float>::infinity());
      return;
    }
    res_.activate();  // this index's device on the calling thread (allocations included)
    const std::size_t qbytes = static_cast<std::size_t>(q * d) * dtype_size(dtype_);
    std::vector<unsigned char> host(qbytes);
    cluster::convert_rows(queries, dtype_, host.data());
    if (queries_.size() < qbytes) queries_ = cuda::DeviceBuffer(qbytes);
    const std::size_t out = static_cast<std::size_t>(q * k);
    if (dist_.size() < out * sizeof(float)) dist_ = cuda::DeviceBuffer(out * sizeof(float));
    if (ids_.size() < out * sizeof(std::int64_t)) ids_ = cuda::DeviceBuffer(out * sizeof(std::int64_t));
    cuda::copy_to_device(res_, queries_.data(), host.data(), qbytes);
    cuda::TopkArgs a;
    a.metric = metric;
    a.queries = MatrixView(queries_.data(), q, d, dtype_, d);
    a.database = MatrixView(rows_buf_.data(), rows_, d, dtype_, d);
    a.database_norms = metric == Metric::kL2 ? norms_.as<float>() : nullptr;
    a.k = k;
    a.distances = dist_.as<float>();
    a.ids = ids_.as<std::int64_t>();
    cuda::topk(res_, a);
    cuda::copy_to_host(res_, distances, dist_.data(), out * sizeof(float));
    cuda::copy_to_host(res_, ids, ids_.data(), out * sizeof(std::int64_t));
    if (layout_.shards > 1) {
      for (std::size_t i = 0; i < out; ++i)
        if (ids[i] >= 0) ids[i] = layout_.global_row(shard_, ids[i]);
    }
  }

 private:
  void copy_device(void* dst, const void* src, std::size_t bytes) {
    // Through the host would be slow; a device-to-device copy on the stream.
    cuda::copy_device_to_device(res_, dst, src, bytes);
  }

  cuda::Resources res_;
  FlatShards layout_;
  int shard_ = 0;
  DType dtype_ = DType::kF32;
  std::int64_t dim_ = 0, rows_ = 0;
  std::uint64_t generation_ = 0;
  cuda::DeviceBuffer rows_buf_, norms_, queries_, dist_, ids_;
};

// The index over one or more GPUs: shard i on devices[i], searched at the same time (a
// thread each), the results merged on the host.
class ShardedMirror final : public CudaFlatMirror {
 public:
  explicit ShardedMirror(std::vector<int> devices) : devices_(std::move(devices)) {
    FlatShards layout;
    layout.shards = static_cast<int>(devices_.size());
    for (int s = 0; s < layout.shards; ++s) shards_.emplace_back(devices_[static_cast<std::size_t>(s)], layout, s);
  }

  const std::vector<int>& devices() const override { return devices_; }

  void sync(const kernels::PackedMatrix& db, std::uint64_t generation) override {
    each_shard([&](Mirror& m, std::size_t) { m.sync(db, generation); });
  }

  void search(const MatrixView& queries, std::int64_t k, Metric metric, float* distances,
              std::int64_t* ids) override {
    if (shards_.size() == 1) {
      shards_[0].search(queries, k, metric, distances, ids);
      return;
    }
    const std::size_t out = static_cast<std::size_t>(queries.rows * k);
    dist_.resize(out * shards_.size());
    ids_.resize(out * shards_.size());
    each_shard([&](Mirror& m, std::size_t s) {
      m.search(queries, k, metric, dist_.data() + s * out, ids_.data() + s * out);
    });
    std::vector<ShardResults> parts(shards_.size());
    for (std::size_t s = 0; s < shards_.size(); ++s) parts[s] = {dist_.data() + s * out, ids_.data() + s * out};
    merge_shard_results(parts, queries.rows, k, metric, distances, ids);
  }

 private:
  // f on every shard, each on its own thread (the first on this one); rethrows the first
  // shard's error, in shard order.
  template <class F>
  void each_shard(F&& f) {
    if (shards_.size() == 1) {
      f(shards_[0], 0);
      return;
    }
    std::vector<std::exception_ptr> errors(shards_.size());
    std::vector<std::thread> threads;
    for (std::size_t s = 1; s < shards_.size(); ++s) {
      threads.emplace_back([&, s] {
        try {
          f(shards_[s], s);
        } catch (...) {
          errors[s] = std::current_exception();
        }
      });
    }
    try {
      f(shards_[0], 0);
    } catch (...) {
      errors[0] = std::current_exception();
    }
    for (auto& t : threads) t.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }

  std::vector<int> devices_;
  std::vector<Mirror> shards_;
  std::vector<float> dist_;
  std::vector<std::int64_t> ids_;
};

}  // namespace

std::unique_ptr<CudaFlatMirror> make_cuda_flat_mirror(const std::vector<int>& devices) {
  const int count = cuda::device_count();
  if (count == 0)
    throw_error(ErrorCode::kFailedPrecondition,
                "search: backend cuda: no CUDA device is visible to this process (check "
                "nvidia-smi and CUDA_VISIBLE_DEVICES), or use backend cpu");
  std::vector<int> use = devices.empty() ? std::vector<int>{0} : devices;
  for (int g : use) {
    if (g < 0 || g >= count)
      throw_error(ErrorCode::kInvalidArgument,
                  "search: backend cuda: device " + std::to_string(g) + " does not exist (" +
                      std::to_string(count) + " visible: 0.." + std::to_string(count - 1) + ")");
  }
  return std::make_unique<ShardedMirror>(std::move(use));
}

}  // namespace megatax::index
