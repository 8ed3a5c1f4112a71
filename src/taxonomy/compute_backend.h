// taxonomy/compute_backend.h -- where the kernels of a fit (and of predict) run: the CPU
// kernels of kernels/cpu, or one CUDA device. The level pipeline (fit.cc, engine.cc) is
// written once over this seam; a backend never changes what is computed, only where (the
// CUDA one rounds differently, see below).
//
// Numerics: the CPU backend is bit-identical on every thread and rank count. The CUDA
// backend computes the same distances with another summation order (f32: 3xTF32 on tensor
// cores, FFMA for k-means++; f16/bf16: tensor cores, f32 accumulation, inputs rounded to 16
// bits when the data is f32),
// so it is deterministic on its own (same GPU model, same bits) but its tree can differ from
// the CPU's where two centroids are within rounding of each other. HNSW graphs are not used
// on the GPU (it scans all children: exact).
//
// Thread-safety: a backend is used by one thread at a time, except make_assigner() and the
// assigners it makes when concurrent_training() is true: then several threads may each make
// and use their own assigner at once.
#pragma once

#include <cstdint>
#include <future>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cluster/assigner.h"
#include "cluster/kmeans_batch.h"
#include "kernels/cpu/knn.h"
#include "megatax/dtype.h"
#include "megatax/error.h"
#include "megatax/matrix.h"
#include "megatax/metric.h"
#include "megatax/storage.h"
#include "taxonomy/tree.h"

