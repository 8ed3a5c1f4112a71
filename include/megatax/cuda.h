// megatax/cuda.h -- the CUDA backend's kernels: fused assign (distance + argmin), fused
// top-k (distance + selection) and per-cluster accumulation, on NVIDIA GPUs.
//
// This header carries no CUDA types: streams are `void*` (a cudaStream_t), device memory is
// `void*`. It is available when the library was built with the CUDA backend (CMake target
// `megatax_cuda`, compile definition MEGATAX_HAVE_CUDA=1); the kernels live in
// src/kernels/cuda/.
//
// Layout: every matrix is a MatrixView (megatax/matrix.h) whose `data` is DEVICE memory:
// element (i, j) at data + (i * stride + j) * dtype_size(dtype). Outputs are device arrays
// of the sizes stated per field. All work is queued on the Resources' stream; a function
// returns when its work is queued (or, where stated, finished). Inputs must stay alive and
// unchanged, outputs untouched, until the stream has finished (Resources::synchronize()).
//
// Numerics (squared L2, Metric::kL2): dist(x, c) = ||x||^2 + ||c||^2 - 2 <x, c>, clamped at
// 0. f16/bf16 inputs are multiplied on tensor cores with f32 accumulation (products of two
// 16-bit values are exact in f32); norms are accumulated in f32 from the same 16-bit values.
// f32 inputs: assign (flat and grouped) and the top-k multiply on tensor cores as 3xTF32
// (each value split into two tf32 parts, three products a pair: each product within ~2^-21
// of |x_j c_j|, the dot product within ~2^-22 (||x||^2 + ||c||^2): the order of the f32
// rounding the expanded distance carries anyway); the top-k of at most 16 queries off Hopper
// (or with rows TMA cannot read), row distances and accumulate use FFMA, exact f32 products;
// MEGATAX_CUDA_F32=ffma puts assign and top-k on FFMA too (deterministic either way; finite
// values within 2^-11 of FLT_MAX overflow on the 3xTF32 path). Metric::kInnerProduct returns the
// similarity <x, c> (larger is nearer). Ties go to the smaller index. A row whose every
// distance is NaN gets label -1 and distance NaN.
//
// Errors: every CUDA call is checked; a failure throws megatax::Error naming the call and
// CUDA's error string (kResourceExhausted for out-of-memory, kFailedPrecondition when no
// device is usable, kInternal otherwise). Bad arguments throw Error(kInvalidArgument)
// naming the field before any work is queued.
//
// Thread-safety: a Resources handle (and everything queued through it) is used by one
// thread at a time; separate handles may be used concurrently from separate threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "megatax/dtype.h"
#include "megatax/matrix.h"
#include "megatax/metric.h"

namespace megatax::cuda {

// Number of CUDA devices visible to this process; 0 when there is no driver or device
// (never throws).
int device_count() noexcept;

// Owns what the kernels run with on one device: a non-blocking stream and a grow-only
// scratch buffer (the workspace). Move-only.
class Resources {
 public:
  // Selects `device` (0-based) and creates the stream. Throws Error(kFailedPrecondition)
  // if the device does not exist or cannot be used.
  explicit Resources(int device = 0);
  ~Resources();
  Resources(Resources&&) noexcept;
  Resources& operator=(Resources&&) noexcept;
  Resources(const Resources&) = delete;
  Resources& operator=(const Resources&) = delete;

  int device() const noexcept;
  int sm_count() const noexcept;             // streaming multiprocessors
  std::size_t max_smem_per_block() const noexcept;  // opt-in dynamic shared memory limit
  std::size_t l2_cache_bytes() const noexcept;
  // The device's free and total memory now, in bytes (cudaMemGetInfo); throws on a CUDA error.
  std::pair<std::size_t, std::size_t> memory_info() const;
  std::string device_name() const;           // "NVIDIA H100 80GB HBM3"
  void* stream() const noexcept;             // the cudaStream_t, for interop

  // Makes this handle's device current for the calling thread (every entry point does it).
  void activate() const;
  // Blocks until everything queued on the stream has finished; throws on a CUDA error.
  void synchronize() const;

