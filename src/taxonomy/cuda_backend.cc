// The CUDA compute backend: k-means of node problems through CudaAssigner (one at a time)
// or CudaBatchKMeans (a group per launch), and descent of a batch of rows to a level through
// one grouped-assign launch (every row against its own parent's children), with the level's
// centroids kept on the device. The pass's batches of stored rows arrive in page-locked
// memory, are grouped by parent on the device, and are kept across levels while they fit
// (offer_resident / descend_resident): on the device, then in that page-locked memory,
// whence later passes copy them back and the training's gathers read them over the bus.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "cluster/cuda_assigner.h"
#include "cluster/cuda_batch_kmeans.h"
#include "megatax/cuda.h"
#include "core/env.h"
#include "core/parallel.h"
#include "megatax/error.h"
#include "taxonomy/compute_backend.h"
#include "taxonomy/row_groups.h"

namespace megatax::taxonomy {
namespace {

// The node-local rank of this process under mpirun / srun (0 otherwise).
int local_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}) {
    if (const char* v = std::getenv(var)) return std::atoi(v);
  }
  return 0;
}

// MemAvailable and MemTotal of /proc/meminfo in bytes (0 when unknown).
struct HostMemory {
  std::size_t available = 0, total = 0;
};
HostMemory host_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::size_t kib = 0;
  std::string unit;
  HostMemory m;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") m.available = kib << 10;
    if (key == "MemTotal:") m.total = kib << 10;
  }
  return m;
}

// Whether `bytes` more may be page-locked now: the host keeps a quarter of its memory
// available after them. Asked before each chunk (other processes on the node, e.g. Ray
// workers that do not know of each other, page-lock too: a budget fixed once is not enough).
bool host_can_lock(std::size_t bytes) {
  const HostMemory m = host_memory();
  return m.available >= bytes + m.total / 4;
}

// CudaAssigners kept for reuse across node problems (one per concurrent problem at most).
class AssignerPool {
 public:
  std::unique_ptr<cluster::CudaAssigner> take(int device, Metric metric, DType compute) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if ((*it)->metric() != metric) continue;
        auto a = std::move(*it);
        free_.erase(it);
        a->reset();
        return a;
      }
    }
    return std::make_unique<cluster::CudaAssigner>(device, metric, compute);
  }
  void give_back(std::unique_ptr<cluster::CudaAssigner> a) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(std::move(a));
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<cluster::CudaAssigner>> free_;
};

// An assigner on loan from the pool; returned when the node problem is done with it.
class PooledAssigner final : public cluster::Assigner {
 public:
  PooledAssigner(AssignerPool& pool, std::unique_ptr<cluster::CudaAssigner> a)
      : pool_(pool), a_(std::move(a)) {}
  ~PooledAssigner() override { pool_.give_back(std::move(a_)); }
  void prepare(const MatrixView& x) override { a_->prepare(x); }
  void set_centroids(const float* centroids, std::int64_t k, std::int64_t dim) override {
    a_->set_centroids(centroids, k, dim);
  }
  void assign(const MatrixView& x, std::int64_t* labels, float* distances) override {
    a_->assign(x, labels, distances);
  }
  bool set_seeding_pool(std::span<const std::int64_t> rows) override { return a_->set_seeding_pool(rows); }
  void seeding_distances(std::span<const std::int64_t> cand, float* out) override {
    a_->seeding_distances(cand, out);
  }
  bool cluster_sums(std::int64_t k, double* sums, std::int64_t* counts) override {
    return a_->cluster_sums(k, sums, counts);
  }

 private:
  AssignerPool& pool_;
  std::unique_ptr<cluster::CudaAssigner> a_;
};

// Calls fn(g, t0, t1) for pieces [t0, t1) of the positions [0, row_begin.back()) of groups
// g (group g holds [row_begin[g], row_begin[g + 1])), the positions cut into slices run on
// up to `threads` threads (0: all) of `pool`: every position once, pieces disjoint.
void for_each_group_slice(const std::vector<std::int64_t>& row_begin, int threads, WorkerPool& pool,
                          const std::function<void(std::size_t, std::int64_t, std::int64_t)>& fn) {
  const std::int64_t m = row_begin.back();
  const int T = resolve_threads(threads, m / 16384);  // a pass's batch: ~125K rows
  pool.run(T, [&](std::int64_t s, int) {
    const std::int64_t a = m * s / T, b = m * (s + 1) / T;
    if (a == b) return;
    // The group of position a: the last g with row_begin[g] <= a.
    auto g = static_cast<std::size_t>(std::upper_bound(row_begin.begin(), row_begin.end(), a) - row_begin.begin() - 1);
    for (std::int64_t t = a; t < b; ++g) {
      const std::int64_t e = std::min(b, row_begin[g + 1]);
      if (e > t) fn(g, t, e);
      t = std::max(t, e);
    }
  });
}

class CudaBackend final : public ComputeBackend {
 public:
  CudaBackend(DType compute, int gpu) : res_(gpu), compute_(compute) {}
  // Copies into or out of kept host memory finish before it is freed.
  ~CudaBackend() override {
    try {
      kept_copied_.synchronize();
      for (const Staged& st : staged_) st.ready.synchronize();
    } catch (...) {  // a failed device: nothing more to wait for
    }
  }

  std::string describe() const override {
    return "cuda:" + std::to_string(res_.device()) + " (" + res_.device_name() + ", " +
           dtype_name(compute_) + ")";
  }
  // Node problems train concurrently, each on its own stream: their CPU parts (k-means++
  // init, the float64 updates) then use every core while the GPU assigns.
  bool concurrent_training() const override { return true; }
  bool descends_off_host() const override { return true; }
  // Rows in the compute dtype are staged as they are (a copy, no conversion).
  bool takes_stored_rows(DType stored) const override { return stored == compute_; }
  DType compute_dtype() const override { return compute_; }
  std::unique_ptr<cluster::Assigner> make_assigner(Metric metric, const kernels::KnnOptions&) override {
    return std::make_unique<PooledAssigner>(pool_, pool_.take(res_.device(), metric, compute_));
  }

  // The pass reads its batches of stored rows into page-locked memory: descend() copies a
  // batch to the device as it is and groups its rows there (no host staging copy).
  unsigned char* batch_buffer(std::size_t bytes) override {
    res_.activate();
    batch_host_.reserve(bytes);
    return batch_host_.as<unsigned char>();
  }

  // Each landed range is queued for the device at once (the reading threads' copies out of
  // the page cache and the host-to-device copies overlap): into memory kept for the batch
  // when it may be kept on the device (offer_resident), else into the scratch batch memory
  // (and the batch's page-locked memory is kept instead when it may be).
  void batch_rows_landed(std::int64_t shard, std::int64_t local_begin, std::int64_t rows, std::int64_t first,
                         std::int64_t count) override {
    std::lock_guard<std::mutex> lock(landing_mutex_);
    res_.activate();  // the reading threads': the memory below is this device's
    const std::size_t row_bytes = static_cast<std::size_t>(dim_) * dtype_size(compute_);
    const Key key{shard, local_begin};
    if (landing_.key != key || landing_.rows != rows) {
      landing_ = {};
      landing_.key = key;
      landing_.rows = rows;
      const std::size_t bytes = static_cast<std::size_t>(rows) * row_bytes;
      const Tier tier = resident_.count(key) == 0 ? keep_tier(bytes) : Tier::kNone;
      if (tier == Tier::kDevice) {
        landing_.kept = cuda::DeviceBuffer(bytes);
        landing_.dst = landing_.kept.as<unsigned char>();
      } else {
        batch_dev_.reserve(bytes);
        landing_.dst = batch_dev_.as<unsigned char>();
        landing_.keep_on_host = tier == Tier::kHost;
        kept_copied_.enqueue_wait(res_);  // the last batch kept on the host has left batch_dev_
      }
    }
    const std::size_t offset = static_cast<std::size_t>(first) * row_bytes;
    cuda::copy_to_device(res_, landing_.dst + offset, batch_host_.as<unsigned char>() + offset,
                         static_cast<std::size_t>(count) * row_bytes);
    landing_.landed += count;
  }

  std::unique_ptr<cluster::BatchKMeansDevice> make_batch_kmeans(Metric metric) override {
    return std::make_unique<cluster::CudaBatchKMeans>(res_.device(), metric, compute_);
  }

  // Predict: levels prepared before the next stay on the device (activate_level).
  void keep_prepared_levels() override { keep_levels_ = true; }