namespace megatax::taxonomy {

class ComputeBackend {
 public:
  virtual ~ComputeBackend() = default;
  // For logs: "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3, bf16)".
  virtual std::string describe() const = 0;
  // Whether node problems may be trained concurrently (one assigner per thread).
  virtual bool concurrent_training() const = 0;
  // Whether descend() leaves the host's cores idle while it runs (a GPU's): the fit then books
  // a shard's last batch in the background while the next shard descends.
  virtual bool descends_off_host() const { return false; }
  // An assigner for the k-means of one node; `options` are the CPU kernels' options.
  virtual std::unique_ptr<cluster::Assigner> make_assigner(Metric metric,
                                                           const kernels::KnnOptions& options) = 0;
  // A device that trains many node problems per launch (cluster/kmeans_batch.h), or null:
  // the caller then trains them one by one through make_assigner(). The CUDA backend
  // batches; its problems' results do not depend on how they are batched.
  virtual std::unique_ptr<cluster::BatchKMeansDevice> make_batch_kmeans(Metric /*metric*/) {
    return nullptr;
  }
  // Must be called after level `level` of `tree` was (re)built, before descend() on it.
  virtual void prepare_level(const Tree& tree, int level) = 0;
  // From now on levels prepared before the last stay prepared: descend() may run on any of
  // them, in any order (predict: every level at once). Default: nothing to keep.
  virtual void keep_prepared_levels() {}
  // Whether descend() takes rows in the stored dtype `stored` as they are, so the caller can
  // skip converting them to float32 (the CUDA backend, when it computes in it).
  virtual bool takes_stored_rows(DType /*stored*/) const { return false; }
  // The dtype descend() computes in. A backend that takes rows in it (takes_stored_rows)
  // and has a batch_buffer() gets rows of any other dtype converted to it into that buffer
  // as they are read (BatchReader::convert_into: no conversion pass of its own).
  virtual DType compute_dtype() const { return DType::kF32; }
  // Host memory of at least `bytes` for the pass's batches of stored rows that descend()
  // reads fastest (page-locked for a GPU: copied to the device as it is, no staging copy),
  // owned by the backend, valid until the next call; null: any memory serves as well.
  virtual unsigned char* batch_buffer(std::size_t /*bytes*/) { return nullptr; }
  // Rows [first, first + count) of the batch (shard, local_begin, rows) being read into
  // batch_buffer() (from its start) are there: called from the reading threads, concurrently,
  // ranges disjoint, in any order (BatchReader::on_rows_landed). The backend may start moving
  // them (a GPU: copies to the device while the rest is read); the descend() of that batch
  // then finds them moved. Default: nothing.
  virtual void batch_rows_landed(std::int64_t /*shard*/, std::int64_t /*local_begin*/, std::int64_t /*rows*/,
                                 std::int64_t /*first*/, std::int64_t /*count*/) {}
  // Cosine passes: whether the backend can L2-normalise rows itself, to the bit as
  // taxonomy::normalise_rows (then rounded to its compute dtype), where they land from
  // batch_buffer(); a caller that hands it raw rows there calls normalise_next_rows() before
  // that descend(), and rows it keeps (offer_resident) are kept normalised.
  virtual bool normalises_rows() const { return false; }
  virtual void normalise_next_rows() {
    throw_error(ErrorCode::kInternal, "normalise_next_rows: this backend does not normalise rows");
  }
  // Tree::descend's contract (tree.h); rows are f32, or `stored` when takes_stored_rows().
  virtual void descend(const Tree& tree, int level, const MatrixView& rows, const std::int32_t* prev,
                       std::int32_t* node, std::int32_t* child, float* dist,
                       const kernels::KnnOptions& options) = 0;
  // Optional residency (a GPU keeping the data in its memory across levels, while it fits):
  // offer_resident(shard, local_begin) before a descend() of stored rows lets the backend
  // keep a copy of those rows under that key; resident() says whether a batch of `rows` rows
  // is kept, and descend_resident() then descends it without the caller reading the rows
  // (otherwise descend()'s contract). Keys are the pass's batches: the same on every level.
  virtual void offer_resident(std::int64_t /*shard*/, std::int64_t /*local_begin*/) {}
  // Optional, after offer_resident: the offered batch's rows also lie in place in host
  // memory, as stored, in the dtype descend() gets them in (a shard file's read-only mapping,
  // VectorReader::rows_in_place: `file` holds it, the batch's first row at `rows`, back to
  // back): a backend that keeps batches in host memory may keep this one there (registered
  // with its device) instead of a copy of its own. takes_rows_in_place(): whether it may.
  virtual bool takes_rows_in_place() const { return false; }
  virtual void offer_rows_in_place(std::shared_ptr<const Storage::MappedBytes> /*file*/, const void* /*rows*/) {}
  // Optional: a file whose rows later offers will give in place (the shard read ahead, or
  // the one guessed next): the backend may make it ready for them meanwhile (register it,
  // in the background). True: the caller may also skip reading those rows, handing
  // descend() the rows where they lie (its `rows` the offered ones, as stored): the backend
  // then moves them from there itself (a GPU: over the bus from the registered file) and
  // checks them for NaN and infinities itself (non_finite_row). False: read them as usual
  // (they may still be offered).
  virtual bool expect_rows_in_place(std::shared_ptr<const Storage::MappedBytes> /*file*/) { return false; }
  // After a descend() of rows handed in place (expect_rows_in_place): the first of its rows
  // holding a NaN or an infinity, or -1 (also after any other descend(): the caller checked
  // those). The caller names the shard, row and column (check_finite on that row) and drops
  // the batch if it was kept (forget_resident).
  virtual std::int64_t non_finite_row() { return -1; }
  virtual bool resident(std::int64_t /*shard*/, std::int64_t /*local_begin*/, std::int64_t /*rows*/) const {
    return false;
  }
  // Drops the batch kept under (shard, local_begin), if any.
  virtual void forget_resident(std::int64_t /*shard*/, std::int64_t /*local_begin*/) {}
  virtual void descend_resident(const Tree& /*tree*/, int /*level*/, std::int64_t /*shard*/,
                                std::int64_t /*local_begin*/, std::int64_t /*rows*/, const std::int32_t* /*prev*/,
                                std::int32_t* /*node*/, std::int32_t* /*child*/, float* /*dist*/) {
    throw_error(ErrorCode::kInternal, "descend_resident: this backend keeps no rows");
  }
  // Optional per-node tallies of descend_resident()'s rows, where the backend descends them
  // (a GPU: the host then does not walk the rows for them): whether it can for a level of
  // `n_nodes` nodes. Between begin_tallies() and take_tallies(), each descend_resident()
  // adds its rows with a node in [0, n_nodes) to that node's tally: count += 1, inertia +=
  // double(dist), in call order and row order (the bits of the host's loop over the same
  // rows). take_tallies() ends them; its future gives the nodes with a count, ascending, and
  // their counts and inertia, once the backend has them (it may be waited for on another
  // thread while the backend goes on; the backend outlives it). Default: none.
  struct NodeTallies {
    std::vector<std::int64_t> nodes, counts;
    std::vector<double> inertia;
  };
  virtual bool tallies_on_device(std::int64_t /*n_nodes*/) const { return false; }
  virtual void begin_tallies(std::int64_t /*n_nodes*/) {
    throw_error(ErrorCode::kInternal, "begin_tallies: this backend does not tally rows");
  }
  virtual std::future<NodeTallies> take_tallies() {
    throw_error(ErrorCode::kInternal, "take_tallies: this backend does not tally rows");
  }
  // Device addresses of kept rows (offer_resident's batches), for a batch k-means device
  // (make_batch_kmeans) to take its points from (BatchKMeansDevice::prepare_from_device):
  // out[i] = where row rows[i] of shard `shard` is kept, in the compute dtype. All or
  // nothing: false (out partly written) when one is not kept. May be called from several
  // threads at once between passes (no descend meanwhile). Default: nothing is kept.
  virtual bool kept_rows(std::int64_t /*shard*/, std::span<const std::int64_t> /*rows*/, const void** /*out*/) const {
    return false;
  }
  // Whether some of kept_rows' addresses lie in host memory the device reads over the bus
  // (BatchKMeansDevice::set_rows_over_bus). Default: none.
  virtual bool keeps_rows_on_host() const { return false; }
  // Where descend()'s time went since the last call, for the pass log ("" when the backend
  // does not break it down); resets the counters.
  virtual std::string take_descend_breakdown() { return {}; }
};

// The backend for `device`: "cpu", or "cuda" (one GPU of this process: `gpu` >= 0 picks it,
// -1 = the local rank mod the visible devices (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID,
// MPI_LOCALRANKID; 0 outside MPI). `gpu_dtype` is what the GPU multiplies in: "f32", "f16",
// "bf16", or "auto" = the data's dtype when it is f16/bf16, else f32. Throws
// Error(kUnimplemented) for "cuda" in a build without the CUDA backend,
// Error(kFailedPrecondition) when no CUDA device is usable, kInvalidArgument otherwise.
std::unique_ptr<ComputeBackend> make_compute_backend(const std::string& device,
                                                     const std::string& gpu_dtype, int gpu,
                                                     DType data_dtype);

// True when this build has the CUDA backend (a GPU may still be absent).
bool have_cuda_backend() noexcept;

// Internal: the CUDA backend's factory (cuda_backend.cc, or cuda_backend_unavailable.cc).
std::unique_ptr<ComputeBackend> make_cuda_backend(DType compute_dtype, int gpu);

}  // namespace megatax::taxonomy
