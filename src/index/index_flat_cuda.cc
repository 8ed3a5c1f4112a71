#include "index/index_flat_cuda.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cuda_assigner.h"
#include "core/parallel.h"
#include "index/flat_shards.h"
#include "megatax/cuda.h"
#include "megatax/error.h"

namespace megatax::index {
namespace {

// Half of each shard's page-locked staging area for a device copy of the rows (two halves:
// one filled while the other's copy runs). Released when the copy is done. (H100, session 34:
// 128 MiB halves were 4-13% faster at 2M x 1024 and 10-17% slower at 10M x 128; 8 MiB slower.)
constexpr std::size_t kStageHalfBytes = std::size_t{32} << 20;
// A search's page-locked staging, kept between searches: the batch's queries (shared by the
// shards) and each shard's results stay within this (a batch of at least 128 queries).
constexpr std::size_t kStageBytes = std::size_t{64} << 20;

// One GPU's share of the index: shard `shard` of `layout` (all rows when layout.shards = 1).
// Ids it returns are the index's.
class Mirror {
 public:
  Mirror(int device, FlatShards layout, int shard) : res_(device), layout_(layout), shard_(shard) {}

  // Brings the device copy up to date with db: only rows appended since the last sync are
  // copied (generation changes, a dtype or dim change, or fewer rows start over). The rows
  // are read out of db's panels on all threads into page-locked halves, each half's copy
  // running while the next is filled.
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
    const std::int64_t first = rows_, add = n - rows_;
    auto* dst = static_cast<unsigned char*>(rows_buf_.data()) + static_cast<std::size_t>(first) * row_bytes;
    cuda::PinnedBuffer staging;
    cuda::upload_rows_staged(res_, staging, dst, add, row_bytes, kStageHalfBytes,
                             [&](std::int64_t r0, std::int64_t r1, unsigned char* out) {
                               // Local rows run through the index's rows a block at a time.
                               for (std::int64_t i = r0; i < r1;) {
                                 const std::int64_t local = first + i;
                                 const std::int64_t run =
                                     std::min(r1 - i, layout_.block_rows - local % layout_.block_rows);
                                 db.get_rows_raw(layout_.global_row(shard_, local), run,
                                                 out + static_cast<std::size_t>(i - r0) * row_bytes);
                                 i += run;
                               }
                             });
    cuda::row_norms(res_, MatrixView(dst, add, d, t, d), norms_.as<float>() + first);
    res_.synchronize();
    rows_ = n;
  }