  void prepare_level(const Tree& tree, int level) override {
    res_.activate();
    if (keep_levels_ && level_ >= 0 && level_ != level) park_level();
    kept_levels_.erase(level);
    const TreeLevel& lv = tree.level(level);
    const std::int64_t k = lv.nodes(), d = tree.dim();
    const std::size_t bytes = static_cast<std::size_t>(k * d) * dtype_size(compute_);
    const std::size_t row_bytes = static_cast<std::size_t>(d) * dtype_size(compute_);
    centroids_.reserve(std::max<std::size_t>(bytes, 16));
    // Converted by every thread into one half of a page-locked buffer while the other half
    // is copied to the device (a deep level has ~1M centroids: gigabytes).
    cuda::upload_rows_staged(res_, staging_, centroids_.data(), k, row_bytes, std::size_t{32} << 20,
                             [&](std::int64_t r0, std::int64_t r1, unsigned char* stage) {
      constexpr std::int64_t kRows = 1024;
      const std::int64_t tasks = (r1 - r0 + kRows - 1) / kRows;
      parallel_for(resolve_threads(0, tasks), tasks, [&](std::int64_t c, int) {
        const std::int64_t a = r0 + c * kRows, b = std::min(r1, a + kRows);
        cluster::convert_rows(f32_view(lv.centroids.data() + a * d, b - a, d), compute_,
                              stage + static_cast<std::size_t>(a - r0) * row_bytes);
      });
    });
    c_norms_.reserve(static_cast<std::size_t>(std::max<std::int64_t>(k, 1)) * sizeof(float));
    if (k > 0) cuda::row_norms(res_, MatrixView(centroids_.data(), k, d, compute_, d), c_norms_.as<float>());
    // The parents' child ranges, for the descent's grouping and results on the device.
    const std::size_t cb_bytes = lv.child_begin.size() * sizeof(std::int64_t);
    child_begin_dev_.reserve(cb_bytes);
    cuda::copy_to_device(res_, child_begin_dev_.data(), lv.child_begin.data(), cb_bytes);
    res_.synchronize();
    level_ = level;
    k_ = k;
    dim_ = d;
  }

  void descend(const Tree& tree, int level, const MatrixView& rows, const std::int32_t* prev,
               std::int32_t* node, std::int32_t* child, float* dist,
               const kernels::KnnOptions& options) override {
    const Key keep = std::exchange(offered_, Key{-1, -1});
    const bool normalise = std::exchange(normalise_next_, false);
    in_place_now_ = std::exchange(offered_in_place_, {});
    rows_checked_ = false;
    // Tallied while a shard is (begin_tallies), as descend_resident()'s batches are.
    tally_this_batch_ = tally_nodes_ > 0;
    tallied_on_device_ = false;
    try {
      descend_impl(tree, level, rows.rows, &rows, nullptr, keep, normalise, prev, node, child, dist, options.threads);
      in_place_now_ = {};
    } catch (...) {
      in_place_now_ = {};
      tally_this_batch_ = false;
      const bool kept = std::exchange(pending_keep_, {}).kept != nullptr;
      if (kept) forget_resident(keep.first, keep.second);  // never filled
      throw;
    }
    tally_this_batch_ = false;
    tally_descended(rows.rows, node, dist);
    copy_kept_to_host();
  }

  // Cosine fits: the next descend()'s rows are normalised on the device once they are there
  // (cuda::normalise_rows: taxonomy::normalise_rows' bits), before they are kept.
  bool normalises_rows() const override { return true; }
  void normalise_next_rows() override { normalise_next_ = true; }

  // Batches of stored rows are kept on the device while they fit, then in page-locked host
  // memory (keep_tier; MEGATAX_CUDA_RESIDENT=0 turns it off): later levels' passes then skip
  // reading them.
  void offer_resident(std::int64_t shard, std::int64_t local_begin) override {
    if (keep_device_ || keep_host_) offered_ = {shard, local_begin};
  }
  // Batches kept on the host may stay where the shard files lie in the page cache, the files
  // registered with the device (keep_in_place): no page-locked copy of X of our own (half
  // the host memory), none of it faulted in and locked while the first pass reads, no copy
  // back from the device. MEGATAX_CUDA_IN_PLACE=0 turns it off.
  bool takes_rows_in_place() const override { return keep_host_ && in_place_ok_; }
  void offer_rows_in_place(std::shared_ptr<const Storage::MappedBytes> file, const void* rows) override {
    if (offered_.first >= 0 && takes_rows_in_place() && file != nullptr && rows != nullptr)
      offered_in_place_ = {std::move(file), static_cast<const unsigned char*>(rows)};
  }
  // Registers the file on a thread of its own (~40 GB/s on an H200 host: a 256 MiB shard in
  // ~6 ms), while the pass descends the shard before it; keep_in_place takes it. At most two
  // under way or unclaimed (an older one is dropped: its shard was not kept after all).
  // True (the rows may be handed to descend() where they lie): the file is registered or
  // being registered, its batches going to the host tier.
  bool expect_rows_in_place(std::shared_ptr<const Storage::MappedBytes> file) override {
    if (!takes_rows_in_place() || file == nullptr) return false;
    if (registering_.count(file->data) > 0) return true;
    if (const auto it = in_place_files_.find(file->data); it != in_place_files_.end()) {
      const auto f = it->second.lock();
      if (f != nullptr && f->file == file) return true;  // registered already
    }
    // (only where the shard's batches would go to the host: not to the device, not unkept)
    if (keep_tier(static_cast<std::size_t>(file->size)) != Tier::kHost || !host_can_lock(static_cast<std::size_t>(file->size)))
      return false;
    while (registering_.size() >= 2) {
      try {
        registering_.begin()->second.get();  // (unregistered as it goes)
      } catch (const Error&) {
      }
      registering_.erase(registering_.begin());
    }
    const unsigned char* key = file->data;
    registering_.emplace(key, std::async(std::launch::async, [this, file = std::move(file)] {
      res_.activate();  // this thread's device: the registration's
      auto f = std::make_shared<InPlaceFile>();
      f->file = file;
      f->registration = cuda::HostRegistration(file->data, static_cast<std::size_t>(file->size), /*read_only=*/true);
      return f;
    }));
    return true;
  }
  std::int64_t non_finite_row() override {
    return std::exchange(rows_checked_, false) ? *non_finite_host_.as<std::int64_t>() : -1;
  }
  void forget_resident(std::int64_t shard, std::int64_t local_begin) override {
    res_.activate();
    const auto it = resident_.find({shard, local_begin});
    if (it == resident_.end()) return;
    for (Staged& st : staged_) {
      if (st.key != it->first) continue;
      st.ready.synchronize();  // a copy out of the memory freed below may be under way
      st.key = Key{-1, -1};
    }
    if (it->second.on_host()) {
      wait_for_kept_copies();  // or into it
      host_bytes_ -= it->second.host_bytes;
    } else {
      resident_bytes_ -= static_cast<std::size_t>(it->second.x.size());
    }
    resident_.erase(it);
  }
  bool resident(std::int64_t shard, std::int64_t local_begin, std::int64_t rows) const override {
    const auto it = resident_.find({shard, local_begin});
    return it != resident_.end() && it->second.rows == rows;
  }
  void descend_resident(const Tree& tree, int level, std::int64_t shard, std::int64_t local_begin, std::int64_t rows,
                        const std::int32_t* prev, std::int32_t* node, std::int32_t* child, float* dist) override {
    const auto it = resident_.find({shard, local_begin});
    if (it == resident_.end() || it->second.rows != rows)
      throw_error(ErrorCode::kInternal, "cuda descend_resident: shard " + std::to_string(shard) + " rows from " +
                                            std::to_string(local_begin) + " are not kept");
    res_.activate();
    tallied_on_device_ = false;
    tally_this_batch_ = tally_nodes_ > 0;
    if (!it->second.on_host()) {
      descend_impl(tree, level, rows, nullptr, it->second.x.data(), Key{-1, -1}, false, prev, node, child, dist, 0);
    } else {
      wait_for_kept_copies();  // the pass that kept it copied it to the host
      const int slot = stage_kept_on_host(it);
      // The next batch's copy: by SMs, queued first (it overlaps this descent); by the copy
      // engine, queued after it (see copy_ahead).
      if (copy_sms_ > 0) copy_ahead(it, 1 - slot);
      descend_impl(tree, level, rows, nullptr, staged_[slot].buffer.data(), Key{-1, -1}, false, prev, node, child,
                   dist, 0);
      if (copy_sms_ == 0) copy_ahead(it, 1 - slot);
    }
    tally_this_batch_ = false;
    tally_descended(rows, node, dist);
  }