  // Scratch device memory of at least `bytes`, owned by the handle, 256-byte aligned. The
  // pointer stays valid until the next workspace() call that needs to grow it (growing waits
  // for the stream first). Entry points use it for their temporaries.
  void* workspace(std::size_t bytes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

namespace detail {
// The kinds of memory a buffer can own (resources.cc). allocate throws
// Error(kResourceExhausted) on failure; release never throws.
// DeviceMemory allocates on the calling thread's current device: a thread's is GPU 0 until
// something sets it, so code that may run on any thread (engine workers, reading threads)
// calls Resources::activate() before it allocates, frees or launches.
struct DeviceMemory {  // cudaMalloc / cudaFree on the current device
  static void* allocate(std::size_t bytes);
  static void release(void* p, std::size_t bytes) noexcept;
};
// Page-locked host memory: fresh anonymous pages (transparent huge pages asked for),
// faulted in on several threads, then registered with the driver (cudaHostRegister).
// cudaMallocHost faults and locks on one thread: 0.7 s per 1.25 GiB on an H100 machine,
// against 0.05 s this way (bench/RESULTS.md, "Page-locking"). Small buffers (< 4 MiB) come
// from cudaMallocHost.
struct PinnedMemory {
  static void* allocate(std::size_t bytes);
  static void release(void* p, std::size_t bytes) noexcept;
};
}  // namespace detail

// Memory owned by a value, of one kind (detail::DeviceMemory, detail::PinnedMemory).
// Move-only; size 0 owns nothing.
template <class Memory>
class OwnedBuffer {
 public:
  OwnedBuffer() = default;
  explicit OwnedBuffer(std::size_t bytes)
      : data_(bytes > 0 ? Memory::allocate(bytes) : nullptr), size_(bytes) {}
  ~OwnedBuffer() {
    if (data_ != nullptr) Memory::release(data_, size_);
  }
  OwnedBuffer(OwnedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  OwnedBuffer& operator=(OwnedBuffer&& other) noexcept {
    if (this != &other) {
      if (data_ != nullptr) Memory::release(data_, size_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  OwnedBuffer(const OwnedBuffer&) = delete;
  OwnedBuffer& operator=(const OwnedBuffer&) = delete;

  // Grows to at least `bytes` (a new allocation: the contents are not kept); no-op if large
  // enough. Allocating and freeing device memory synchronise the device: reuse buffers.
  void reserve(std::size_t bytes) {
    if (size_ < bytes) *this = OwnedBuffer(bytes);
  }
  // reserve() for scratch sized by each call's work, varying a little between calls (a
  // batch's rows): the first allocation is `bytes`, a later growth a quarter more than asked,
  // so that the few largest calls do not each free and allocate (and synchronise the device).
  void grow(std::size_t bytes) {
    if (size_ < bytes) *this = OwnedBuffer(size_ == 0 ? bytes : bytes + bytes / 4);
  }
  void* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  template <class T>
  T* as() const noexcept {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

// Device memory (kernels' operands). Page-locked host memory: copies from and to it run at
// the link's full rate and asynchronously.
using DeviceBuffer = OwnedBuffer<detail::DeviceMemory>;
using PinnedBuffer = OwnedBuffer<detail::PinnedMemory>;

// Copies on the handle's stream. copy_to_host waits for the stream before returning (so the
// host buffer is filled); copy_to_device and fill_zero only queue (the host source of
// copy_to_device must stay alive until synchronize(); pageable memory makes it synchronous).
void copy_to_device(Resources& res, void* dst, const void* src, std::size_t bytes);
void copy_to_host(Resources& res, void* dst, const void* src, std::size_t bytes);
void fill_zero(Resources& res, void* dst, std::size_t bytes);
// Queues a device-to-host copy and returns at once: dst must be page-locked (PinnedBuffer)
// and is filled once the stream has got there (an Event recorded after it, synchronize()).
void copy_to_host_async(Resources& res, void* dst, const void* src, std::size_t bytes);

// A point in a Resources' stream (cudaEvent_t, timing off): record() marks everything queued
// so far; synchronize() blocks until that work has finished, from any thread, without
// waiting for what was queued after. Move-only; an event never recorded is complete.
class Event {
 public:
  Event();
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(Resources& res);
  void synchronize() const;  // throws on a CUDA error
  // Work queued on res's stream from now on starts once the recorded work has finished (on
  // the device: the host does not wait). No-op for an event never recorded.
  void enqueue_wait(Resources& res) const;

 private:
  void* event_ = nullptr;  // cudaEvent_t
  int device_ = 0;
};
// Where kernels on any device find page-locked host memory (a PinnedBuffer's bytes, or a
// point inside them): they read it over the bus, no copy queued. Throws on a CUDA error
// (memory that is not page-locked).
const void* device_address(const void* pinned);
// Host memory that is not ours, registered with the driver where it lies (page-locked and
// mapped for every device): kernels read it over the bus at device_address() and copies from
// it run at the link's rate, with no copy into buffers of our own first. For a file's
// read-only mapping in the page cache pass read_only (cudaHostRegisterReadOnly, which such
// memory needs). [data, data + bytes) must stay mapped while registered (widened to whole
// pages); unregistered on destruction. Throws Error: kUnimplemented where the device cannot
// register read-only memory, CUDA's error otherwise (e.g. kResourceExhausted).
class HostRegistration {
 public:
  HostRegistration() = default;
  HostRegistration(const void* data, std::size_t bytes, bool read_only);
  ~HostRegistration();
  HostRegistration(HostRegistration&& other) noexcept
      : base_(std::exchange(other.base_, nullptr)), span_(std::exchange(other.span_, 0)) {}
  HostRegistration& operator=(HostRegistration&& other) noexcept;
  HostRegistration(const HostRegistration&) = delete;
  HostRegistration& operator=(const HostRegistration&) = delete;
  bool registered() const noexcept { return base_ != nullptr; }

 private:
  void* base_ = nullptr;  // the first whole page registered
  std::size_t span_ = 0;  // bytes from base_, whole pages
};
// Device-to-device copy (queued; dst and src must not overlap).
void copy_device_to_device(Resources& res, void* dst, const void* src, std::size_t bytes);

// Fills rows [r0, r1) of row_bytes bytes each into host memory `out` (packed).
using RowFill = std::function<void(std::int64_t r0, std::int64_t r1, unsigned char* out)>;
// Copies `rows` rows of row_bytes bytes, produced by `fill`, to device memory `dst` (packed)
// through two page-locked halves of `staging` (each up to half_bytes, rounded down to whole
// rows, at least one row; grown as needed): one half is filled while the other's copy runs.
// Returns when every copy has finished (the staging buffer is free again).
void upload_rows_staged(Resources& res, PinnedBuffer& staging, void* dst, std::int64_t rows, std::size_t row_bytes,
                        std::size_t half_bytes, const RowFill& fill);

enum class IndexType : std::uint8_t { kI32 = 0, kI64 = 1 };

// out[i] = ||x_i||^2 accumulated in f32, for i < x.rows. out: device [x.rows].
// x.dtype: f32, f16 or bf16.
void row_norms(Resources& res, const MatrixView& x, float* out);

// Scales each row of x (device, f32 / f16 / bf16) to unit L2 norm in place, to the bit as the
// host's taxonomy::normalise_rows on the rows' f32 values followed by a round-to-nearest
// conversion back to x.dtype: the float64 sum of squares in column order, 1 / sqrt of it, each
// value times that in float64 rounded to f32. Rows of norm 0 stay as they are. Queued on
// res's stream (cosine fits normalise their rows on the device, where the GPU keeps them).
void normalise_rows(Resources& res, const MatrixView& x);

// Queues a search of x (device, f32 / f16 / bf16) for NaN and infinities: once the stream
// has got there, *first_row (device memory) holds the smallest row index with such a value,
// or -1 when every value is finite (rows that reach the device without the host reading
// them, e.g. copied over the bus from a file's registered page cache, are checked here).
void find_non_finite_row(Resources& res, const MatrixView& x, std::int64_t* first_row);

// ---- assign: label[i] = argmin_j dist(x_i, c_j), fused (no [n, k] matrix anywhere) -------
struct AssignArgs {
  Metric metric = Metric::kL2;
  MatrixView x;          // device, n x d; dtype f32, f16 or bf16
  MatrixView centroids;  // device, k x d, same dtype and d as x; k >= 1
  // Optional device [n] / [k] squared norms (kL2 only). When null they are computed: the
  // x norms inside the fused kernel (no extra pass over x), the centroid norms by a small
  // kernel. Pass cached centroid norms when reassigning many batches against the same
  // centroids.
  const float* x_norms = nullptr;
  const float* c_norms = nullptr;
  IndexType label_type = IndexType::kI64;
  void* labels = nullptr;       // device [n] of int32 or int64 (label_type); required if n > 0
  float* distances = nullptr;   // optional device [n]: distance (kL2) or similarity (kIP)
};
// Queues the assignment. Throws Error(kInvalidArgument) for bad shapes, dtypes or pointers.
void assign(Resources& res, const AssignArgs& args);

// ---- grouped assign: each row against its own group's centroids (a tree level's descent) ---
// Rows are sorted by group: group g owns rows [row_begin[g], row_begin[g+1]) of x and
// centroids [centroid_begin[g], centroid_end[g]) of `centroids` (non-empty; groups may share
// or skip centroids). labels[i] =
// the nearest of its group's centroids, as an index WITHIN the group (ties to the smaller);
// the same numerics as assign(). One launch for all groups (one block per 128 rows of a
// group, so groups of very few rows use the tensor cores poorly).
struct GroupedAssignArgs {
  Metric metric = Metric::kL2;
  MatrixView x;                               // device, n x d; f32, f16 or bf16
  MatrixView centroids;                       // device, K x d, same dtype and d
  const float* c_norms = nullptr;             // optional device [K] (kL2); computed when null
  std::vector<std::int64_t> row_begin;        // host, groups + 1: 0 ... n, non-decreasing
  std::vector<std::int64_t> centroid_begin;   // host, groups
  std::vector<std::int64_t> centroid_end;     // host, groups
  std::int32_t* labels = nullptr;             // device [n]
  float* distances = nullptr;                 // optional device [n]
  // Optional host [groups]: nonzero = the group is skipped, its rows' labels and distances
  // left as they are (k-means problems of a batch that have converged).
  std::vector<std::uint8_t> skip;
};
// Queues the grouped assignment (the host arrays are consumed before it returns). Throws
// Error(kInvalidArgument) naming the field for bad shapes or group ranges.
void assign_grouped(Resources& res, const GroupedAssignArgs& args);

// ---- top-k: the k nearest database rows per query, fused distance + selection ---------------
struct TopkArgs {
  Metric metric = Metric::kL2;
  MatrixView queries;   // device, q x d; dtype f32, f16 or bf16
  MatrixView database;  // device, n x d, same dtype and d
  // Optional device [n] squared norms of the database rows (kL2): an index keeps them so
  // that a search reads the database once; computed (one extra pass) when null.
  const float* database_norms = nullptr;
  std::int64_t k = 0;             // 1..4096; k > n gives id -1 / distance +inf (IP: -inf) tails
  float* distances = nullptr;     // device [q * k], row-major, nearest first
  std::int64_t* ids = nullptr;    // device [q * k]: database row numbers
  // Bound on the per-call candidate lists (q x chunks x k x 12 bytes); queries are processed
  // in batches when one batch would exceed it.
  std::size_t max_workspace_bytes = std::size_t{1} << 30;
};
// Queues the search. Results per query are sorted by (distance, id), ties to the smaller id
// (kInnerProduct: by similarity, largest first). Throws Error(kInvalidArgument) for bad
// arguments.
void topk(Resources& res, const TopkArgs& args);

// ---- row distances: a few rows of x against many (k-means++ seeding) --------------------
struct RowDistanceArgs {
  MatrixView x;                    // device, n x d; dtype f32, f16 or bf16
  const std::int64_t* a = nullptr; // device [n_a] row numbers of x (the candidates)
  std::int64_t n_a = 0;            // 1..kMaxRowDistanceCandidates
  const std::int64_t* b = nullptr; // device [n_b] row numbers of x; null: rows 0..n_b-1
  std::int64_t n_b = 0;            // >= 0
  float* out = nullptr;            // device [n_a * n_b]
};
inline constexpr std::int64_t kMaxRowDistanceCandidates = 16;
// Queues out[t * n_b + i] = sum_j (x[a[t]][j] - x[b[i]][j])^2 in a fixed order (same
// inputs, same bits):
//  - f32 rows, and 16-bit rows wider than 4096: summed in f32 from the elements' exact f32
//    values (error ~sqrt(d) * 2^-24 of the distance);
//  - f16/bf16 rows up to 4096 wide: on tensor cores, as |p|^2 + |c|^2 - 2 p.c clamped at 0,
//    each term an f32-accumulated sum of exact products (error ~sqrt(d) * 2^-24 of
//    |p|^2 + |c|^2, so small distances between large rows are coarse); identical rows are
//    exactly 0 apart.
// Row numbers must lie in [0, x.rows) (device arrays: not checked). Throws
// Error(kInvalidArgument) for bad arguments (naming the field).
void row_distances(Resources& res, const RowDistanceArgs& args);

// The same for many groups in one launch (k-means++ of many problems at once): group g has
// pool rows b[b_begin[g] .. b_begin[g+1]) and n_a[g] (0..16) candidates a[g * 16 + t]; it
// writes out[out_begin[g] + t * m_g + i] (m_g = its pool size), with the arithmetic of
// row_distances (the same bits for the same rows). All arrays are device arrays.
struct GroupedRowDistanceArgs {
  MatrixView x;
  std::int64_t groups = 0;
  const std::int64_t* b = nullptr;          // [n_b]
  const std::int64_t* b_begin = nullptr;    // [groups + 1], b_begin[0] = 0, b_begin[groups] = n_b
  std::int64_t n_b = 0;
  const std::int64_t* a = nullptr;          // [groups * kMaxRowDistanceCandidates]
  const std::int32_t* n_a = nullptr;        // [groups]
  const std::int64_t* out_begin = nullptr;  // [groups]
  float* out = nullptr;
  std::int64_t max_n_a = kMaxRowDistanceCandidates;  // host: no n_a[g] exceeds it (sizes shared memory)
};
void row_distances_grouped(Resources& res, const GroupedRowDistanceArgs& args);

// ---- pool Gram matrices (k-means++ seeding) -----------------------------------------------
// Queues, for each group g < groups with pool rows p_i = x[b[b_begin[g] + i]] (i < m_g):
//   gram[gram_begin[g] + t * m_g + i] = p_t . p_i   and   norms[b_begin[g] + i] = p_i . p_i
// on tensor cores, each an f32 sum of the same mma products in the same k slots and order as
// row_distances' p.c and |p|^2 for 16-bit rows: so |p_i|^2 + |p_t|^2 - 2 p_t.p_i clamped at 0
// (rounded step by step) is row_distances' distance between pool rows t and i, bit for bit.
// A seeding round then reads n_a rows of gram (n_a * m_g floats) instead of the pool
// (m_g * d elements). Cost: about m_g^2 d flops (the tiles on and above the diagonal, each
// also written mirrored) and 4 m_g^2 bytes written per group.
// b_begin's values index b directly (b_begin[0] need not be 0: a caller may pass b_begin + g0
// and gram_begin + g0 for groups g0 ..). Requires pool_gram_supported(res, x).
struct PoolGramArgs {
  MatrixView x;                               // device rows, f16 or bf16
  std::int64_t groups = 0;                    // 1 .. 65535
  const std::int64_t* b = nullptr;            // device: pool rows (row numbers of x)
  const std::int64_t* b_begin = nullptr;      // device [groups + 1]
  std::int64_t max_m = 0;                     // host: the largest m_g
  const std::int64_t* gram_begin = nullptr;   // device [groups]: offsets into gram (floats)
  float* gram = nullptr;                      // device
  float* norms = nullptr;                     // device, indexed like b
};
// True when pool_gram serves x (a device view): f16/bf16 rows that row_distances puts on
// tensor cores, 16-byte aligned with d and the stride multiples of 8 elements.
bool pool_gram_supported(const Resources& res, const MatrixView& x);
// Throws Error(kInvalidArgument) for unsupported rows or bad host fields; device arrays are
// not checked.
void pool_gram(Resources& res, const PoolGramArgs& args);

// ---- gather rows ---------------------------------------------------------------------------
// Queues dst row t = src row idx[t] for t < n: rows of row_bytes bytes, packed (device
// memory; idx a device array of row numbers of src, not checked). 16-byte copies when the
// rows and pointers allow. Throws Error(kInvalidArgument) for null pointers or n < 0.
void gather_rows(Resources& res, const void* src, std::size_t row_bytes, const std::int64_t* idx, std::int64_t n,
                 void* dst);
// Queues dst row t = the row_bytes bytes at rows[t] for t < n (rows: a device array of device
// addresses, not checked; dst packed): rows kept anywhere on the device, e.g. in many
// buffers, or in page-locked host memory at its device_address() (read over the bus). 16-byte
// copies for every row whose address allows. max_sms = 0: a grid that fills the device (rows
// in its memory); > 0: the gather keeps to at most that many SMs (rows read over the bus
// need a few to keep it busy; the rest stay free for kernels running beside the gather, on
// other streams). Throws Error(kInvalidArgument) for null pointers, n < 0 or max_sms < 0.
void gather_rows_at(Resources& res, const void* const* rows, std::size_t row_bytes, std::int64_t n, void* dst,
                    int max_sms = 0);
// Queues the copy of `bytes` bytes from src to dst by a kernel kept to `sms` SMs, not by a
// copy engine: src in page-locked host memory at its device_address() is read over the bus
// (a few SMs keep it at its rate) while the copy engines carry other copies (a host->device
// copy queued on another stream waits for the one before it in the same direction; this one
// does not hold it back). 16-byte pieces when both pointers are 16-byte aligned, else bytes.
// Throws Error(kInvalidArgument) for null pointers (with bytes > 0) or sms < 1.
void copy_by_sms(Resources& res, void* dst, const void* src, std::size_t bytes, int sms);

// ---- a level's descent: rows grouped by parent, results back in row order -----------------
// Queues order[t] and sorted_parent[t] for t < n: rows 0..n-1 stably sorted by parent[i]
// (device [n]); rows whose parent is negative, >= n_parents or has no children at this level
// (child_begin[p + 1] == child_begin[p]; child_begin: device [n_parents + 1]) come last, with
// sorted_parent n_parents. Each parent's rows stay in row order: the host's counting sort
// (taxonomy/row_groups.h) gives the same order. Temporaries in res.workspace(). Throws
// Error(kInvalidArgument) for n outside [0, 2^31 - 1), n_parents outside [1, 2^31 - 1) or a
// null pointer (device arrays are not checked).
void order_rows_by_parent(Resources& res, const std::int32_t* parent, std::int64_t n,
                          const std::int64_t* child_begin, std::int64_t n_parents, std::int64_t* order,
                          std::int32_t* sorted_parent);
// Queues the runs of order_rows_by_parent's sorted_parent (device [n]): *runs (device) = their
// number, parents[r] and counts[r] (device, up to min(n, n_parents + 1) entries) each run's
// parent and rows, ascending (a last run of n_parents holds the rows under no parent with
// children). Temporaries in res.workspace(). Throws Error(kInvalidArgument) for n outside
// [0, 2^31 - 1) or a null pointer.
void count_sorted_parents(Resources& res, const std::int32_t* sorted_parent, std::int64_t n, std::int32_t* parents,
                          std::int32_t* counts, std::int64_t* runs);
// Queues the descent's results in row order, from order_rows_by_parent's order and
// sorted_parent and the grouped assignment of its first m rows (labels, distances: device
// [m], in that order): for t < m and i = order[t], child[i] = labels[t], node[i] =
// child_begin[sorted_parent[t]] + labels[t], dist[i] = distances[t]; for m <= t < n,
// node[i] = child[i] = -1 and dist[i] = 0 (all device [n]). Throws Error(kInvalidArgument)
// unless 0 <= m <= n, or for a null pointer.
void scatter_descent(Resources& res, const std::int64_t* order, const std::int32_t* sorted_parent,
                     const std::int32_t* labels, const float* distances, std::int64_t m, std::int64_t n,
                     const std::int64_t* child_begin, std::int32_t* node, std::int32_t* child, float* dist);

// ---- a pass's per-node tallies ----------------------------------------------------------------
// One node's tally in a pass: its rows, and their distances summed in float64.
struct DeviceNodeTally {
  std::int64_t count = 0;
  double inertia = 0.0;
};
// Queues, for each row i < n (row order) with 0 <= node[i] < n_nodes: tally[node[i]].count
// += 1 and tally[node[i]].inertia += double(dist[i]), each node's additions in row order
// from its running value: the bits of the host's loop over the same rows (node, dist: device
// [n]; tally: device [n_nodes]; other rows are skipped). Temporaries in res.workspace().
// Throws Error(kInvalidArgument) for n outside [0, 2^31 - 1), n_nodes outside [1, 2^31 - 1)
// or a null pointer.
void tally_rows_by_node(Resources& res, const std::int32_t* node, const float* dist, std::int64_t n,
                        std::int64_t n_nodes, DeviceNodeTally* tally);
// Queues the tallies out: *touched (device) = the nodes with a count, nodes[0 .. *touched)
// those nodes ascending, counts and inertia theirs (all device [n_nodes]); their tallies are
// zeroed (the whole array is then zero again). Temporaries in res.workspace(). Throws
// Error(kInvalidArgument) for n_nodes outside [1, 2^31 - 1) or a null pointer.
void take_node_tallies(Resources& res, DeviceNodeTally* tally, std::int64_t n_nodes, std::int32_t* nodes,
                       std::int64_t* counts, double* inertia, std::int64_t* touched);

// ---- rows to float32 --------------------------------------------------------------------------
// Queues out (device, x.rows x x.dim floats, dense) = the f32 values of x's rows (a device
// view: f32, f16 or bf16; exact). Throws Error(kInvalidArgument) for a bad view or null out.
void rows_to_f32(Resources& res, const MatrixView& x, float* out);

// ---- k-means++ seeding of many problems, on the device ----------------------------------
// Greedy k-means++ (cluster/kmeans_steps.h's SeedingRun: each centroid draws `trials` pool
// points by D^2 sampling and keeps the one that lowers the pool's potential most) for many
// problems at once, queued as max_k rounds of two launches (candidate distances through
// row_distances_grouped, then one block per problem that picks, updates its pool's nearest
// distances and draws the next candidates) with no host round trip in between.
//
// The arithmetic is SeedingRun's, step for step: float64 potentials summed in 32 lanes of
// pool points (kmeans_steps.h), the candidate with the smallest potential (first on ties), a
// draw = the pool point whose lane-ordered running float64 sum of nearest distances first
// exceeds u * potential (SeedingRun's rule for rounding), and when the potential is 0 (every pool point sits on
// a centroid) centroid c is pool point c mod m without drawing. The uniforms are the ones
// the host run would draw, in its order: a problem consumes `trials` of them per drawn
// centroid. Given the same candidate distances a problem chooses the same pool points as
// SeedingRun, whatever other problems share the launch.
struct SeedingProblem {        // one problem (an element of a device array)
  std::int64_t k = 0;          // centroids to choose: 1 .. its pool size
  std::int64_t first = 0;      // centroid 0: this pool index (0-based in its pool)
  std::int64_t uniform_begin = 0;  // its (k - 1) * trials uniforms in [0, 1) start here
  std::int32_t trials = 0;     // candidates per drawn centroid: 1 .. kMaxRowDistanceCandidates
  std::int32_t pad = 0;
};
struct GroupedSeedingArgs {
  MatrixView x;                                // device rows, dtype f32, f16 or bf16
  std::int64_t groups = 0;                     // >= 1
  const std::int64_t* b = nullptr;             // [n_b] pool rows (row numbers of x)
  const std::int64_t* b_begin = nullptr;       // [groups + 1] problem g's pool: b[b_begin[g] ..)
  std::int64_t n_b = 0;
  const SeedingProblem* problems = nullptr;    // [groups]
  const double* uniforms = nullptr;
  std::int64_t max_k = 0;                      // host copy: the largest k (rounds queued)
  std::int32_t max_trials = 0;                 // host copy: the largest trials
  std::int64_t* chosen = nullptr;              // [groups * max_k] out: problem g's k pool indices at g * max_k
  // Optional: a host copy of b_begin (the rounds' shared stage is then sized to the largest
  // pool), and device memory for the pools' Gram matrices (pool_gram), which needs it. When
  // both are given (and pool_gram_supported), problems run in chunks whose matrices fit
  // `scratch_bytes` (each problem's 4 m^2 bytes must): a chunk's Gram launch, then its
  // rounds reading candidates' Gram rows instead of the pool: the same distances (bits), so
  // the same choices. Else every round reads the pools through row_distances_grouped.
  const std::int64_t* b_begin_host = nullptr;  // [groups + 1]
  void* scratch = nullptr;
  std::size_t scratch_bytes = 0;
};
// Queues the whole seeding (its temporaries in res.workspace(): about 4 + 4 * max_trials
// bytes per pool row, 8 with Gram matrices). Device arrays are not checked; host fields are
// (Error(kInvalidArgument)).
void seed_grouped(Resources& res, const GroupedSeedingArgs& args);

// ---- accumulate: per-cluster sums and counts ---------------------------------------------
enum class SumType : std::uint8_t { kF32 = 0, kF64 = 1 };

struct AccumulateArgs {
  MatrixView x;                    // device, n x d; dtype f32, f16 or bf16
  IndexType label_type = IndexType::kI64;
  const void* labels = nullptr;    // device [n], each in [0, k)
  std::int64_t k = 0;              // clusters, >= 1
  SumType sum_type = SumType::kF64;
  void* sums = nullptr;            // device [k * d] of float/double: rows' sums are ADDED
  std::int64_t* counts = nullptr;  // optional device [k]: rows per cluster are ADDED
  // A negative label marks a row of no cluster (skipped: neither summed nor counted) instead
  // of an error.
  bool skip_negative = false;
  // Validate the labels (a wait for the stream). false: for labels in range by construction
  // (an assign's); a label outside [0, k) is then summed and counted nowhere, silently.
  bool check_labels = true;
  // Optional (kF64 only): Lloyd's means instead of sums, the sums never stored (`sums` may be
  // null; nothing is added there): for every cluster c with rows and !keep[c],
  // means[c][j] = float(sum_c[j] / count_c) (float64 division) and, when given,
  // converted[c][j] = the same rounded to converted_dtype (f32, f16 or bf16); other clusters
  // untouched. The same bits as accumulating into zeroed sums and then means() without
  // normalise, with one pass over the rows and no k x d float64 array in memory.
  float* means = nullptr;                // device [k * d]
  const std::uint8_t* keep = nullptr;    // optional device [k]
  void* converted = nullptr;             // optional device [k * d] of converted_dtype
  DType converted_dtype = DType::kF16;
};
// Adds every row of x to its cluster's sum (and 1 to its count). Deterministic: the same
// inputs give bit-identical sums (rows are summed in row order within a cluster, through a
// stable sort by label and a fixed-shape reduction; no atomics on sums). Needs n < 2^31.
// With check_labels, waits for the stream once (to validate the labels before anything is
// written): a label outside [0, k) throws Error(kInvalidArgument) and leaves sums and counts
// unchanged. Without, nothing waits: the call only queues work on the stream.
void accumulate(Resources& res, const AccumulateArgs& args);

// ---- means: centroids from per-cluster sums (k-means' update on the device) ---------------
struct MeansArgs {
  const double* sums = nullptr;            // device [k * d]
  const std::int64_t* counts = nullptr;    // device [k]
  std::int64_t k = 0, d = 0;
  const std::uint8_t* keep = nullptr;      // optional device [k]: nonzero = leave centroid c
  bool normalise = false;                  // scale each new centroid to unit L2 norm
  float* centroids = nullptr;              // device [k * d] f32: updated in place
  void* converted = nullptr;               // optional device [k * d] of converted_dtype: the
  DType converted_dtype = DType::kF16;     // same centroids in the kernels' dtype, kept in step
};
// For every cluster c with counts[c] > 0 and !keep[c]: centroids[c][j] = float(sums[c][j] /
// counts[c]) (float64 division), then, with normalise, times 1 / sqrt(sum of squares in
// float64, a fixed order); converted[c] = the same values rounded to its dtype. Other
// clusters are untouched. Deterministic. Throws Error(kInvalidArgument) for bad arguments.
void means(Resources& res, const MeansArgs& args);

// ---- Lloyd's decisions for many problems, on the device ----------------------------------
// What cluster/kmeans_steps.h's LloydRun::assigned() decides after an assignment, made for
// every problem of a batch without the labels or distances crossing the bus: problem g's
// inertia (the float64 sum of its rows' distances, one add at a time in row order: the
// host's bits), whether it updates now (not when its relative change of inertia against its
// last assignment's is below tol after at least one update, nor once it has made max_iter
// updates), and the update's inputs: every row's label numbered across the batch
// (labels[i] + centroid_begin[g] where g updates, -1 elsewhere: accumulate's skip_negative)
// and a keep flag per centroid (1 unless its problem updates: means' keep).
struct LloydProblem {      // one problem's state between assignments (an element of a device array)
  double last_inertia = 0;  // its last assignment's inertia (read once updates > 0)
  double tol = 0;
  std::int32_t updates = 0;  // updates made so far (counted here)
  std::int32_t max_iter = 0;
};
struct LloydDecideArgs {
  std::int64_t groups = 0;
  const std::int64_t* row_begin = nullptr;       // device [groups + 1]: problem g's rows
  const std::int64_t* centroid_begin = nullptr;  // device [groups + 1]: its centroids, numbered across the batch
  const std::uint8_t* assigned = nullptr;        // device [groups]: nonzero = assigned by the last assignment
  const std::int32_t* labels = nullptr;          // device [n]: the assignment's labels (within each problem)
  const float* distances = nullptr;              // device [n]
  LloydProblem* problems = nullptr;              // device [groups]: read and updated (assigned problems)
  double* inertia = nullptr;                     // device [groups] out (assigned problems)
  std::uint8_t* updates = nullptr;               // device [groups] out: 1 = updates now (0 unless assigned)
  std::int32_t* global_labels = nullptr;         // device [n] out
  std::uint8_t* keep = nullptr;                  // device [centroid_begin[groups]] out
};
// Queues the decisions (one block a problem; its inertia a chain of as many adds as it has
// rows). Throws Error(kInvalidArgument) for groups < 1 or a null pointer (device arrays are
// not checked).
void lloyd_decide(Resources& res, const LloydDecideArgs& args);

}  // namespace megatax::cuda