  // The k nearest of this shard's rows to q queries of dim() values each, already in the
  // index dtype in page-locked host memory (shared by the shards: only read). distances / ids:
  // q x k host arrays (ids the index's).
  void search(const void* queries, std::int64_t q, std::int64_t k, Metric metric, float* distances,
              std::int64_t* ids) {
    const std::int64_t d = dim_;
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
    const std::size_t out = static_cast<std::size_t>(q * k);
    queries_.reserve(qbytes);
    dist_.reserve(out * sizeof(float));
    ids_.reserve(out * sizeof(std::int64_t));
    host_dist_.reserve(out * sizeof(float));
    host_ids_.reserve(out * sizeof(std::int64_t));
    cuda::copy_to_device(res_, queries_.data(), queries, qbytes);  // page-locked: queued
    cuda::TopkArgs a;
    a.metric = metric;
    a.queries = MatrixView(queries_.data(), q, d, dtype_, d);
    a.database = MatrixView(rows_buf_.data(), rows_, d, dtype_, d);
    a.database_norms = metric == Metric::kL2 ? norms_.as<float>() : nullptr;
    a.k = k;
    a.distances = dist_.as<float>();
    a.ids = ids_.as<std::int64_t>();
    cuda::topk(res_, a);
    cuda::copy_to_host_async(res_, host_dist_.data(), dist_.data(), out * sizeof(float));
    cuda::copy_to_host_async(res_, host_ids_.data(), ids_.data(), out * sizeof(std::int64_t));
    res_.synchronize();
    std::memcpy(distances, host_dist_.data(), out * sizeof(float));
    const auto* found = host_ids_.as<std::int64_t>();
    if (layout_.shards > 1) {
      for (std::size_t i = 0; i < out; ++i) ids[i] = found[i] >= 0 ? layout_.global_row(shard_, found[i]) : found[i];
    } else {
      std::memcpy(ids, found, out * sizeof(std::int64_t));
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
  cuda::PinnedBuffer host_dist_, host_ids_;  // the results' landing place (copied at full rate)
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
    dtype_ = db.dtype();
    dim_ = db.dim();
    each_shard([&](Mirror& m, std::size_t) { m.sync(db, generation); });
  }

  void search(const MatrixView& queries, std::int64_t k, Metric metric, float* distances,
              std::int64_t* ids) override {
    // Queries go in batches whose page-locked staging (the queries in the index dtype, and
    // each shard's results) stays within kStageBytes: memory the driver pins stays bounded
    // whatever the caller's Q and k. Batches are whole 128-row query blocks (the kernels'
    // own), so a query's results do not depend on the batching.
    const std::int64_t q = queries.rows;
    const std::size_t row_bytes = static_cast<std::size_t>(dim_) * dtype_size(dtype_);
    const std::size_t result_bytes = static_cast<std::size_t>(k) * (sizeof(float) + sizeof(std::int64_t));
    const auto fit = static_cast<std::int64_t>(kStageBytes / std::max(row_bytes, result_bytes));
    const std::int64_t batch = std::max<std::int64_t>(128, fit / 128 * 128);
    for (std::int64_t b0 = 0; b0 < q; b0 += batch) {
      const std::int64_t nb = std::min(batch, q - b0);
      search_batch(MatrixView(queries.row(b0), nb, queries.dim, queries.dtype, queries.stride), k, metric,
                   distances + b0 * k, ids + b0 * k);
    }
  }

 private:
  // One batch: the queries converted to the index dtype once for all shards, on all threads,
  // straight into page-locked memory (each shard's copy to its GPU then runs at the link's
  // rate); every shard searched at once; their results merged.
  void search_batch(const MatrixView& queries, std::int64_t k, Metric metric, float* distances,
                    std::int64_t* ids) {
    const std::int64_t q = queries.rows;
    const std::size_t row_bytes = static_cast<std::size_t>(dim_) * dtype_size(dtype_);
    staged_queries_.reserve(static_cast<std::size_t>(q) * row_bytes);
    const std::int64_t per_task = std::max<std::int64_t>(1, (std::int64_t{1} << 18) / std::max<std::int64_t>(1, dim_));
    const std::int64_t tasks = (q + per_task - 1) / per_task;
    parallel_for(tasks > 1 ? 0 : 1, tasks, [&](std::int64_t t, int) {
      const std::int64_t r0 = t * per_task, r1 = std::min(q, r0 + per_task);
      cluster::convert_rows(MatrixView(queries.row(r0), r1 - r0, queries.dim, queries.dtype, queries.stride), dtype_,
                            staged_queries_.as<unsigned char>() + static_cast<std::size_t>(r0) * row_bytes);
    });
    if (shards_.size() == 1) {
      shards_[0].search(staged_queries_.data(), q, k, metric, distances, ids);
      return;
    }
    const std::size_t out = static_cast<std::size_t>(q * k);
    dist_.resize(out * shards_.size());
    ids_.resize(out * shards_.size());
    each_shard([&](Mirror& m, std::size_t s) {
      m.search(staged_queries_.data(), q, k, metric, dist_.data() + s * out, ids_.data() + s * out);
    });
    std::vector<ShardResults> parts(shards_.size());
    for (std::size_t s = 0; s < shards_.size(); ++s) parts[s] = {dist_.data() + s * out, ids_.data() + s * out};
    merge_shard_results(parts, q, k, metric, distances, ids);
  }

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
  DType dtype_ = DType::kF32;  // the index's, as of the last sync
  std::int64_t dim_ = 0;
  cuda::PinnedBuffer staged_queries_;
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