  // After a batch's descent while a shard is tallied (begin_tallies): its rows are, by the
  // descent on the way (descend_grouped_on_device) or, descended without the results on the
  // device in row order (one group: level 1's shape; rows staged by the host), from the
  // host's node and distance arrays sent up.
  void tally_descended(std::int64_t rows, const std::int32_t* node, const float* dist) {
    if (tally_nodes_ == 0) return;
    if (!tallied_on_device_ && rows > 0) {
      const auto nn = static_cast<std::size_t>(rows);
      tally_node_dev_.grow(nn * 8);
      auto* node_dev = tally_node_dev_.as<std::int32_t>();
      cuda::copy_to_device(res_, node_dev, node, nn * sizeof(std::int32_t));
      cuda::copy_to_device(res_, node_dev + rows, dist, nn * sizeof(float));
      cuda::tally_rows_by_node(res_, node_dev, reinterpret_cast<const float*>(node_dev + rows), rows, tally_nodes_,
                               tally_dev_.as<cuda::DeviceNodeTally>());
      res_.synchronize();  // the host's arrays (pageable) are the caller's again
    }
    ++time_.tallied;
    tally_rows_ += rows;
  }

  // Per-node tallies on the device (MEGATAX_CUDA_DEVICE_TALLIES=0: none, the host tallies):
  // a running array of n_nodes tallies (16 bytes a node, up to 1 GiB), zero between shards.
  bool tallies_on_device(std::int64_t n_nodes) const override {
    return device_tallies_ && n_nodes >= 1 && n_nodes < INT_MAX &&
           static_cast<std::size_t>(n_nodes) * sizeof(cuda::DeviceNodeTally) <= (std::size_t{1} << 30);
  }
  void begin_tallies(std::int64_t n_nodes) override {
    if (!tallies_on_device(n_nodes))
      throw_error(ErrorCode::kInternal, "cuda begin_tallies: " + std::to_string(n_nodes) + " nodes not tallied here");
    res_.activate();
    const std::size_t bytes = static_cast<std::size_t>(n_nodes) * sizeof(cuda::DeviceNodeTally);
    // The array is zero after a take; a shard that threw midway leaves it dirty.
    if (!tallies_zero_ || tally_zero_bytes_ < bytes) {
      tally_dev_.reserve(bytes);
      cuda::fill_zero(res_, tally_dev_.data(), bytes);
      tally_zero_bytes_ = bytes;
    }
    tallies_zero_ = false;
    tally_nodes_ = n_nodes;
    tally_rows_ = 0;
  }
  // The tallies leave through a page-locked read-back of their own (a pool: one is taken
  // while the shard before's may still be read), copied as far as the shard's rows could
  // touch nodes, the count with them: no wait here; the future waits for the copy.
  std::future<NodeTallies> take_tallies() override {
    if (tally_nodes_ == 0) throw_error(ErrorCode::kInternal, "cuda take_tallies: no begin_tallies");
    res_.activate();
    const auto t = std::chrono::steady_clock::now();
    const auto nn = static_cast<std::size_t>(tally_nodes_);
    const auto most = static_cast<std::size_t>(std::max<std::int64_t>(1, std::min(tally_nodes_, tally_rows_)));
    tally_out_dev_.reserve(nn * 20 + 8);  // the count, counts and inertia (8 bytes each), nodes (4)
    auto* touched_dev = tally_out_dev_.as<std::int64_t>();
    auto* counts_dev = touched_dev + 1;
    auto* inertia_dev = reinterpret_cast<double*>(counts_dev + nn);
    auto* nodes_dev = reinterpret_cast<std::int32_t*>(inertia_dev + nn);
    cuda::take_node_tallies(res_, tally_dev_.as<cuda::DeviceNodeTally>(), tally_nodes_, nodes_dev, counts_dev,
                            inertia_dev, touched_dev);
    std::shared_ptr<TallyReadBack> rb;
    {
      std::lock_guard<std::mutex> lock(tally_pool_mutex_);
      if (!tally_pool_.empty()) {
        rb = std::move(tally_pool_.back());
        tally_pool_.pop_back();
      }
    }
    if (!rb) rb = std::make_shared<TallyReadBack>();
    rb->host.grow(8 + most * 20);
    auto* host = rb->host.as<std::int64_t>();
    cuda::copy_to_host_async(res_, host, touched_dev, sizeof(std::int64_t));
    cuda::copy_to_host_async(res_, host + 1, counts_dev, most * sizeof(std::int64_t));
    cuda::copy_to_host_async(res_, host + 1 + most, inertia_dev, most * sizeof(double));
    cuda::copy_to_host_async(res_, host + 1 + 2 * most, nodes_dev, most * sizeof(std::int32_t));
    rb->copied.record(res_);
    tallies_zero_ = true;
    tally_nodes_ = 0;
    tally_rows_ = 0;
    time_.tallies += std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    return std::async(std::launch::deferred, [this, rb = std::move(rb), most]() mutable {
      rb->copied.synchronize();
      const auto* host = rb->host.as<std::int64_t>();
      const auto touched = static_cast<std::size_t>(host[0]);
      if (touched > most)
        throw_error(ErrorCode::kInternal, "cuda take_tallies: " + std::to_string(touched) + " nodes touched by " +
                                              std::to_string(most) + " rows");
      const auto* counts = host + 1;
      const auto* inertia = reinterpret_cast<const double*>(host + 1 + most);
      const auto* nodes = reinterpret_cast<const std::int32_t*>(host + 1 + 2 * most);
      NodeTallies out;
      out.nodes.assign(nodes, nodes + touched);
      out.counts.assign(counts, counts + touched);
      out.inertia.assign(inertia, inertia + touched);
      std::lock_guard<std::mutex> lock(tally_pool_mutex_);
      tally_pool_.push_back(std::move(rb));
      return out;
    });
  }

