#include "cluster/cuda_batch_kmeans.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cluster/cuda_assigner.h"
#include "core/parallel.h"
#include "megatax/error.h"

namespace megatax::cluster {
namespace {

using Clock = std::chrono::steady_clock;

// Adds the seconds since t to `into` and moves t to now.
void lap(Clock::time_point& t, double& into) {
  const auto now = Clock::now();
  into += std::chrono::duration<double>(now - t).count();
  t = now;
}

constexpr std::size_t kStagingBytes = std::size_t{128} << 20;  // host -> device chunks
constexpr std::int64_t kMaxCand = cuda::kMaxRowDistanceCandidates;

}  // namespace

CudaBatchKMeans::CudaBatchKMeans(int device, Metric metric, DType compute_dtype)
    : res_(device), metric_(metric), compute_(compute_dtype), host_(0) {}

unsigned char* CudaBatchKMeans::points_buffer(int slot, std::size_t bytes) {
  res_.activate();  // this device on the calling thread (allocations included)
  if (slot < 0 || slot > 1)
    throw_error(ErrorCode::kInvalidArgument, "CudaBatchKMeans::points_buffer: slot " + std::to_string(slot));
  // Groups differ in size a little: grow with headroom (page-locking is slow).
  if (points_host_[slot].size() < bytes) points_host_[slot].reserve(std::max<std::size_t>(bytes + bytes / 4, 16));
  return points_host_[slot].as<unsigned char>();
}

std::int64_t CudaBatchKMeans::lay_out(std::span<const MatrixView> xs) {
  res_.activate();  // this device on the calling thread (allocations included)
  const std::size_t P = xs.size();
  dim_ = P > 0 ? xs[0].dim : 0;
  row_begin_.assign(P + 1, 0);
  for (std::size_t p = 0; p < P; ++p) row_begin_[p + 1] = row_begin_[p] + xs[p].rows;
  const std::int64_t n = row_begin_[P];
  x_dev_.grow(static_cast<std::size_t>(n * dim_) * dtype_size(compute_));
  have_global_labels_ = false;
  steps_begun_ = false;
  last_skipped_.clear();
  seed_rows_.clear();
  points_exact_ = true;
  for (const auto& x : xs) points_exact_ = points_exact_ && x.dtype == compute_;
  return n;
}

CudaBatchKMeans::~CudaBatchKMeans() {
  try {
    drop_ahead();  // (its buffers go with this object)
  } catch (...) {  // a destructor does not throw; the stream's error was someone's to report
  }
}

void CudaBatchKMeans::prepare_from_device(std::span<const MatrixView> xs, std::span<const void* const> rows) {
  res_.activate();  // this device on the calling thread (allocations included)
  std::int64_t want = 0;
  for (const auto& x : xs) want += x.rows;
  // The rows gathered ahead when they are these (the same addresses in the same order).
  bool gathered = false;
  if (in_flight_.has_value()) {
    const Ahead& a = *in_flight_;
    gathered = a.rows == want && static_cast<std::int64_t>(rows.size()) == want && (xs.empty() || a.dim == xs[0].dim) &&
               (want == 0 || std::memcmp(a.at.data(), rows.data(), rows.size() * sizeof(void*)) == 0);
    const auto t_wait = Clock::now();
    drop_ahead();  // waits for it (usually done: it ran while the last batch trained)
    if (gathered) {
      std::swap(x_dev_, x_ahead_);
      time_.ahead_wait += std::chrono::duration<double>(Clock::now() - t_wait).count();
      ++time_.gathers_ahead;
    }
  }
  const auto t_here = Clock::now();
  const std::int64_t n = lay_out(xs);  // (x_dev_ large enough when gathered)
  if (!points_exact_ || static_cast<std::int64_t>(rows.size()) != n)
    throw_error(ErrorCode::kInvalidArgument, "CudaBatchKMeans::prepare_from_device: " + std::to_string(rows.size()) +
                                                 " rows for " + std::to_string(n) + " points, which must be " +
                                                 dtype_name(compute_));
  if (n > 0 && !gathered) {
    // The addresses go over the bus (8 bytes a row; pageable: staged before the copy
    // returns), the rows do not, unless kept in host memory (then read by a few SMs:
    // set_rows_over_bus).
    row_at_dev_.grow(static_cast<std::size_t>(n) * sizeof(void*));
    cuda::copy_to_device(res_, row_at_dev_.data(), rows.data(), static_cast<std::size_t>(n) * sizeof(void*));
    cuda::gather_rows_at(res_, row_at_dev_.as<const void*>(), static_cast<std::size_t>(dim_) * dtype_size(compute_),
                         n, x_dev_.data(), rows_over_bus_ ? kBusGatherSms : 0);
    ++time_.gathers_here;
  }
  const auto t_next = Clock::now();
  time_.here_queue += std::chrono::duration<double>(t_next - t_here).count();
  if (deferred_.has_value()) {  // the batch after this one's, asked for while the last trained
    Ahead next = std::move(*deferred_);
    deferred_.reset();
    start_ahead(std::move(next));
  }
  time_.ahead_queue += std::chrono::duration<double>(Clock::now() - t_next).count();
}

void CudaBatchKMeans::prefetch_from_device(std::span<const MatrixView> xs, std::span<const void* const> rows) {
  res_.activate();  // this device on the calling thread (allocations included)
  if (deferred_.has_value()) return;  // one asked for already
  Ahead a;
  for (const auto& x : xs) a.rows += x.rows;
  if (a.rows == 0 || static_cast<std::int64_t>(rows.size()) != a.rows || xs[0].dtype != compute_) return;
  a.dim = xs[0].dim;
  const std::size_t bytes = rows.size() * sizeof(void*);
  if (spare_at_.size() >= bytes) a.at = std::move(spare_at_);
  if (a.at.size() < bytes) a.at.reserve(bytes + bytes / 4);  // (batches differ in size a little)
  std::memcpy(a.at.data(), rows.data(), bytes);
  deferred_ = std::move(a);  // started by the next prepare_from_device, after its own rows
}

void CudaBatchKMeans::start_ahead(Ahead a) {
  if (!ahead_res_.has_value()) ahead_res_.emplace(res_.device());
  const std::size_t row_bytes = static_cast<std::size_t>(a.dim) * dtype_size(compute_);
  // After everything queued on this lane so far (its kernels may still read x_ahead_, the
  // last batch's points).
  before_ahead_.record(res_);
  before_ahead_.enqueue_wait(*ahead_res_);
  row_at_ahead_.grow(static_cast<std::size_t>(a.rows) * sizeof(void*));
  x_ahead_.grow(static_cast<std::size_t>(a.rows) * row_bytes);
  cuda::copy_to_device(*ahead_res_, row_at_ahead_.data(), a.at.data(), static_cast<std::size_t>(a.rows) * sizeof(void*));
  cuda::gather_rows_at(*ahead_res_, row_at_ahead_.as<const void*>(), row_bytes, a.rows, x_ahead_.data(),
                       rows_over_bus_ ? kBusGatherSms : 0);
  ahead_done_.record(*ahead_res_);
  in_flight_ = std::move(a);
}

void CudaBatchKMeans::drop_ahead() {
  if (!in_flight_.has_value()) return;
  ahead_done_.synchronize();  // (its address buffer and x_ahead_ are free after this)
  spare_at_ = std::move(in_flight_->at);
  in_flight_.reset();
}

void CudaBatchKMeans::set_centroid_to_point(std::size_t p, std::int64_t c, std::int64_t i) {
  res_.activate();  // this device on the calling thread (allocations included)
  if (p >= centroid_begin_.size() || p + 1 >= row_begin_.size() || i < 0 ||
      i >= row_begin_[p + 1] - row_begin_[p] || c < 0 || c >= centroid_end_[p] - centroid_begin_[p])
    throw_error(ErrorCode::kInvalidArgument, "CudaBatchKMeans::set_centroid_to_point: problem " + std::to_string(p) +
                                                 ", centroid " + std::to_string(c) + ", point " + std::to_string(i) +
                                                 " out of range");
  const std::int64_t g = centroid_begin_[p] + c;
  const auto row_bytes = static_cast<std::size_t>(dim_) * dtype_size(compute_);
  const auto* point = static_cast<const unsigned char*>(x_dev_.data()) + static_cast<std::size_t>(row_begin_[p] + i) * row_bytes;
  // The compute-dtype row as it is (exact) and its float32 values, both on the device.
  cuda::copy_device_to_device(res_, static_cast<unsigned char*>(c_dev_.data()) + static_cast<std::size_t>(g) * row_bytes,
                              point, row_bytes);
  cuda::rows_to_f32(res_, MatrixView(point, 1, dim_, compute_, dim_), c32_dev_.as<float>() + g * dim_);
}

void CudaBatchKMeans::prepare(std::span<const MatrixView> xs) {
  res_.activate();  // this device on the calling thread (allocations included)
  deferred_.reset();  // (rows from the host: nothing gathered ahead is asked for)
  drop_ahead();
  const std::size_t P = xs.size();
  const std::int64_t n = lay_out(xs);
  const auto row_bytes = static_cast<std::size_t>(dim_) * dtype_size(compute_);
  // Problems one after the other in a points buffer, as the device keeps them: one copy.
  if (P > 0 && n > 0) {
    const auto* first = static_cast<const unsigned char*>(xs[0].data);
    bool packed = true;
    for (std::size_t p = 0; p < P && packed; ++p)
      packed = xs[p].dtype == compute_ && (xs[p].rows <= 1 || xs[p].stride == dim_) &&
               (xs[p].rows == 0 || static_cast<const unsigned char*>(xs[p].data) ==
                                       first + static_cast<std::size_t>(row_begin_[p]) * row_bytes);
    const std::size_t total = static_cast<std::size_t>(n) * row_bytes;
    for (const auto& buf : points_host_) {
      const auto* b = buf.as<unsigned char>();
      if (packed && b != nullptr && first >= b && first + total <= b + buf.size()) {
        cuda::copy_to_device(res_, x_dev_.data(), first, total);
        res_.synchronize();  // the caller may refill the buffer after prepare() returns
        return;
      }
    }
  }
  // Rows go through two page-locked staging halves, filled (converted if need be) by all
  // threads, one half while the other's copy runs.
  cuda::upload_rows_staged(res_, staging_, x_dev_.data(), n, row_bytes, kStagingBytes / 2,
                           [&](std::int64_t r0, std::int64_t r1, unsigned char* stage) {
    constexpr std::int64_t kRowsPerTask = 256;
    const std::int64_t tasks = (r1 - r0 + kRowsPerTask - 1) / kRowsPerTask;
    parallel_for(resolve_threads(0, tasks), tasks, [&](std::int64_t t, int) {
      const std::int64_t b = r0 + t * kRowsPerTask, e = std::min(r1, b + kRowsPerTask);
      // The problem holding row b, then walking forward.
      auto q = static_cast<std::size_t>(std::upper_bound(row_begin_.begin(), row_begin_.end(), b) - row_begin_.begin() - 1);
      std::vector<float> tmp(static_cast<std::size_t>(dim_));
      for (std::int64_t i = b; i < e; ++i) {
        while (i >= row_begin_[q + 1]) ++q;
        const MatrixView& x = xs[q];
        convert_row(x.dtype, x.row(i - row_begin_[q]), static_cast<std::size_t>(dim_), compute_,
                    stage + static_cast<std::size_t>(i - r0) * row_bytes, tmp.data());
      }
    });
  });
}

void CudaBatchKMeans::set_seeding_pools(const std::vector<std::span<const std::int64_t>>& pools) {
  res_.activate();  // this device on the calling thread (allocations included)
  const std::size_t P = pools.size();
  pool_begin_.assign(P + 1, 0);
  for (std::size_t p = 0; p < P; ++p) pool_begin_[p + 1] = pool_begin_[p] + static_cast<std::int64_t>(pools[p].size());
  const auto n_b = static_cast<std::size_t>(pool_begin_[P]);
  // Page-locked, so that the uploads only queue (from pageable memory they waited for the
  // stream, i.e. for this batch's gather of its rows), after the last batch's have run.
  pools_uploaded_.synchronize();
  pool_host_.grow((n_b + P + 1) * sizeof(std::int64_t));
  pool_rows_ = pool_host_.as<std::int64_t>();
  // On this thread: the kept threads made it slower (1 H100 machine, same run: level 3's
  // "host runs" 0.32 -> 0.52 s), competing with the next batch's gather.
  for (std::size_t p = 0; p < P; ++p) {
    std::int64_t* to = pool_rows_ + pool_begin_[p];
    for (std::size_t i = 0; i < pools[p].size(); ++i) to[i] = row_begin_[p] + pools[p][i];
  }
  std::copy(pool_begin_.begin(), pool_begin_.end(), pool_rows_ + n_b);
  pool_dev_.grow(n_b * sizeof(std::int64_t));
  pool_begin_dev_.grow(pool_begin_.size() * sizeof(std::int64_t));
  cuda::copy_to_device(res_, pool_dev_.data(), pool_rows_, n_b * sizeof(std::int64_t));
  cuda::copy_to_device(res_, pool_begin_dev_.data(), pool_rows_ + n_b, pool_begin_.size() * sizeof(std::int64_t));
  pools_uploaded_.record(res_);
}

void CudaBatchKMeans::seeding_distances(const std::vector<std::vector<std::int64_t>>& cands,
                                        std::vector<const float*>* out) {
  res_.activate();  // this device on the calling thread (allocations included)
  const std::size_t P = cands.size();
  // Host side of the launch: candidates' rows, their counts, where each problem writes.
  const std::size_t a_bytes = P * kMaxCand * sizeof(std::int64_t), ob_bytes = P * sizeof(std::int64_t),
                    na_bytes = P * sizeof(std::int32_t);
  small_.grow(a_bytes + ob_bytes + na_bytes);
  auto* a = small_.as<std::int64_t>();
  auto* out_begin = a + P * kMaxCand;
  auto* n_a = reinterpret_cast<std::int32_t*>(out_begin + P);
  std::int64_t total = 0, max_nc = 1;
  for (std::size_t p = 0; p < P; ++p) {
    const auto nc = static_cast<std::int64_t>(cands[p].size());
    max_nc = std::max(max_nc, nc);
    if (nc > kMaxCand)
      throw_error(ErrorCode::kInvalidArgument, "seeding_distances: " + std::to_string(nc) + " candidates > " +
                                                   std::to_string(kMaxCand));
    const std::int64_t m = pool_begin_[p + 1] - pool_begin_[p];
    for (std::int64_t t = 0; t < nc; ++t) {
      const std::int64_t c = cands[p][static_cast<std::size_t>(t)];
      if (c < 0 || c >= m)
        throw_error(ErrorCode::kInvalidArgument, "seeding_distances: problem " + std::to_string(p) + " candidate " +
                                                     std::to_string(c) + " is outside its pool of " + std::to_string(m));
      a[p * kMaxCand + static_cast<std::size_t>(t)] = pool_rows_[pool_begin_[p] + c];
    }
    n_a[p] = static_cast<std::int32_t>(nc);
    out_begin[p] = total;
    total += nc * m;
  }
  out->assign(P, nullptr);
  if (total == 0) return;
  cand_dev_.grow(a_bytes + ob_bytes + na_bytes);
  cuda::copy_to_device(res_, cand_dev_.data(), small_.data(), a_bytes + ob_bytes + na_bytes);
  seed_out_dev_.grow(static_cast<std::size_t>(total) * sizeof(float));
  cuda::GroupedRowDistanceArgs g;
  g.x = MatrixView(x_dev_.data(), row_begin_.back(), dim_, compute_, dim_);
  g.groups = static_cast<std::int64_t>(P);
  g.b = pool_dev_.as<std::int64_t>();
  g.b_begin = pool_begin_dev_.as<std::int64_t>();
  g.n_b = pool_begin_.back();
  g.a = cand_dev_.as<std::int64_t>();
  g.out_begin = g.a + P * kMaxCand;
  g.n_a = reinterpret_cast<const std::int32_t*>(g.out_begin + P);
  g.out = seed_out_dev_.as<float>();
  g.max_n_a = max_nc;
  cuda::row_distances_grouped(res_, g);
  seed_host_.grow(static_cast<std::size_t>(total) * sizeof(float));
  cuda::copy_to_host(res_, seed_host_.data(), seed_out_dev_.data(), static_cast<std::size_t>(total) * sizeof(float));
  out->resize(P);
  for (std::size_t p = 0; p < P; ++p) (*out)[p] = seed_host_.as<float>() + out_begin[p];
}

void CudaBatchKMeans::seed(const std::vector<detail::SeedingPlan>& plans,
                           std::vector<std::vector<std::int64_t>>* chosen) {
  res_.activate();  // this device on the calling thread (allocations included)
  const std::size_t P = plans.size();
  if (P + 1 != pool_begin_.size())
    throw_error(ErrorCode::kInternal, "CudaBatchKMeans::seed: " + std::to_string(P) + " plans for " +
                                          std::to_string(pool_begin_.size() - 1) + " pools");
  std::int64_t max_k = 1, max_trials = 1, n_uniforms = 0;
  for (const auto& pl : plans) {
    max_k = std::max(max_k, pl.k);
    max_trials = std::max(max_trials, pl.trials);
    n_uniforms += static_cast<std::int64_t>(pl.uniforms.size());
  }
  const std::size_t prob_bytes = P * sizeof(cuda::SeedingProblem);
  const std::size_t uni_bytes = static_cast<std::size_t>(std::max<std::int64_t>(n_uniforms, 1)) * sizeof(double);
  small_.grow(prob_bytes + uni_bytes);
  auto* probs = small_.as<cuda::SeedingProblem>();
  auto* uni = reinterpret_cast<double*>(static_cast<unsigned char*>(small_.data()) + prob_bytes);
  std::int64_t u0 = 0;
  for (std::size_t p = 0; p < P; ++p) {
    const auto& pl = plans[p];
    const std::int64_t m = pool_begin_[p + 1] - pool_begin_[p];
    if (pl.k < 1 || pl.k > m || pl.first < 0 || pl.first >= m || pl.trials < 1 || pl.trials > kMaxCand ||
        static_cast<std::int64_t>(pl.uniforms.size()) != (pl.k - 1) * pl.trials)
      throw_error(ErrorCode::kInvalidArgument, "CudaBatchKMeans::seed: problem " + std::to_string(p) + " has k = " +
                                                   std::to_string(pl.k) + ", first = " + std::to_string(pl.first) +
                                                   ", trials = " + std::to_string(pl.trials) + ", " +
                                                   std::to_string(pl.uniforms.size()) + " uniforms for a pool of " +
                                                   std::to_string(m));
    probs[p] = cuda::SeedingProblem{};
    probs[p].k = pl.k;
    probs[p].first = pl.first;
    probs[p].uniform_begin = u0;
    probs[p].trials = static_cast<std::int32_t>(pl.trials);
    std::copy(pl.uniforms.begin(), pl.uniforms.end(), uni + u0);
    u0 += static_cast<std::int64_t>(pl.uniforms.size());
  }
  problems_dev_.grow(prob_bytes);
  uniforms_dev_.grow(uni_bytes);
  const std::size_t chosen_bytes = P * static_cast<std::size_t>(max_k) * sizeof(std::int64_t);
  chosen_dev_.grow(chosen_bytes);
  cuda::copy_to_device(res_, problems_dev_.data(), probs, prob_bytes);
  cuda::copy_to_device(res_, uniforms_dev_.data(), uni, uni_bytes);
  cuda::GroupedSeedingArgs g;
  g.x = MatrixView(x_dev_.data(), row_begin_.back(), dim_, compute_, dim_);
  g.groups = static_cast<std::int64_t>(P);
  g.b = pool_dev_.as<std::int64_t>();
  g.b_begin = pool_begin_dev_.as<std::int64_t>();
  g.n_b = pool_begin_.back();
  g.b_begin_host = pool_begin_.data();
  // The pools' Gram matrices instead of a pass over the pools per round, where cheaper: k
  // rounds read k m d elements per problem against m^2 d tensor-core flops once (the
  // symmetric half), so while m <= 64 k (the flop rate is ~130x the element read rate on an
  // H100) and one problem's 4 m^2 bytes fit the scratch (at most 4 GiB, a quarter of the
  // free memory). bench_cuda's seeding rows compare the two paths.
  last_seed_path_ = "pools";
  if (seed_distances_ != SeedDistances::kPools && cuda::pool_gram_supported(res_, g.x)) {
    const char* env = std::getenv("MEGATAX_CUDA_SEED_GRAM");
    const bool automatic = seed_distances_ == SeedDistances::kAuto;
    double sq = 0, km = 0, largest = 0;
    for (std::size_t p = 0; p < P; ++p) {
      const auto m = static_cast<double>(pool_begin_[p + 1] - pool_begin_[p]);
      sq += m * m;
      km += static_cast<double>(plans[p].k) * m;
      largest = std::max(largest, m * m);
    }
    const auto free_bytes = static_cast<double>(res_.memory_info().first);
    const double cap = std::min(4.0 * (1u << 30), (free_bytes + static_cast<double>(gram_dev_.size())) / 4);
    const bool worth = !automatic || ((env == nullptr || std::strcmp(env, "0") != 0) && sq <= 64 * km);
    if (worth && 4 * largest <= cap) {
      gram_dev_.reserve(static_cast<std::size_t>(std::min(4 * sq, cap)));
      g.scratch = gram_dev_.data();
      g.scratch_bytes = static_cast<std::size_t>(std::min(4 * sq, cap));
      last_seed_path_ = "gram";
    }
  }
  g.problems = problems_dev_.as<cuda::SeedingProblem>();
  g.uniforms = uniforms_dev_.as<double>();
  g.max_k = max_k;
  g.max_trials = static_cast<std::int32_t>(max_trials);
  g.chosen = chosen_dev_.as<std::int64_t>();
  cuda::seed_grouped(res_, g);
  results_.grow(chosen_bytes);
  auto* out = results_.as<std::int64_t>();
  cuda::copy_to_host(res_, out, chosen_dev_.data(), chosen_bytes);  // waits for the stream
  chosen->assign(P, {});
  seed_rows_.clear();
  for (std::size_t p = 0; p < P; ++p) {
    const std::int64_t* c = out + static_cast<std::int64_t>(p) * max_k;
    (*chosen)[p].assign(c, c + plans[p].k);
    for (std::int64_t j = 0; j < plans[p].k; ++j) {
      const std::int64_t i = c[j];  // checked against the pool here: it indexes pool_rows_
      if (i < 0 || i >= pool_begin_[p + 1] - pool_begin_[p])
        throw_error(ErrorCode::kInternal, "CudaBatchKMeans::seed: problem " + std::to_string(p) + " chose pool index " +
                                              std::to_string(i) + " outside its pool");
      seed_rows_.push_back(pool_rows_[pool_begin_[p] + i]);
    }
  }
}

std::int64_t CudaBatchKMeans::number_centroids(const std::vector<std::int64_t>& k) {
  res_.activate();  // this device on the calling thread (allocations included)
  const std::size_t P = k.size();
  centroid_begin_.assign(P, 0);
  centroid_end_.assign(P, 0);
  std::int64_t total = 0;
  for (std::size_t p = 0; p < P; ++p) {
    centroid_begin_[p] = total;
    total += k[p];
    centroid_end_[p] = total;
  }
  return total;
}

void CudaBatchKMeans::seeds_as_centroids(const std::vector<std::int64_t>& k) {
  res_.activate();  // this device on the calling thread (allocations included)
  if (!points_exact_ || seed_rows_.empty())
    throw_error(ErrorCode::kInternal, "CudaBatchKMeans::seeds_as_centroids: no seeds kept (after seed(), points "
                                      "in the compute dtype)");
  const std::size_t P = k.size();
  if (P + 1 != row_begin_.size())
    throw_error(ErrorCode::kInternal, "CudaBatchKMeans::seeds_as_centroids: " + std::to_string(P) + " problems of " +
                                          std::to_string(row_begin_.size() - 1));
  const std::int64_t total = number_centroids(k);
  if (total != static_cast<std::int64_t>(seed_rows_.size()))
    throw_error(ErrorCode::kInternal, "CudaBatchKMeans::seeds_as_centroids: " + std::to_string(total) +
                                          " centroids, " + std::to_string(seed_rows_.size()) + " seeds");
  // The compute-dtype rows as the device keeps the points (exact), and their f32 values.
  const auto row_bytes = static_cast<std::size_t>(dim_) * dtype_size(compute_);
  c_dev_.grow(static_cast<std::size_t>(total) * row_bytes);
  c32_dev_.grow(static_cast<std::size_t>(total) * static_cast<std::size_t>(dim_) * sizeof(float));
  seed_rows_dev_.grow(seed_rows_.size() * sizeof(std::int64_t));
  cuda::copy_to_device(res_, seed_rows_dev_.data(), seed_rows_.data(), seed_rows_.size() * sizeof(std::int64_t));
  cuda::gather_rows(res_, x_dev_.data(), row_bytes, seed_rows_dev_.as<std::int64_t>(), total, c_dev_.data());
  cuda::rows_to_f32(res_, MatrixView(c_dev_.data(), total, dim_, compute_, dim_), c32_dev_.as<float>());
  seed_rows_.clear();  // used: the next batch seeds again
}

void CudaBatchKMeans::set_centroids(const std::vector<const float*>& centroids, const std::vector<std::int64_t>& k) {
  res_.activate();  // this device on the calling thread (allocations included)
  const std::size_t P = centroids.size();
  const std::int64_t total = number_centroids(k);
  // float32 (what the updates refine) and the compute dtype (what assign reads), both kept.
  const auto row_bytes = static_cast<std::size_t>(dim_) * dtype_size(compute_);
  const auto f32_bytes = static_cast<std::size_t>(dim_) * sizeof(float);
  staging_.grow(static_cast<std::size_t>(total) * (row_bytes + f32_bytes));
  auto* conv = static_cast<unsigned char*>(staging_.data());
  auto* f32 = reinterpret_cast<float*>(conv + static_cast<std::size_t>(total) * row_bytes);
  host_.run(static_cast<std::int64_t>(P), [&](std::int64_t q, int) {
    const auto p = static_cast<std::size_t>(q);
    const auto c0 = static_cast<std::size_t>(centroid_begin_[p]);
    std::memcpy(f32 + c0 * static_cast<std::size_t>(dim_), centroids[p], static_cast<std::size_t>(k[p]) * f32_bytes);
    convert_rows(f32_view(centroids[p], k[p], dim_), compute_, conv + c0 * row_bytes);
  });
  c_dev_.grow(static_cast<std::size_t>(total) * row_bytes);
  c32_dev_.grow(static_cast<std::size_t>(total) * f32_bytes);
  cuda::copy_to_device(res_, c_dev_.data(), conv, static_cast<std::size_t>(total) * row_bytes);
  cuda::copy_to_device(res_, c32_dev_.data(), f32, static_cast<std::size_t>(total) * f32_bytes);
  res_.synchronize();  // the staging buffer is reused
}

void CudaBatchKMeans::assign_on_device(std::vector<std::uint8_t> skip) {
  const std::size_t P = skip.size();
  const std::int64_t n = row_begin_.back();
  labels_dev_.grow(static_cast<std::size_t>(n) * sizeof(std::int32_t));
  dist_dev_.grow(static_cast<std::size_t>(n) * sizeof(float));
  cuda::GroupedAssignArgs g;
  g.metric = metric_;
  g.x = MatrixView(x_dev_.data(), n, dim_, compute_, dim_);
  g.centroids = MatrixView(c_dev_.data(), centroid_end_.back(), dim_, compute_, dim_);
  g.row_begin = row_begin_;
  g.centroid_begin = centroid_begin_;
  g.centroid_end = centroid_end_;
  g.labels = labels_dev_.as<std::int32_t>();
  g.distances = dist_dev_.as<float>();
  for (std::size_t p = 0; p < P; ++p)
    if (skip[p] == 0) time_.rows_assigned += row_begin_[p + 1] - row_begin_[p];
  time_.rows_batched += n;
  // Problems that no longer iterate are skipped (their rows' labels are not written).
  g.skip = std::move(skip);
  cuda::assign_grouped(res_, g);
}

void CudaBatchKMeans::assign(const std::vector<std::int64_t*>& labels, const std::vector<float*>& distances) {
  res_.activate();  // this device on the calling thread (allocations included)
  const std::size_t P = labels.size();
  const std::int64_t n = row_begin_.back();
  std::vector<std::uint8_t> skip(P);
  for (std::size_t p = 0; p < P; ++p) skip[p] = labels[p] == nullptr ? 1 : 0;
  auto t = Clock::now();
  assign_on_device(skip);
  results_.grow(static_cast<std::size_t>(n) * 8);
  auto* lab = results_.as<std::int32_t>();
  auto* dd = reinterpret_cast<float*>(lab + n);
  lap(t, time_.assign_launch);
  cuda::copy_to_host(res_, lab, labels_dev_.data(), static_cast<std::size_t>(n) * sizeof(std::int32_t));
  cuda::copy_to_host(res_, dd, dist_dev_.data(), static_cast<std::size_t>(n) * sizeof(float));
  lap(t, time_.assign_wait);
  ++time_.assigns;
  // The runs' labels and distances; and every row's label numbered across the batch, which
  // the next update's sums take (`update_host_`, ahead of its keep flags): -1 (summed
  // nowhere) for the rows of problems skipped.
  update_host_.grow(static_cast<std::size_t>(n) * sizeof(std::int32_t) +
                    static_cast<std::size_t>(centroid_end_.back()));
  auto* global = update_host_.as<std::int32_t>();
  host_.run(static_cast<std::int64_t>(P), [&](std::int64_t q, int) {
    const auto p = static_cast<std::size_t>(q);
    const std::int64_t r0 = row_begin_[p], r1 = row_begin_[p + 1];
    if (labels[p] == nullptr) {
      std::fill(global + r0, global + r1, -1);
      return;
    }
    const auto offset = static_cast<std::int32_t>(centroid_begin_[p]);
    for (std::int64_t i = r0; i < r1; ++i) global[i] = lab[i] + offset;
    std::int64_t* lp = labels[p];
    const std::int32_t* lq = lab + r0;
    for (std::int64_t i = 0; i < r1 - r0; ++i) lp[i] = lq[i];
    if (distances[p] != nullptr) std::memcpy(distances[p], dd + r0, static_cast<std::size_t>(r1 - r0) * sizeof(float));
  });
  have_global_labels_ = true;
  last_skipped_ = std::move(skip);
  lap(t, time_.assign_scatter);
}

void CudaBatchKMeans::update_centroids(const std::vector<std::int64_t*>& counts, bool spherical) {
  res_.activate();  // this device on the calling thread (allocations included)
  const std::size_t P = counts.size();
  const std::int64_t n = row_begin_.back(), total_k = centroid_end_.back();
  // Clusters numbered across the batch: problem p's cluster c is centroid_begin[p] + c; the
  // clusters of problems not updated now are kept.
  auto t = Clock::now();
  if (!have_global_labels_)
    throw_error(ErrorCode::kInternal, "CudaBatchKMeans::update_centroids: no assignment since prepare()");
  // The labels numbered across the batch are there since assign(); the keep flags after them.
  auto* global = update_host_.as<std::int32_t>();
  auto* keep = reinterpret_cast<std::uint8_t*>(global + n);
  if (last_skipped_.size() != P)
    throw_error(ErrorCode::kInternal, "CudaBatchKMeans::update_centroids: " + std::to_string(P) +
                                          " problems, the last assignment had " + std::to_string(last_skipped_.size()));
  for (std::size_t p = 0; p < P; ++p) {
    const bool kept = counts[p] == nullptr;
    if (!kept && last_skipped_[p] != 0)
      throw_error(ErrorCode::kInternal, "CudaBatchKMeans::update_centroids: problem " + std::to_string(p) +
                                            " was not assigned by the last assign()");
    std::memset(keep + centroid_begin_[p], kept ? 1 : 0,
                static_cast<std::size_t>(centroid_end_[p] - centroid_begin_[p]));
    // A kept problem's rows are summed nowhere (its labels may be the last assignment's).
    if (kept) {
      std::fill(global + row_begin_[p], global + row_begin_[p + 1], -1);
    } else {
      time_.rows_summed += row_begin_[p + 1] - row_begin_[p];
    }
  }
  lap(t, time_.update_host);
  global_labels_dev_.grow(static_cast<std::size_t>(n) * sizeof(std::int32_t) + static_cast<std::size_t>(total_k));
  cuda::copy_to_device(res_, global_labels_dev_.data(), global,
                       static_cast<std::size_t>(n) * sizeof(std::int32_t) + static_cast<std::size_t>(total_k));
  update_on_device(spherical);
  results_.grow(static_cast<std::size_t>(total_k) * sizeof(std::int64_t));
  auto* c = results_.as<std::int64_t>();
  cuda::copy_to_host(res_, c, counts_dev_.data(), static_cast<std::size_t>(total_k) * sizeof(std::int64_t));
  lap(t, time_.update_wait);
  ++time_.updates;
  for (std::size_t p = 0; p < P; ++p)
    if (counts[p] != nullptr)
      std::memcpy(counts[p], c + centroid_begin_[p],
                  static_cast<std::size_t>(centroid_end_[p] - centroid_begin_[p]) * sizeof(std::int64_t));
}

void CudaBatchKMeans::update_on_device(bool spherical) {
  const std::int64_t n = row_begin_.back(), total_k = centroid_end_.back();
  counts_dev_.grow(static_cast<std::size_t>(total_k) * sizeof(std::int64_t));
  cuda::fill_zero(res_, counts_dev_.data(), static_cast<std::size_t>(total_k) * sizeof(std::int64_t));
  const auto* keep = reinterpret_cast<const std::uint8_t*>(global_labels_dev_.as<std::int32_t>() + n);
  cuda::AccumulateArgs a;
  a.x = MatrixView(x_dev_.data(), n, dim_, compute_, dim_);
  a.label_type = cuda::IndexType::kI32;
  a.labels = global_labels_dev_.data();
  a.k = total_k;
  a.sum_type = cuda::SumType::kF64;
  a.counts = counts_dev_.as<std::int64_t>();
  a.skip_negative = true;
  a.check_labels = false;  // the grouped assign's labels + offsets: in [0, total_k), or -1
  if (!spherical) {  // the means straight from the sums' pass (no k x d float64 array)
    a.means = c32_dev_.as<float>();
    a.keep = keep;
    a.converted = c_dev_.data();
    a.converted_dtype = compute_;
    cuda::accumulate(res_, a);
    return;
  }
  const std::size_t sum_bytes = static_cast<std::size_t>(total_k * dim_) * sizeof(double);
  sums_dev_.grow(sum_bytes);
  cuda::fill_zero(res_, sums_dev_.data(), sum_bytes);
  a.sums = sums_dev_.data();
  cuda::accumulate(res_, a);
  cuda::MeansArgs m;
  m.sums = sums_dev_.as<double>();
  m.counts = counts_dev_.as<std::int64_t>();
  m.k = total_k;
  m.d = dim_;
  m.keep = keep;
  m.normalise = spherical;
  m.centroids = c32_dev_.as<float>();
  m.converted = c_dev_.data();
  m.converted_dtype = compute_;
  cuda::means(res_, m);
}

CudaBatchKMeans::StepsLayout CudaBatchKMeans::steps_layout() const {
  const std::size_t P = row_begin_.size() - 1;
  auto align = [](std::size_t b) { return (b + 255) / 256 * 256; };
  StepsLayout l{};
  l.row_begin = 0;
  l.centroid_begin = l.row_begin + align((P + 1) * sizeof(std::int64_t));
  l.problems = l.centroid_begin + align((P + 1) * sizeof(std::int64_t));
  l.assigned = l.problems + align(P * sizeof(cuda::LloydProblem));
  l.inertia = l.assigned + align(P);
  l.updates = l.inertia + P * sizeof(double);  // right after: one read-back for both
  l.bytes = l.updates + P;
  return l;
}

void CudaBatchKMeans::begin_steps(std::span<const KMeansParams> params) {
  res_.activate();  // this device on the calling thread (allocations included)
  const std::size_t P = row_begin_.size() - 1;
  if (params.size() != P || centroid_begin_.size() != P)
    throw_error(ErrorCode::kInternal, "CudaBatchKMeans::begin_steps: " + std::to_string(params.size()) +
                                          " problems' parameters for " + std::to_string(P) + " problems with " +
                                          std::to_string(centroid_begin_.size()) + " centroid ranges");
  const StepsLayout l = steps_layout();
  steps_host_.grow(l.bytes);
  steps_dev_.grow(l.bytes);
  auto* h = static_cast<unsigned char*>(steps_host_.data());
  auto* rb = reinterpret_cast<std::int64_t*>(h + l.row_begin);
  auto* cb = reinterpret_cast<std::int64_t*>(h + l.centroid_begin);
  auto* probs = reinterpret_cast<cuda::LloydProblem*>(h + l.problems);
  std::copy(row_begin_.begin(), row_begin_.end(), rb);
  std::copy(centroid_begin_.begin(), centroid_begin_.end(), cb);
  cb[P] = centroid_end_.back();
  for (std::size_t p = 0; p < P; ++p) {
    probs[p] = cuda::LloydProblem{};
    probs[p].tol = params[p].tol;
    probs[p].max_iter = params[p].max_iter;
  }
  // (page-locked: queued; step() reuses only the assigned flags' bytes, after this copy)
  cuda::copy_to_device(res_, steps_dev_.data(), h, l.assigned);
  const std::int64_t n = row_begin_.back();
  labels_dev_.grow(static_cast<std::size_t>(n) * sizeof(std::int32_t));
  dist_dev_.grow(static_cast<std::size_t>(n) * sizeof(float));
  global_labels_dev_.grow(static_cast<std::size_t>(n) * sizeof(std::int32_t) +
                          static_cast<std::size_t>(centroid_end_.back()));
  have_global_labels_ = false;  // (update_centroids does not follow a step)
  steps_begun_ = true;
}

void CudaBatchKMeans::step(const std::vector<std::uint8_t>& assigned, std::vector<double>* inertia,
                           std::vector<std::uint8_t>* updated, const std::vector<std::int64_t*>& counts,
                           bool spherical) {
  res_.activate();  // this device on the calling thread (allocations included)
  const std::size_t P = row_begin_.size() - 1;
  if (!steps_begun_ || assigned.size() != P || counts.size() != P)
    throw_error(ErrorCode::kInternal, "CudaBatchKMeans::step: " + std::string(steps_begun_ ? "" : "no begin_steps, ") +
                                          std::to_string(assigned.size()) + " flags and " +
                                          std::to_string(counts.size()) + " count arrays for " + std::to_string(P) +
                                          " problems");
  const std::int64_t n = row_begin_.back(), total_k = centroid_end_.back();
  const StepsLayout l = steps_layout();
  auto* h = static_cast<unsigned char*>(steps_host_.data());
  auto* d = static_cast<unsigned char*>(steps_dev_.data());
  auto t = Clock::now();
  std::vector<std::uint8_t> skip(P);
  for (std::size_t p = 0; p < P; ++p) skip[p] = assigned[p] != 0 ? 0 : 1;
  assign_on_device(std::move(skip));
  std::copy(assigned.begin(), assigned.end(), h + l.assigned);
  cuda::copy_to_device(res_, d + l.assigned, h + l.assigned, P);
  cuda::LloydDecideArgs a;
  a.groups = static_cast<std::int64_t>(P);
  a.row_begin = reinterpret_cast<const std::int64_t*>(d + l.row_begin);
  a.centroid_begin = reinterpret_cast<const std::int64_t*>(d + l.centroid_begin);
  a.assigned = d + l.assigned;
  a.labels = labels_dev_.as<std::int32_t>();
  a.distances = dist_dev_.as<float>();
  a.problems = reinterpret_cast<cuda::LloydProblem*>(d + l.problems);
  a.inertia = reinterpret_cast<double*>(d + l.inertia);
  a.updates = d + l.updates;
  a.global_labels = global_labels_dev_.as<std::int32_t>();
  a.keep = reinterpret_cast<std::uint8_t*>(a.global_labels + n);
  cuda::lloyd_decide(res_, a);
  update_on_device(spherical);
  cuda::copy_to_host_async(res_, h + l.inertia, d + l.inertia, l.bytes - l.inertia);
  results_.grow(static_cast<std::size_t>(total_k) * sizeof(std::int64_t));
  auto* c = results_.as<std::int64_t>();
  cuda::copy_to_host_async(res_, c, counts_dev_.data(), static_cast<std::size_t>(total_k) * sizeof(std::int64_t));
  lap(t, time_.step_queue);
  res_.synchronize();
  lap(t, time_.step_wait);
  ++time_.steps;
  const auto* in = reinterpret_cast<const double*>(h + l.inertia);
  const std::uint8_t* up = h + l.updates;
  inertia->assign(in, in + P);
  updated->assign(up, up + P);
  for (std::size_t p = 0; p < P; ++p) {
    if (up[p] == 0) continue;
    if (counts[p] == nullptr)
      throw_error(ErrorCode::kInternal, "CudaBatchKMeans::step: problem " + std::to_string(p) +
                                            " updated without a counts array");
    time_.rows_summed += row_begin_[p + 1] - row_begin_[p];
    std::memcpy(counts[p], c + centroid_begin_[p],
                static_cast<std::size_t>(centroid_end_[p] - centroid_begin_[p]) * sizeof(std::int64_t));
  }
  lap(t, time_.step_host);
}

void CudaBatchKMeans::last_distances(std::size_t p, float* out) {
  res_.activate();  // this device on the calling thread (allocations included)
  if (p + 1 >= row_begin_.size())
    throw_error(ErrorCode::kInternal, "CudaBatchKMeans::last_distances: problem " + std::to_string(p) + " of " +
                                          std::to_string(row_begin_.size() - 1));
  const std::int64_t r0 = row_begin_[p], r1 = row_begin_[p + 1];
  cuda::copy_to_host(res_, out, dist_dev_.as<float>() + r0, static_cast<std::size_t>(r1 - r0) * sizeof(float));
  ++time_.repairs_read;
}

void CudaBatchKMeans::last_labels(const std::vector<std::int64_t*>& out) {
  res_.activate();  // this device on the calling thread (allocations included)
  const std::size_t P = row_begin_.size() - 1;
  if (out.size() != P)
    throw_error(ErrorCode::kInternal, "CudaBatchKMeans::last_labels: " + std::to_string(out.size()) +
                                          " destinations for " + std::to_string(P) + " problems");
  auto t = Clock::now();
  const std::int64_t n = row_begin_.back();
  results_.grow(static_cast<std::size_t>(n) * sizeof(std::int32_t));
  auto* lab = results_.as<std::int32_t>();
  cuda::copy_to_host(res_, lab, labels_dev_.data(), static_cast<std::size_t>(n) * sizeof(std::int32_t));
  host_.run(static_cast<std::int64_t>(P), [&](std::int64_t q, int) {
    const auto p = static_cast<std::size_t>(q);
    const std::int64_t r0 = row_begin_[p], r1 = row_begin_[p + 1];
    std::copy(lab + r0, lab + r1, out[p]);
  });
  lap(t, time_.labels_back);
}

void CudaBatchKMeans::set_centroid(std::size_t p, std::int64_t c, const float* row) {
  res_.activate();  // this device on the calling thread (allocations included)
  const std::int64_t g = centroid_begin_[p] + c;
  const auto row_bytes = static_cast<std::size_t>(dim_) * dtype_size(compute_);
  std::vector<unsigned char> conv(row_bytes);
  std::vector<float> tmp(static_cast<std::size_t>(dim_));
  convert_row(DType::kF32, row, static_cast<std::size_t>(dim_), compute_, conv.data(), tmp.data());
  // Pageable sources: both copies are staged before they return.
  cuda::copy_to_device(res_, c32_dev_.as<float>() + g * dim_, row, static_cast<std::size_t>(dim_) * sizeof(float));
  cuda::copy_to_device(res_, static_cast<unsigned char*>(c_dev_.data()) + static_cast<std::size_t>(g) * row_bytes,
                       conv.data(), row_bytes);
  res_.synchronize();
}

std::string CudaBatchKMeans::take_breakdown() {
  std::string r;
  if (time_.assigns > 0 || time_.updates > 0)
    r = "Lloyd on the device: " + std::to_string(time_.assigns) + " assignments (launch " +
        std::to_string(time_.assign_launch) + ", wait " + std::to_string(time_.assign_wait) + ", scatter " +
        std::to_string(time_.assign_scatter) + "), " + std::to_string(time_.updates) + " updates (host labels " +
        std::to_string(time_.update_host) + ", launch and wait " + std::to_string(time_.update_wait) +
        "); rows assigned " + std::to_string(time_.rows_assigned) + " and summed " +
        std::to_string(time_.rows_summed) + " of " + std::to_string(time_.rows_batched) +
        " (the batches' rows times their assignments)";
  if (time_.steps > 0)
    r += std::string(r.empty() ? "" : "; ") + "Lloyd's decisions on the device: " + std::to_string(time_.steps) +
         " steps (queued " + std::to_string(time_.step_queue) + ", waited " + std::to_string(time_.step_wait) +
         ", copied out " + std::to_string(time_.step_host) + "), distances read for repairs " +
         std::to_string(time_.repairs_read) + " times, labels read back in " + std::to_string(time_.labels_back) +
         "; rows assigned " + std::to_string(time_.rows_assigned) + " and summed " +
         std::to_string(time_.rows_summed) + " of " + std::to_string(time_.rows_batched);
  if (time_.readbacks > 0)
    r += std::string(r.empty() ? "" : "; ") + std::to_string(time_.readbacks) + " centroid read-backs behind the next batch (queued " +
         std::to_string(time_.readback_queue) + " of which " + std::to_string(time_.stage_growths) +
         " stage growths " + std::to_string(time_.stage_growth) + " and waiting for stages made ahead " +
         std::to_string(time_.stage_wait) + ", waited " + std::to_string(time_.readback_wait) + ")";
  if (time_.gathers_ahead > 0 || time_.gathers_here > 0)
    r += std::string(r.empty() ? "" : "; ") + "rows gathered by address: " + std::to_string(time_.gathers_ahead) +
         " batches ahead (waited " + std::to_string(time_.ahead_wait) + ", the next queued in " +
         std::to_string(time_.ahead_queue) + "), " + std::to_string(time_.gathers_here) +
         " at their prepare (lay-out and queued in " + std::to_string(time_.here_queue) + ")";
  time_ = {};
  return r;
}

void CudaBatchKMeans::expect_read_backs(std::size_t floats) {
  res_.activate();  // this device on the calling thread (allocations included)
  centroids_landed();  // no read-back uses a stage now
  if (stages_growing_.valid()) stages_growing_.get();
  const std::size_t bytes = floats * sizeof(float);
  if (centroid_stage_[0].size() >= bytes && centroid_stage_[1].size() >= bytes) return;
  stages_growing_ = std::async(std::launch::async, [this, bytes] {
    res_.activate();  // this device's context on this thread
    for (cuda::PinnedBuffer& stage : centroid_stage_) stage.reserve(bytes);
  });
}

void CudaBatchKMeans::get_centroids_later(const std::vector<float*>& out) {
  res_.activate();  // this device on the calling thread (allocations included)
  centroids_landed();  // the batch before: its stage is free again
  auto t = Clock::now();
  if (stages_growing_.valid()) {
    auto t_wait = t;
    stages_growing_.get();
    lap(t_wait, time_.stage_wait);
  }
  const std::size_t P = out.size();
  const std::int64_t total_k = centroid_end_.back();
  const std::size_t row_floats = static_cast<std::size_t>(dim_);
  const std::size_t bytes = static_cast<std::size_t>(total_k) * row_floats * sizeof(float);
  cuda::PinnedBuffer& stage = centroid_stage_[centroid_slot_];
  centroid_slot_ ^= 1;
  // A quarter more than asked when it grows: batches differ a little in size, and each
  // growth page-locks afresh (tens of MB: milliseconds).
  if (stage.size() < bytes) {
    auto t_lock = Clock::now();
    stage.reserve(bytes + bytes / 4);
    ++time_.stage_growths;
    lap(t_lock, time_.stage_growth);
  }
  cuda::copy_to_host_async(res_, stage.data(), c32_dev_.data(), bytes);
  cuda::Event ready;
  ready.record(res_);
  // Where each problem's rows go: runs of problems whose destinations follow one another
  // (the caller's one array) become one copy.
  struct Piece {
    float* to;
    std::size_t from, floats;
  };
  std::vector<Piece> pieces;
  for (std::size_t p = 0; p < P; ++p) {
    const std::size_t from = static_cast<std::size_t>(centroid_begin_[p]) * row_floats;
    const std::size_t floats = static_cast<std::size_t>(centroid_end_[p] - centroid_begin_[p]) * row_floats;
    if (!pieces.empty() && pieces.back().to + pieces.back().floats == out[p] &&
        pieces.back().from + pieces.back().floats == from) {
      pieces.back().floats += floats;
    } else {
      pieces.push_back({out[p], from, floats});
    }
  }
  const float* src = stage.as<float>();
  centroids_copy_ = std::async(std::launch::async, [ready = std::move(ready), pieces = std::move(pieces), src] {
    ready.synchronize();
    for (const Piece& pc : pieces) std::memcpy(pc.to, src + pc.from, pc.floats * sizeof(float));
  });
  ++time_.readbacks;
  lap(t, time_.readback_queue);
}

void CudaBatchKMeans::centroids_landed() {
  res_.activate();  // this device on the calling thread (allocations included)
  if (!centroids_copy_.valid()) return;
  auto t = Clock::now();
  centroids_copy_.get();
  lap(t, time_.readback_wait);
}

void CudaBatchKMeans::get_centroids(const std::vector<float*>& out) {
  res_.activate();  // this device on the calling thread (allocations included)
  centroids_landed();
  const std::size_t P = out.size();
  const std::int64_t total_k = centroid_end_.back();
  const std::size_t bytes = static_cast<std::size_t>(total_k * dim_) * sizeof(float);
  results_.grow(bytes);
  auto* f = results_.as<float>();
  cuda::copy_to_host(res_, f, c32_dev_.data(), bytes);
  // Spread over the threads: a wide level's batch reads back tens of MB of centroids.
  host_.run(static_cast<std::int64_t>(P), [&](std::int64_t q, int) {
    const auto p = static_cast<std::size_t>(q);
    std::memcpy(out[p], f + centroid_begin_[p] * dim_,
                static_cast<std::size_t>((centroid_end_[p] - centroid_begin_[p]) * dim_) * sizeof(float));
  });
}

}  // namespace megatax::cluster