  // Kept batches are found by key (the last batch of `shard` starting at or before the row);
  // rows kept in page-locked host memory are given by their device address there (the
  // training's gather reads them over the bus). MEGATAX_CUDA_TRAIN_FROM_KEPT=0 says none is
  // (training then reads its points again).
  bool kept_rows(std::int64_t shard, std::span<const std::int64_t> rows, const void** out) const override {
    if (!train_from_kept_) return false;
    wait_for_kept_copies();  // rows kept on the host are all there
    const std::size_t row_bytes = static_cast<std::size_t>(dim_) * dtype_size(compute_);
    const Resident* batch = nullptr;
    std::int64_t begin = 0;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const std::int64_t r = rows[i];
      if (batch == nullptr || r < begin || r >= begin + batch->rows) {
        auto it = resident_.upper_bound(Key{shard, r});
        if (it == resident_.begin()) return false;
        --it;
        if (it->first.first != shard || r < it->first.second || r >= it->first.second + it->second.rows) return false;
        batch = &it->second;
        begin = it->first.second;
      }
      const auto* base = batch->on_host() ? batch->host_on_device : batch->x.as<unsigned char>();
      out[i] = base + static_cast<std::size_t>(r - begin) * row_bytes;
    }
    return true;
  }

  bool keeps_rows_on_host() const override { return train_from_kept_ && host_bytes_ > 0; }

  std::string take_descend_breakdown() override {
    std::string r = "group " + std::to_string(time_.group) + ", stage " + std::to_string(time_.stage) +
                    ", device " + std::to_string(time_.device) + ", scatter " + std::to_string(time_.scatter) +
                    ", page-locking kept batches " + std::to_string(time_.page_locking);
    if (time_.tallied > 0)
      r += "; node tallies on the device: " + std::to_string(time_.tallied) + " batches, taken (queued) in " +
           std::to_string(time_.tallies) + " s";
    if (!resident_.empty()) {
      std::size_t on_host = 0;
      std::size_t in_place = 0;
      for (const auto& [key, kept] : resident_) {
        on_host += kept.on_host() ? 1 : 0;
        in_place += kept.in_place != nullptr ? 1 : 0;
      }
      if (on_host < resident_.size())
        r += "; kept on the device: " + std::to_string(resident_.size() - on_host) + " batches, " +
             std::to_string(resident_bytes_ >> 20) + " MiB";
      if (on_host > 0)
        r += "; kept in page-locked host memory: " + std::to_string(on_host) + " batches, " +
             std::to_string(host_bytes_ >> 20) + " MiB (" + std::to_string(in_place) +
             " of them in place in the page cache; descended: " + std::to_string(time_.copied_ahead) +
             " copied ahead (" +
             (copy_sms_ > 0 ? "by " + std::to_string(copy_sms_) + " SMs" : std::string("by the copy engine")) +
             "), " + std::to_string(time_.copied_at_call) + " at the call)";
    }
    time_ = {};
    return r;
  }

 private:
  using Key = std::pair<std::int64_t, std::int64_t>;  // (shard, local_begin)
  // Page-locked host memory that batches kept on the host are carved from, in order; freed
  // with the last of them.
  struct HostChunk {
    cuda::PinnedBuffer memory;
    std::size_t used = 0;
  };
  // A shard file registered with the device where it lies in the page cache (its mapping
  // kept; unregistered before it is released), while kept batches point into it.
  struct InPlaceFile {
    std::shared_ptr<const Storage::MappedBytes> file;
    cuda::HostRegistration registration;
  };
  // Batches kept across levels (offer_resident): on the device (x), or in page-locked host
  // memory (host_bytes at host, in `chunk` or in place in a registered file; host_on_device:
  // its device address).
  struct Resident {
    cuda::DeviceBuffer x;
    std::shared_ptr<HostChunk> chunk;
    std::shared_ptr<InPlaceFile> in_place;
    unsigned char* host = nullptr;
    std::size_t host_bytes = 0;
    const unsigned char* host_on_device = nullptr;
    std::int64_t rows = 0;
    bool on_host() const { return host != nullptr; }
  };

  // Where a batch of `bytes` offered to be kept goes: the device while it has room (it
  // keeps max(16 GiB, a fifth of its memory) free for the levels' centroids and the
  // training), else page-locked host memory while that has room (half of the host's
  // available memory, shared by this node's ranks), else nowhere. Budgets are fixed at the
  // first call (MEGATAX_CUDA_DEVICE_KEEP_MIB / MEGATAX_CUDA_HOST_KEEP_MIB set them).
  enum class Tier { kNone, kDevice, kHost };
  Tier keep_tier(std::size_t bytes) {
    if (keep_device_ && may_keep(bytes)) return Tier::kDevice;
    if (keep_host_) {
      if (host_budget_ < 0)
        host_budget_ = host_keep_env_.value_or(
            static_cast<std::int64_t>(host_memory().available / 2 / static_cast<std::size_t>(node_local_ranks())));
      if (static_cast<std::int64_t>(host_bytes_ + bytes) <= host_budget_) return Tier::kHost;
    }
    return Tier::kNone;
  }
  bool may_keep(std::size_t bytes) {
    if (!keep_device_) return false;
    if (resident_budget_ < 0) {
      const auto [free_bytes, total_bytes] = res_.memory_info();
      const std::size_t reserve = std::max<std::size_t>(std::size_t{16} << 30, total_bytes / 5);
      resident_budget_ =
          device_keep_env_.value_or(free_bytes > reserve ? static_cast<std::int64_t>(free_bytes - reserve) : 0);
    }
    return static_cast<std::int64_t>(resident_bytes_ + bytes) <= resident_budget_;
  }

  // Page-locked host memory for a batch of n rows (`bytes`) kept under `key`, carved from
  // the current chunk; the caller has the rows copied into it from the device (the other
  // direction's copy engine, idle while a pass reads: no host memory bandwidth taken from
  // the reading threads; the batch buffer stays, a shard's batches all read into it).
  // nullptr, and no more keeping on the host, when the memory cannot be page-locked (or
  // would leave the host less than a quarter of its memory available: host_can_lock).
  Resident* keep_on_host(Key key, std::int64_t n, std::size_t bytes, bool normalise) {
    if (in_place_now_.rows != nullptr && !normalise) {
      if (Resident* r = keep_in_place(key, n, bytes)) return r;
    }
    const auto t0 = std::chrono::steady_clock::now();
    constexpr std::size_t kAlign = 4096;
    const std::size_t span = (bytes + kAlign - 1) / kAlign * kAlign;
    if (!host_chunk_ || host_chunk_->used + span > host_chunk_->memory.size()) {
      try {
        host_chunk_ = next_host_chunk(span);
      } catch (const Error&) {  // page-locked memory refused: later passes read the shards
        host_chunk_.reset();
        keep_host_ = false;
        return nullptr;
      }
    }
    Resident r;
    r.rows = n;
    r.chunk = host_chunk_;
    r.host = host_chunk_->memory.as<unsigned char>() + host_chunk_->used;
    r.host_bytes = bytes;
    host_chunk_->used += span;
    r.host_on_device = static_cast<const unsigned char*>(cuda::device_address(r.host));
    host_bytes_ += bytes;
    time_.page_locking += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return &resident_.emplace(key, std::move(r)).first->second;
  }

  // The descend()'s batch of n rows (`bytes`) kept under `key` where it lies in place
  // (offer_rows_in_place), its file registered with the device at its first batch; nullptr
  // when the file cannot be registered (or would leave the host less than a quarter of its
  // memory available: host_can_lock): then no batch is kept in place again, and the caller
  // copies.
  Resident* keep_in_place(Key key, std::int64_t n, std::size_t bytes) {
    const auto t0 = std::chrono::steady_clock::now();
    const Storage::MappedBytes& file = *in_place_now_.file;
    std::shared_ptr<InPlaceFile> f;
    if (const auto it = in_place_files_.find(file.data); it != in_place_files_.end()) {
      f = it->second.lock();
      if (f == nullptr || f->file.get() != &file) {  // released, or another file at that address since
        f = nullptr;
        in_place_files_.erase(it);
      }
    }
    if (f == nullptr) {
      try {
        if (const auto it = registering_.find(file.data); it != registering_.end()) {  // begun ahead
          auto ahead = std::move(it->second);
          registering_.erase(it);
          f = ahead.get();
          if (f->file.get() != &file) f = nullptr;  // (another file at that address: not this one)
        }
        if (f == nullptr) {
          if (!host_can_lock(static_cast<std::size_t>(file.size))) return nullptr;
          f = std::make_shared<InPlaceFile>();
          f->file = in_place_now_.file;
          f->registration = cuda::HostRegistration(file.data, static_cast<std::size_t>(file.size), /*read_only=*/true);
        }
      } catch (const Error&) {  // (a device that cannot, a driver that refuses): copies from now on
        in_place_ok_ = false;
        return nullptr;
      }
      in_place_files_[file.data] = f;
    }
    Resident r;
    r.rows = n;
    r.in_place = std::move(f);
    r.host = const_cast<unsigned char*>(in_place_now_.rows);  // (read only: no copy lands in place)
    r.host_bytes = bytes;
    r.host_on_device = static_cast<const unsigned char*>(cuda::device_address(r.host));
    host_bytes_ += bytes;
    time_.page_locking += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return &resident_.emplace(key, std::move(r)).first->second;
  }

  // A chunk of at least `span` bytes: the one page-locked ahead (on a thread of its own,
  // while batches are read: page-locking runs at ~20 GB/s, a pass reads faster), or a new
  // one; then the next is started, of MEGATAX_CUDA_HOST_CHUNK_MIB (4 GiB) or what the host
  // budget has left beyond this one, if anything (a small fit page-locks what it keeps).
  std::shared_ptr<HostChunk> next_host_chunk(std::size_t span) {
    std::shared_ptr<HostChunk> chunk;
    if (chunk_ahead_.valid()) chunk = chunk_ahead_.get();  // its error is this one's
    const auto left = [&] {
      return static_cast<std::size_t>(std::max<std::int64_t>(0, host_budget_ - static_cast<std::int64_t>(host_bytes_)));
    };
    if (!chunk || chunk->memory.size() < span) {
      const std::size_t bytes = std::max(span, std::min(host_chunk_bytes_, left()));
      if (!host_can_lock(bytes))
        throw_error(ErrorCode::kResourceExhausted, "cuda: no host memory left to keep batches in");
      chunk = std::make_shared<HostChunk>();
      chunk->memory = cuda::PinnedBuffer(bytes);
    }
    const std::size_t beyond = left() > chunk->memory.size() ? left() - chunk->memory.size() : 0;
    const std::size_t ahead = std::min(host_chunk_bytes_, beyond);
    if (ahead >= span && host_can_lock(ahead))
      chunk_ahead_ = std::async(std::launch::async, [this, ahead] {
        res_.activate();  // this thread's device: the registration's
        auto c = std::make_shared<HostChunk>();
        c->memory = cuda::PinnedBuffer(ahead);
        return c;
      });
    return chunk;
  }

  // The rows of a batch kept in page-locked host memory, on the device for a descent: copied
  // ahead after the last descent (copy_ahead; waited for here), else copied now on the main
  // stream. Returns the staging slot that holds them (until the next call).
  int stage_kept_on_host(std::map<Key, Resident>::const_iterator it) {
    const Resident& r = it->second;
    const std::size_t bytes = r.host_bytes;
    for (int s = 0; s < 2; ++s) {
      if (staged_[s].key != it->first || staged_[s].bytes != bytes) continue;
      staged_[s].ready.synchronize();
      ++time_.copied_ahead;
      return s;
    }
    Staged& st = staged_[0];
    st.ready.synchronize();  // a copy ahead for another batch may be under way
    st.buffer.reserve(bytes);
    cuda::copy_to_device(res_, st.buffer.data(), r.host, bytes);
    st.key = it->first;
    st.bytes = bytes;
    ++time_.copied_at_call;
    return 0;
  }

  // Waits for every copy of kept rows to the host queued so far (cheap once they are done:
  // kept_rows is called for every shard run of every node problem).
  void wait_for_kept_copies() const {
    if (!kept_copies_pending_.load(std::memory_order_acquire)) return;
    kept_copied_.synchronize();
    kept_copies_pending_.store(false, std::memory_order_release);
  }

  // The batch descend() kept on the host (pending_keep_), copied there from the device on the
  // copy stream, queued after the descent (its results' read-back would wait behind the copy
  // otherwise: one copy engine a direction) to run while the caller books the results and
  // reads the next batch; that batch lands in the same device memory only after it
  // (batch_rows_landed), and readers of kept rows wait for it (kept_copied_).
  void copy_kept_to_host() {
    if (pending_keep_.kept == nullptr) return;
    const PendingKeep p = std::exchange(pending_keep_, {});
    if (!copy_res_) copy_res_.emplace(res_.device());
    rows_ready_.record(res_);
    rows_ready_.enqueue_wait(*copy_res_);
    cuda::copy_to_host_async(*copy_res_, p.kept->host, p.source, p.kept->host_bytes);
    kept_copied_.record(*copy_res_);
    kept_copies_pending_.store(true, std::memory_order_release);
  }

  // Starts copying the batch kept on the host after `it` (key order: a lone worker's shard
  // order) into staging slot `slot`, on copy_res_'s stream: by a kernel on copy_sms_ SMs
  // reading it over the bus (cuda::copy_by_sms), queued before the descent of `it`, which it
  // overlaps; or (copy_sms_ = 0) by the copy engine, queued once the descent is done, to
  // overlap only the caller's bookkeeping: an engine copy queued before the descent holds
  // back the descent's own small uploads (the parents, the groups' tiles) until it is done,
  // host->device copies waiting in turn (measured: no overlap). The slot's last batch was
  // descended by a call that has returned (each waits for its results).
  void copy_ahead(std::map<Key, Resident>::const_iterator it, int slot) {
    auto next = std::next(it);
    while (next != resident_.end() && !next->second.on_host()) ++next;
    Staged& ahead = staged_[slot];
    ahead.ready.synchronize();
    ahead.key = Key{-1, -1};
    if (next == resident_.end()) return;
    if (!copy_res_) copy_res_.emplace(res_.device());
    const std::size_t bytes = next->second.host_bytes;
    ahead.buffer.reserve(bytes);
    if (copy_sms_ > 0 && next->second.host_on_device != nullptr) {
      cuda::copy_by_sms(*copy_res_, ahead.buffer.data(), next->second.host_on_device, bytes, copy_sms_);
    } else {
      cuda::copy_to_device(*copy_res_, ahead.buffer.data(), next->second.host, bytes);
    }
    ahead.ready.record(*copy_res_);
    ahead.key = next->first;
    ahead.bytes = bytes;
  }

  // descend() of n rows, from `host` (any memory) or from `on_device` (n rows, dense, in the
  // compute dtype); `keep`: the key to keep host rows under on the device (-1: none);
  // `normalise`: host rows are raw, to be normalised on the device (cosine), kept normalised.
  void descend_impl(const Tree& tree, int level, std::int64_t n, const MatrixView* host, const void* on_device,
                    Key keep, bool normalise, const std::int32_t* prev, std::int32_t* node, std::int32_t* child,
                    float* dist, int threads) {
    res_.activate();
    activate_level(tree, level);
    const TreeLevel& lv = tree.level(level);
    const std::int64_t d = tree.dim();
    const std::int64_t n_parents = tree.nodes(level - 1);
    auto t = std::chrono::steady_clock::now();
    auto lap = [&t](double& into) {
      const auto now = std::chrono::steady_clock::now();
      into += std::chrono::duration<double>(now - t).count();
      t = now;
    };
    const std::size_t row_bytes = static_cast<std::size_t>(d) * dtype_size(compute_);
    const void* source = on_device;  // the whole batch on the device, if it gets there
    Resident* kept_on_host = nullptr;  // where the batch is kept on the host, if it is
    if (source == nullptr) {
      const MatrixView& rows = *host;
      const auto* first_byte = static_cast<const unsigned char*>(rows.data);
      const bool in_batch_buffer = rows.dtype == compute_ && rows.stride == d &&
                                   first_byte >= batch_host_.as<unsigned char>() &&
                                   first_byte + static_cast<std::size_t>(n) * row_bytes <=
                                       batch_host_.as<unsigned char>() + batch_host_.size();
      // Rows handed where they lie (expect_rows_in_place), the host not having read them:
      // copied over the bus from the registered file and checked here.
      const bool where_they_lie = !in_batch_buffer && in_place_now_.rows != nullptr &&
                                  first_byte == in_place_now_.rows && rows.dtype == compute_ && rows.stride == d;
      std::unique_lock<std::mutex> landing_lock(landing_mutex_);
      const bool landed = in_batch_buffer && first_byte == batch_host_.as<unsigned char>() &&
                          landing_.dst != nullptr && landing_.rows == n && landing_.landed == n;
      if (landed) {
        // Copied while it was read (batch_rows_landed): kept when offered under its key.
        source = landing_.dst;
        if (landing_.kept.data() != nullptr) {
          if (keep == landing_.key) {
            resident_bytes_ += static_cast<std::size_t>(n) * row_bytes;
            Resident r;
            r.x = std::move(landing_.kept);
            r.rows = n;
            resident_.emplace(keep, std::move(r));
          } else {
            batch_dev_ = std::move(landing_.kept);  // the copy's memory becomes the scratch
          }
        } else if (landing_.keep_on_host && keep == landing_.key) {
          kept_on_host = keep_on_host(keep, n, static_cast<std::size_t>(n) * row_bytes, normalise);
        }
        landing_ = {};
      } else if (in_batch_buffer || where_they_lie) {
        landing_ = {};
        // The whole batch goes to the device as it is (page-locked), queued before the rows
        // are grouped on the host (the grouping then overlaps the copy): into memory it
        // keeps when offered and it fits, else into the batch buffer. Rows where they lie
        // are kept there first (their file registered: the copy then reads it over the bus).
        const std::size_t bytes = static_cast<std::size_t>(n) * row_bytes;
        void* dst = nullptr;
        const Tier tier = keep.first >= 0 && resident_.count(keep) == 0 ? keep_tier(bytes) : Tier::kNone;
        if (tier == Tier::kDevice) {
          Resident r;
          r.x = cuda::DeviceBuffer(bytes);
          r.rows = n;
          dst = r.x.data();
          resident_bytes_ += bytes;
          resident_.emplace(keep, std::move(r));
        } else {
          batch_dev_.reserve(bytes);
          dst = batch_dev_.data();
          kept_copied_.enqueue_wait(res_);  // the last batch kept on the host has left batch_dev_
        }
        if (where_they_lie && tier == Tier::kHost) kept_on_host = keep_on_host(keep, n, bytes, normalise);
        cuda::copy_to_device(res_, dst, rows.data, bytes);
        source = dst;
        if (!where_they_lie && tier == Tier::kHost) kept_on_host = keep_on_host(keep, n, bytes, normalise);
        if (where_they_lie) {
          non_finite_dev_.reserve(sizeof(std::int64_t));
          non_finite_host_.reserve(sizeof(std::int64_t));
          cuda::find_non_finite_row(res_, MatrixView(dst, n, d, compute_, d), non_finite_dev_.as<std::int64_t>());
          cuda::copy_to_host_async(res_, non_finite_host_.data(), non_finite_dev_.data(), sizeof(std::int64_t));
          rows_checked_ = true;  // read once the descent's results are back (every path waits for them)
        }
      }
    }
    if (normalise) {
      // Raw rows of a cosine pass, now on the device (kept ones too): normalised in place,
      // the host's bits (the staging path below would convert before normalising).
      if (source == nullptr)
        throw_error(ErrorCode::kInternal, "cuda descend: rows to normalise are not in the batch buffer");
      cuda::normalise_rows(res_, MatrixView(source, n, d, compute_, d));
    }
    // Kept on the host: the rows as the device has them (normalised), copied there once the
    // descent is done (copy_kept_to_host).
    if (kept_on_host != nullptr && kept_on_host->in_place == nullptr) pending_keep_ = {kept_on_host, source};
    // Group rows by parent, keeping only parents with children. One parent with children
    // and every row under it (level 1): the rows are their own group order (no grouping, no
    // gather on the device). Rows on the device under several parents are grouped there.
    std::vector<std::int64_t> row_begin{0}, centroid_begin, centroid_end, group_parent;
    std::vector<std::int64_t> active_order;  // rows of the active groups, in group order
    const bool one_group = n_parents == 1 && lv.child_begin[1] > lv.child_begin[0] &&
                           std::all_of(prev, prev + n, [](std::int32_t p) { return p == 0; });
    if (one_group) {
      row_begin.push_back(n);
      centroid_begin.push_back(lv.child_begin[0]);
      centroid_end.push_back(lv.child_begin[1]);
      group_parent.push_back(0);
      if (source == nullptr) {  // the host staging below walks the order
        active_order.resize(static_cast<std::size_t>(n));
        for (std::int64_t i = 0; i < n; ++i) active_order[static_cast<std::size_t>(i)] = i;
      }
    } else if (source != nullptr) {
      descend_grouped_on_device(tree, n, n_parents, source, prev, node, child, dist, threads, t);
      return;
    } else {
      RowGroups groups = group_rows_by_parent(prev, n, n_parents, threads, &host_);
      const std::vector<std::int64_t>& start = groups.start;
      const std::vector<std::int64_t>& order = groups.order;
      std::vector<std::int64_t> src_begin;  // each active group's first position in `order`
      for (std::int64_t j = -1; j < n_parents; ++j) {
        const std::int64_t b = start[static_cast<std::size_t>(j + 1)], e = start[static_cast<std::size_t>(j + 2)];
        if (b == e) continue;
        const bool has_children = j >= 0 && lv.child_begin[static_cast<std::size_t>(j + 1)] >
                                                lv.child_begin[static_cast<std::size_t>(j)];
        if (!has_children) {
          for (std::int64_t t = b; t < e; ++t) {
            const std::int64_t i = order[static_cast<std::size_t>(t)];
            node[i] = -1;
            child[i] = -1;
          }
          continue;
        }
        src_begin.push_back(b);
        row_begin.push_back(row_begin.back() + (e - b));
        centroid_begin.push_back(lv.child_begin[static_cast<std::size_t>(j)]);
        centroid_end.push_back(lv.child_begin[static_cast<std::size_t>(j + 1)]);
        group_parent.push_back(j);
      }
      if (row_begin.back() == n) {
        active_order = std::move(groups.order);  // every row is active: the order as it is
      } else {
        active_order.resize(static_cast<std::size_t>(row_begin.back()));
        for_each_group_slice(row_begin, threads, host_, [&](std::size_t g, std::int64_t t0, std::int64_t t1) {
          std::copy(order.begin() + src_begin[g] + (t0 - row_begin[g]), order.begin() + src_begin[g] + (t1 - row_begin[g]),
                    active_order.begin() + t0);
        });
      }
    }
    const std::int64_t m = one_group ? n : static_cast<std::int64_t>(active_order.size());
    lap(time_.group);
    if (m == 0) {
      res_.synchronize();  // a queued copy of the batch is done: its buffer is the caller's again
      return;
    }
    const void* x_rows = x_dev_.data();  // the active rows in group order, on the device
    if (!(one_group && source != nullptr)) x_dev_.reserve(static_cast<std::size_t>(m) * row_bytes);
    labels_dev_.reserve(static_cast<std::size_t>(m) * sizeof(std::int32_t));
    dist_dev_.reserve(static_cast<std::size_t>(m) * sizeof(float));
    out_host_.reserve(static_cast<std::size_t>(m) * 8);
    if (source != nullptr && one_group) {
      x_rows = source;
      lap(time_.stage);
    } else if (source != nullptr) {
      // The active rows are gathered on the device in group order (its bandwidth, not the host's).
      order_dev_.reserve(static_cast<std::size_t>(m) * sizeof(std::int64_t));
      cuda::copy_to_device(res_, order_dev_.data(), active_order.data(), static_cast<std::size_t>(m) * sizeof(std::int64_t));
      cuda::gather_rows(res_, source, row_bytes, order_dev_.as<std::int64_t>(), m, x_dev_.data());
      res_.synchronize();  // active_order (pageable) and the batch buffer are reused by the caller
      x_rows = x_dev_.data();
      lap(time_.stage);
    } else {
      const MatrixView& rows = *host;
      // Stage the active rows in the compute dtype (pinned), then copy them.
      staging_.reserve(static_cast<std::size_t>(m) * row_bytes);
      auto* staged = static_cast<unsigned char*>(staging_.data());
      constexpr std::int64_t kChunk = 1024;  // rows per task
      const std::int64_t chunks = (m + kChunk - 1) / kChunk;
      parallel_for(resolve_threads(threads, chunks), chunks, [&](std::int64_t c, int) {
        std::vector<float> tmp(static_cast<std::size_t>(d));
        for (std::int64_t t = c * kChunk; t < std::min(m, (c + 1) * kChunk); ++t)
          cluster::convert_row(rows.dtype, rows.row(active_order[static_cast<std::size_t>(t)]),
                               static_cast<std::size_t>(d), compute_,
                               staged + static_cast<std::size_t>(t) * row_bytes, tmp.data());
      });
      lap(time_.stage);
      cuda::copy_to_device(res_, x_dev_.data(), staging_.data(), static_cast<std::size_t>(m) * row_bytes);
      x_rows = x_dev_.data();
    }
    cuda::GroupedAssignArgs a;
    a.metric = tree.kernel_metric();
    a.x = MatrixView(x_rows, m, d, compute_, d);
    a.centroids = MatrixView(centroids_.data(), k_, d, compute_, d);
    a.c_norms = a.metric == Metric::kL2 ? c_norms_.as<float>() : nullptr;
    a.row_begin = std::move(row_begin);
    a.centroid_begin = std::move(centroid_begin);
    a.centroid_end = std::move(centroid_end);
    a.labels = labels_dev_.as<std::int32_t>();
    a.distances = dist_dev_.as<float>();
    const std::vector<std::int64_t> rb = a.row_begin;
    cuda::assign_grouped(res_, a);
    auto* lab = out_host_.as<std::int32_t>();
    auto* dd = reinterpret_cast<float*>(lab + m);
    cuda::copy_to_host(res_, lab, labels_dev_.data(), static_cast<std::size_t>(m) * sizeof(std::int32_t));
    cuda::copy_to_host(res_, dd, dist_dev_.data(), static_cast<std::size_t>(m) * sizeof(float));
    lap(time_.device);
    for_each_group_slice(rb, threads, host_, [&](std::size_t g, std::int64_t t0, std::int64_t t1) {
      const std::int64_t first_child = lv.child_begin[static_cast<std::size_t>(group_parent[g])];
      for (std::int64_t t = t0; t < t1; ++t) {
        const std::int64_t i = one_group ? t : active_order[static_cast<std::size_t>(t)];
        child[i] = lab[t];
        node[i] = static_cast<std::int32_t>(first_child + lab[t]);
        dist[i] = dd[t];
      }
    });
    lap(time_.scatter);
  }

  // descend_impl() of n rows on the device (`source`, dense, the compute dtype) under
  // several parents: the rows are sorted by parent on the device (stable: each group in row
  // order, as the host's counting sort has them) and counted per parent there for the
  // groups' table, gathered in that order, assigned, and their results put back in row
  // order on the device; the host copies them out of one page-locked read-back. While a
  // shard is tallied (begin_tallies), the results in row order are tallied per node there.
  void descend_grouped_on_device(const Tree& tree, std::int64_t n, std::int64_t n_parents, const void* source,
                                 const std::int32_t* prev, std::int32_t* node, std::int32_t* child, float* dist,
                                 int threads, std::chrono::steady_clock::time_point t) {
    auto lap = [&t](double& into) {
      const auto now = std::chrono::steady_clock::now();
      into += std::chrono::duration<double>(now - t).count();
      t = now;
    };
    const TreeLevel& lv = tree.level(level_);
    const std::int64_t d = dim_;
    const std::size_t row_bytes = static_cast<std::size_t>(d) * dtype_size(compute_);
    const auto nn = static_cast<std::size_t>(n);
    // The parents to the device, sorted there, the groups counted as the sorted parents' runs
    // (one wait for the groups' table: the host's own count of a level-3 batch's ~10^4
    // parents took ~0.45 ms, longer than the device's sort and count).
    prev_host_.reserve(nn * sizeof(std::int32_t));
    std::memcpy(prev_host_.data(), prev, nn * sizeof(std::int32_t));
    prev_dev_.reserve(nn * sizeof(std::int32_t));
    order_dev_.reserve(nn * sizeof(std::int64_t));
    sorted_parent_dev_.reserve(nn * sizeof(std::int32_t));
    cuda::copy_to_device(res_, prev_dev_.data(), prev_host_.data(), nn * sizeof(std::int32_t));
    cuda::order_rows_by_parent(res_, prev_dev_.as<std::int32_t>(), n, child_begin_dev_.as<std::int64_t>(), n_parents,
                               order_dev_.as<std::int64_t>(), sorted_parent_dev_.as<std::int32_t>());
    const auto most_runs = static_cast<std::size_t>(std::min<std::int64_t>(n, n_parents + 1));
    groups_dev_.reserve(8 + most_runs * 8);
    groups_host_.reserve(8 + most_runs * 8);
    auto* runs_dev = groups_dev_.as<std::int64_t>();
    auto* run_parent_dev = reinterpret_cast<std::int32_t*>(runs_dev + 1);
    auto* run_rows_dev = run_parent_dev + most_runs;
    cuda::count_sorted_parents(res_, sorted_parent_dev_.as<std::int32_t>(), n, run_parent_dev, run_rows_dev,
                               runs_dev);
    cuda::copy_to_host_async(res_, groups_host_.data(), groups_dev_.data(), 8 + most_runs * 8);
    res_.synchronize();
    const auto runs = static_cast<std::size_t>(*groups_host_.as<std::int64_t>());
    const auto* run_parent = reinterpret_cast<const std::int32_t*>(groups_host_.as<std::int64_t>() + 1);
    const auto* run_rows = run_parent + most_runs;
    cuda::GroupedAssignArgs a;
    a.row_begin.assign(1, 0);
    for (std::size_t r = 0; r < runs && run_parent[r] < n_parents; ++r) {  // (the last run: no children)
      const auto j = static_cast<std::size_t>(run_parent[r]);
      a.row_begin.push_back(a.row_begin.back() + run_rows[r]);
      a.centroid_begin.push_back(lv.child_begin[j]);
      a.centroid_end.push_back(lv.child_begin[j + 1]);
    }
    const std::int64_t m = a.row_begin.back();
    lap(time_.group);
    x_dev_.reserve(static_cast<std::size_t>(std::max<std::int64_t>(m, 1)) * row_bytes);
    labels_dev_.reserve(static_cast<std::size_t>(std::max<std::int64_t>(m, 1)) * sizeof(std::int32_t));
    dist_dev_.reserve(static_cast<std::size_t>(std::max<std::int64_t>(m, 1)) * sizeof(float));
    if (m > 0) cuda::gather_rows(res_, source, row_bytes, order_dev_.as<std::int64_t>(), m, x_dev_.data());
    lap(time_.stage);
    if (m > 0) {
      a.metric = tree.kernel_metric();
      a.x = MatrixView(x_dev_.data(), m, d, compute_, d);
      a.centroids = MatrixView(centroids_.data(), k_, d, compute_, d);
      a.c_norms = a.metric == Metric::kL2 ? c_norms_.as<float>() : nullptr;
      a.labels = labels_dev_.as<std::int32_t>();
      a.distances = dist_dev_.as<float>();
      cuda::assign_grouped(res_, a);
    }
    // Row-order results: node, child and distance arrays of n entries each.
    row_out_dev_.reserve(nn * 12);
    auto* node_dev = row_out_dev_.as<std::int32_t>();
    auto* child_dev = node_dev + n;
    auto* dist_dev = reinterpret_cast<float*>(child_dev + n);
    cuda::scatter_descent(res_, order_dev_.as<std::int64_t>(), sorted_parent_dev_.as<std::int32_t>(),
                          labels_dev_.as<std::int32_t>(), dist_dev_.as<float>(), m, n,
                          child_begin_dev_.as<std::int64_t>(), node_dev, child_dev, dist_dev);
    out_host_.reserve(nn * 12);
    cuda::copy_to_host(res_, out_host_.data(), row_out_dev_.data(), nn * 12);  // waits: the batch is done with
    // The shard's tallies (begin_tallies), queued after the read-back: they run while the
    // host copies the results out (the next queued work waits for them, in stream order).
    if (tally_this_batch_) {
      cuda::tally_rows_by_node(res_, node_dev, dist_dev, n, tally_nodes_, tally_dev_.as<cuda::DeviceNodeTally>());
      tallied_on_device_ = true;
    }
    lap(time_.device);
    const auto* on = out_host_.as<std::int32_t>();
    const auto* oc = on + n;
    const auto* od = reinterpret_cast<const float*>(oc + n);
    const int T = resolve_threads(threads, n / 32768);
    host_.run(T, [&](std::int64_t s, int) {
      const std::int64_t i0 = n * s / T, i1 = n * (s + 1) / T;
      std::memcpy(node + i0, on + i0, static_cast<std::size_t>(i1 - i0) * sizeof(std::int32_t));
      std::memcpy(child + i0, oc + i0, static_cast<std::size_t>(i1 - i0) * sizeof(std::int32_t));
      for (std::int64_t i = i0; i < i1; ++i)
        if (on[i] >= 0) dist[i] = od[i];  // a row stopped above keeps its distance
    });
    lap(time_.scatter);
  }

  // A prepared level parked on the device while another is current (keep_prepared_levels).
  struct LevelOnDevice {
    cuda::DeviceBuffer centroids, c_norms, child_begin;
    std::int64_t k = 0;
  };
  void park_level() {
    kept_levels_[level_] = LevelOnDevice{std::move(centroids_), std::move(c_norms_), std::move(child_begin_dev_), k_};
    level_ = -1;
  }
  // Makes `level` the current one (prepared last, or parked): its centroids, norms and child
  // ranges in the members descend() reads.
  void activate_level(const Tree& tree, int level) {
    if (level == level_) return;
    const auto it = kept_levels_.find(level);
    if (it == kept_levels_.end())
      throw_error(ErrorCode::kInternal, "cuda descend: level " + std::to_string(level) +
                                            " was not prepared (prepare_level)");
    LevelOnDevice next = std::move(it->second);
    kept_levels_.erase(it);
    if (level_ >= 0) park_level();
    centroids_ = std::move(next.centroids);
    c_norms_ = std::move(next.c_norms);
    child_begin_dev_ = std::move(next.child_begin);
    k_ = next.k;
    level_ = level;
  }

  // Entry points that allocate, free or launch activate res_ first: they run on the engine's
  // and the reading threads, whose current device is GPU 0 until set (memory put there by a
  // reading thread made an mpirun's rank 1 fault on cuda:1).
  cuda::Resources res_;
  DType compute_;
  AssignerPool pool_;
  // Kept threads for descend()'s host loops (grouping rows, scattering results): a pass
  // runs them for every batch, where starting threads each time costs a good part.
  WorkerPool host_{0};
  int level_ = -1;
  std::int64_t k_ = 0;
  bool keep_levels_ = false;
  std::map<int, LevelOnDevice> kept_levels_;
  // descend(): grouping rows by parent, staging them in the compute dtype (pinned; or the
  // batch's copy and gather on the device), the device (copies in and out, kernel, waits),
  // scattering the results, taking the shards' tallies (seconds).
  struct {
    double group = 0, stage = 0, device = 0, scatter = 0, page_locking = 0, tallies = 0;
    std::int64_t copied_ahead = 0, copied_at_call = 0;  // batches kept on the host, descended
    std::int64_t tallied = 0;                           // batches tallied on the device
  } time_;
  cuda::DeviceBuffer centroids_, c_norms_, x_dev_, labels_dev_, dist_dev_, batch_dev_, order_dev_;
  // Rows handed where they lie: the first row with a NaN or an infinity (-1: none), on the
  // device and read back (non_finite_row; rows_checked_: the last descend() checked some).
  cuda::DeviceBuffer non_finite_dev_;
  cuda::PinnedBuffer non_finite_host_;
  bool rows_checked_ = false;
  // The descent's grouping on the device (descend_grouped_on_device): the level's child
  // ranges, a batch's parents, their sorted parents, its results in row order; on the host,
  // rows per parent (zero between calls) and the parents a batch touched.
  cuda::DeviceBuffer child_begin_dev_, prev_dev_, sorted_parent_dev_, row_out_dev_;
  cuda::PinnedBuffer prev_host_;
  // descend_grouped_on_device's groups: the sorted parents' runs, on the device and read back.
  cuda::DeviceBuffer groups_dev_;
  cuda::PinnedBuffer groups_host_;
  std::map<Key, Resident> resident_;
  std::size_t resident_bytes_ = 0, host_bytes_ = 0;
  std::int64_t resident_budget_ = -1, host_budget_ = -1;  // bytes; -1: not yet fixed
  // The budgets' settings, read (and checked: a bad value fails the fit at its start) here.
  const std::optional<std::int64_t> device_keep_env_ = env_mib("MEGATAX_CUDA_DEVICE_KEEP_MIB"),
                                    host_keep_env_ = env_mib("MEGATAX_CUDA_HOST_KEEP_MIB");
  Key offered_{-1, -1};
  // offer_rows_in_place's rows for the next descend(), and that descend()'s (in_place_now_).
  struct InPlaceRows {
    std::shared_ptr<const Storage::MappedBytes> file;
    const unsigned char* rows = nullptr;
  };
  InPlaceRows offered_in_place_, in_place_now_;
  // The files registered in place, by their bytes' address (kept by the batches in them), and
  // those being registered ahead (expect_rows_in_place).
  std::map<const unsigned char*, std::weak_ptr<InPlaceFile>> in_place_files_;
  std::map<const unsigned char*, std::future<std::shared_ptr<InPlaceFile>>> registering_;
  bool in_place_ok_ = env_switch("MEGATAX_CUDA_IN_PLACE", true);
  bool normalise_next_ = false;  // normalise_next_rows()
  // MEGATAX_CUDA_RESIDENT: unset or 1 keeps batches on the device, then on the host; 0
  // keeps none (every pass reads the shards); "device" or "host" only there.
  static bool resident_mode_allows(const char* where) {
    const auto v = env_choice("MEGATAX_CUDA_RESIDENT", {"0", "1", "device", "host"});
    return !v.has_value() || *v == "1" || *v == where;
  }
  bool keep_device_ = resident_mode_allows("device");
  bool keep_host_ = resident_mode_allows("host");
  // MEGATAX_CUDA_COPY_SMS: the SMs that copy a batch kept on the host to the device for its
  // descent (copy_ahead), 0 for the copy engine. 16 blocks of copy_by_sms keep 0.5 MiB of
  // reads out, enough for the bus's rate (4 took 1.7x as long in the 20M fit, 32 no less);
  // levels 2 and 3's passes of a 20M x 1024 f16 fit 0.90-0.93 / 1.02-1.08 s -> 0.82-0.84 /
  // 0.83-0.89 s against 0.74 s for X over the bus (H200, bench/RESULTS.md session 50).
  int copy_sms_ = static_cast<int>(env_int("MEGATAX_CUDA_COPY_SMS", 0, 1024).value_or(16));
  // Batches kept on the host, copied to the device for a descent (stage_kept_on_host): two
  // buffers, one descended while the next batch is copied into the other on copy_res_'s
  // stream (made at its first use).
  struct Staged {
    cuda::DeviceBuffer buffer;
    Key key{-1, -1};
    std::size_t bytes = 0;
    cuda::Event ready;  // the copy into buffer
  };
  Staged staged_[2];
  std::optional<cuda::Resources> copy_res_;
  // Batches kept on the host are copied there on copy_res_'s stream: rows_ready_ marks the
  // batch complete on the device (res_), kept_copied_ the last such copy done.
  cuda::Event rows_ready_, kept_copied_;
  // Set with each such copy queued, cleared by the first reader that waits for them all.
  mutable std::atomic<bool> kept_copies_pending_{false};
  // The batch the current descend() keeps on the host, and where its rows are on the device.
  struct PendingKeep {
    Resident* kept = nullptr;
    const void* source = nullptr;
  };
  PendingKeep pending_keep_;
  // The chunk batches kept on the host are carved from now; the size of a new one (at least
  // the batch's): MEGATAX_CUDA_HOST_CHUNK_MIB, default 4 GiB (a page-locking's cost grows
  // with the number made before it: on an H200 host 160 x 256 MiB took 14.7 s, 40 x 1 GiB
  // 8.2 s, 10 x 4 GiB 2.2 s).
  std::shared_ptr<HostChunk> host_chunk_;
  std::future<std::shared_ptr<HostChunk>> chunk_ahead_;  // next_host_chunk's
  std::size_t host_chunk_bytes_ = static_cast<std::size_t>(env_mib("MEGATAX_CUDA_HOST_CHUNK_MIB").value_or(std::int64_t{4} << 30));
  bool train_from_kept_ = env_switch("MEGATAX_CUDA_TRAIN_FROM_KEPT", true);
  // The shard's per-node tallies (begin_tallies .. take_tallies): tally_nodes_ of them in
  // tally_dev_ while on (0: off); the array's first tally_zero_bytes_ are zero when
  // tallies_zero_ (after a take). Taken through tally_out_dev_ into a read-back of the pool.
  bool device_tallies_ = env_switch("MEGATAX_CUDA_DEVICE_TALLIES", true);
  std::int64_t tally_nodes_ = 0, tally_rows_ = 0;  // (tally_rows_: rows descended since begin_tallies)
  bool tally_this_batch_ = false;   // within descend_resident() or descend() while tallying
  bool tallied_on_device_ = false;  // by the descent on the way (descend_grouped_on_device)
  bool tallies_zero_ = false;
  std::size_t tally_zero_bytes_ = 0;
  cuda::DeviceBuffer tally_dev_, tally_out_dev_, tally_node_dev_;
  struct TallyReadBack {
    cuda::PinnedBuffer host;
    cuda::Event copied;
    ~TallyReadBack() {  // (a future dropped unread: its copy may still be on the way)
      try {
        copied.synchronize();
      } catch (...) {
      }
    }
  };
  std::mutex tally_pool_mutex_;
  std::vector<std::shared_ptr<TallyReadBack>> tally_pool_;
  cuda::PinnedBuffer staging_, out_host_, batch_host_;
  // The batch whose rows are being copied as they are read (batch_rows_landed).
  struct Landing {
    Key key{-1, -1};
    std::int64_t rows = 0, landed = 0;
    unsigned char* dst = nullptr;  // landing.kept's memory or batch_dev_'s
    cuda::DeviceBuffer kept;       // when the batch may be kept on the device
    bool keep_on_host = false;     // when it may be kept on the host instead
  };
  std::mutex landing_mutex_;
  Landing landing_;
  std::int64_t dim_ = 0;  // of the prepared level's tree
};

}  // namespace

bool have_cuda_backend() noexcept { return true; }

std::unique_ptr<ComputeBackend> make_cuda_backend(DType compute_dtype, int gpu) {
  const int count = cuda::device_count();
  if (count == 0)
    throw_error(ErrorCode::kFailedPrecondition,
                "device 'cuda': no CUDA device is visible to this process (check nvidia-smi and "
                "CUDA_VISIBLE_DEVICES), or use device 'cpu'");
  const int id = gpu >= 0 ? gpu : local_rank() % count;
  if (id >= count)
    throw_error(ErrorCode::kInvalidArgument, "gpu " + std::to_string(id) + " does not exist: " +
                                                 std::to_string(count) + " CUDA device(s) visible");
  return std::make_unique<CudaBackend>(compute_dtype, id);
}

}  // namespace megatax::taxonomy
