// megatax/taxonomy.h -- the taxonomy engine: hierarchical k-means over sharded vector files.
//
// A taxonomy is a tree of k-means centroids built top-down, level by level (see
// docs/DESIGN.md of the shared design, "Fit, as data flows"). Every sample gets a path
// (c_1, ..., c_L): the child index chosen at each level. fit() streams the dataset once per
// level (plus lloyd_passes extra passes per level) with bounded memory, keeps its state at
// storage_uri and can resume a killed run; predict() descends the tree for new vectors.
//
// Leaves: a node whose point count is below the level's branching factor is not split; its
// points get path entry -1 at every deeper level, and their distance is the one to the
// deepest centroid they reached.
//
// Metrics: kL2 -- squared Euclidean distance; kInnerProduct -- similarity (larger is
// nearer), centroids are means; kCosine -- vectors are L2-normalised on read and clustered
// by inner product with normalised (spherical) centroids; the distance reported is the
// similarity.
//
// Determinism: the same data (same rows in the same global order), config and seed give
// byte-identical centroids and paths whatever the threads and however the rows are split
// into shards (lloyd_passes > 0 only guarantees it for a fixed shard layout).
//
// Thread-safety: a TaxonomyEngine is used by one thread at a time; it uses `threads`
// threads inside its calls.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "megatax/matrix.h"

namespace megatax {

namespace dist {
class Executor;  // internal: src/dist/executor.h
}

enum class TaxonomyMetric : int { kL2 = 0, kInnerProduct = 1, kCosine = 2 };
const char* taxonomy_metric_name(TaxonomyMetric m) noexcept;  // "l2", "ip", "cosine"
TaxonomyMetric parse_taxonomy_metric(const std::string& name);  // throws kInvalidArgument

struct TaxonomyConfig {
  int n_levels = 3;                       // L >= 1
  // Children per node at each level: one entry (used for every level) or n_levels entries.
  std::vector<std::int64_t> branching = {100};
  std::int64_t dim = 0;                   // 0: taken from the data at fit time
  std::string storage_uri;                // where the model and the fit state live
  TaxonomyMetric metric = TaxonomyMetric::kL2;
  std::int64_t sample_per_centroid = 256; // training sample per node = this x branching
  int max_iter = 20;                      // Lloyd iterations per node (on its sample)
  double tol = 1e-4;                      // relative inertia change that stops Lloyd
  std::uint64_t seed = 0;
  int threads = 0;                        // 0 = all hardware threads
  int lloyd_passes = 0;                   // extra full-data Lloyd passes per level
  std::int64_t batch_rows = 65536;        // rows read per batch
  std::int64_t memory_budget_mb = 1024;   // training samples of one group of node problems
                                          // (the CUDA backend holds two: one trains, one is read)
  std::string simd = "auto";              // CPU kernel path (auto|scalar|avx2|avx512|neon)
  // Where the kernels run: "cpu", or "cuda" (one GPU per process: `gpu` >= 0 picks it, -1 =
  // the MPI local rank mod the visible GPUs). gpu_dtype is what the GPU multiplies in:
  // "auto" (the data's dtype when f16/bf16, else f32), "f32" (3xTF32 on tensor cores: f32
  // accuracy, cuda.h), "f16", "bf16" (tensor cores). A GPU fit is deterministic but its tree may differ from the CPU's where
  // two centroids tie within rounding; a fit resumes only on the device it started on.
  std::string device = "cpu";
  std::string gpu_dtype = "auto";
  int gpu = -1;
  // Input columns of Parquet shards: the embedding column, an optional integer id column whose
  // values replace the global ids in the outputs, and whether null embeddings are skipped
  // (counted) instead of being an error. Ignored by the other formats.
  std::string column = "embedding";
  std::string id_column;
  bool skip_null = false;
  // Output files per shard: "npy" (<stem>.paths.npy, <stem>.ids.npy, <stem>.dist.npy) or
  // "parquet" (<stem>.parquet: id int64, path list<int32>, dist float32; ZSTD).
  std::string output_format = "npy";

  // Auto-balancing for skewed data (DESIGN.md "Balancing"). When on, a parent j of level
  // l-1 gets b_j = clamp(round(b_l * count_j / mean count of the splittable parents),
  // min_branching, max_branching) children (never more than its points or its sample), and
  // on the last level every child with more than max_leaf_size points is split in place into
  // ceil(count / max_leaf_size) siblings by k-means on its part of the parent's sample
  // (dynamic splitting; at most max_split_rounds extra assignment passes). All decisions use the all-reduced node counts: deterministic on any
  // thread or rank count. Off: every split parent gets exactly b_l children.
  bool balance = false;
  std::int64_t min_node_size = 0;   // parents with fewer points stay leaves (0: b_l)
  std::int64_t max_leaf_size = 0;   // last-level cap (0: 1.5 x N / prod(b_l)); needs balance
  std::int64_t min_branching = 2;   // per-node children, lower bound (balance)
  std::int64_t max_branching = 0;   // per-node children, upper bound (0: 4 x b_l) (balance)
  int max_split_rounds = 4;         // dynamic splitting rounds on the last level (balance)

  // HNSW centroid search (hnswlib) for wide parents: a parent with more than hnsw_threshold
  // children gets a graph over them, built at fit time (single-threaded, fixed seed:
  // deterministic), persisted as level-<l>/hnsw-<parent>.bin and used by the assignment
  // pass and by predict. 0 = always scan (exact). hnsw_ef trades speed for agreement with
  // the scan; it can be changed after load (set_search). hnsw_m: graph degree (layer 0
  // keeps 2 hnsw_m links per child); hnsw_ef_construction: candidates kept while building.
  //
  // Defaults, measured with bench/hnsw_predict.cc on a 2-vCPU Zen 4 with AVX-512, 2 threads
  // on both sides, queries drawn around the centroids (tables: bench/RESULTS.md, "HNSW
  // centroid search"):
  //  - hnsw_threshold 8192. The scan costs O(width) per point, the graph about O(log width);
  //    at hnsw_ef 32 the graph starts to win at ~5,500 children for D = 128 and ~2,400 for
  //    D = 1024 (at hnsw_ef 16: ~3,000 and ~1,500). Above 8,192 it wins by >= 1.7x
  //    (D = 128) and >= 3.7x (D = 1024), agreeing with the scan on >= 99.9% of points, so
  //    the approximation is only taken where it pays well; for D = 1024, 4096 still pays
  //    (1.8x).
  //  - hnsw_m 32, hnsw_ef_construction 200: at the same speed M = 32 agrees with the scan
  //    more often than M = 16 (65,536 x 128 at ~12x: 99.85% vs 99.65%); ef_construction 400
  //    moves agreement by < 0.4 points for twice the build time. A 65,536-wide graph builds
  //    in 11 s (D = 128) / 47 s (D = 1024) on one thread.
  //  - hnsw_ef 32: on 65,536 children the chosen child is the scan's for 99.9% of the points
  //    near their centroids (D = 128: 10.6x the scan's throughput; D = 1024: 12.8x) and for
  //    >= 99.6% of harder points far from every centroid (fresh points of a dense region,
  //    where M = 16 needed ef 48). ef 16-24 gives 12-16x at 99.4-99.9% on the former.
  std::int64_t hnsw_threshold = 8192;
  std::int64_t hnsw_m = 32;
  std::int64_t hnsw_ef_construction = 200;
  std::int64_t hnsw_ef = 32;

  // Branching of level l (1-based); requires a valid config.
  std::int64_t branching_at(int level) const;
  // Upper bound of per-node children at level l: b_l, or max_branching (4 b_l) when balancing.
  std::int64_t max_branching_at(int level) const;
  // Training sample kept per parent for level l: sample_per_centroid x max_branching_at(l).
  std::int64_t sample_capacity(int level) const;
  // Throws Error(kInvalidArgument) naming the field when the config is unusable.
  void validate() const;
};

struct LevelReport {
  int level = 0;
  std::int64_t nodes = 0;       // nodes at this level
  std::int64_t split_parents = 0;  // parents (level - 1) that were split
  std::int64_t points = 0;      // points that reached this level
  double inertia = 0;           // sum of distances to the chosen centroids
  double seconds = 0;           // wall time of the level (train + passes + commit)
  double train_seconds = 0;
  double assign_seconds = 0;
  int split_rounds = 0;         // dynamic splitting rounds run (balance, last level)
  std::int64_t min_children = 0, max_children = 0;  // over split parents
};

struct FitReport {
  std::vector<LevelReport> levels;
  std::int64_t points = 0;
  int resumed_from_level = 0;   // levels taken from a previous run (0: fresh)
  double seconds = 0;
  double points_levels_per_second = 0;  // points x levels / seconds (this run's levels)
};

struct FitOptions {
  bool resume = false;          // continue the fit found at storage_uri
  bool progress = true;         // progress bars on stderr when it is a terminal
  // Test hook: stop with Error(kCancelled) right after committing this level (0 = never).
  int stop_after_level = 0;
  // Called with a one-line message at each step (level start/end, and per worker what it
  // did: shards, points, seconds); may be empty.
  std::function<void(const std::string&)> log;
  // Where the work runs: "local" (this process), "mpi" (one process per rank, started by
  // mpirun/srun; rank 0 drives and writes the manifest), "auto" (mpi when started by mpirun
  // with several ranks). Every rank must call fit() with the same arguments. The tree is
  // the same bit for bit whatever the executor and rank count.
  std::string executor = "auto";
  // Polled between batches and between trained nodes (may be empty); returning true stops
  // the call with Error(kCancelled), leaving the last committed level in place (a fit then
  // resumes with `resume`). Called on the calling thread.
  std::function<bool()> should_stop;
  // predict-to-files only: beam width (1 = greedy).
  int beam = 1;
  // predict-to-files only: where the descent runs: "cpu", or "cuda" (one GPU: predict_gpu,
  // -1 = the local rank's, as TaxonomyConfig::gpu; multiplying in predict_gpu_dtype, as
  // TaxonomyConfig::gpu_dtype, "auto" being what the fit multiplied in when it ran on a GPU
  // (manifest gpu_compute_dtype), whatever the predicted rows' dtype). The GPU scans every child of a row's node (exact, as the CPU with
  // set_search(true, ...)) and descends greedily (beam 1).
  std::string predict_device = "cpu";
  int predict_gpu = -1;
  std::string predict_gpu_dtype = "auto";
};

// Paths for n vectors: paths[i * n_levels + l] (int32, -1 below a leaf) and the distance of
// each vector to its deepest centroid.
struct Prediction {
  int n_levels = 0;
  std::vector<std::int32_t> paths;
  std::vector<float> distances;
  std::int64_t beam_changed = 0;  // rows whose beam path differs from the greedy one
};

// What predict-to-files did.
struct PredictReport {
  std::int64_t rows = 0;
  std::int64_t beam_changed = 0;  // rows whose beam path differs from the greedy one
};

class TaxonomyEngine {
 public:
  // The config is validated (Error(kInvalidArgument) naming the field).
  explicit TaxonomyEngine(TaxonomyConfig config);
  ~TaxonomyEngine();
  TaxonomyEngine(TaxonomyEngine&&) noexcept;
  TaxonomyEngine& operator=(TaxonomyEngine&&) noexcept;

  // Loads a complete taxonomy written by fit() at storage_uri. Errors name the file.
  static TaxonomyEngine load(const std::string& storage_uri);

  // Fits on the shards matching input_uri (a glob), writing the model at
  // config.storage_uri and, per input shard, <stem>.paths.npy (int32 [n, L]),
  // <stem>.ids.npy (int64 [n]) and <stem>.dist.npy (float32 [n]) at output_uri.
  // Refuses to overwrite a complete or in-progress taxonomy unless options.resume
  // (kAlreadyExists). Errors name the file/row and leave no half-written level.
  FitReport fit(const std::string& input_uri, const std::string& output_uri,
                const FitOptions& options = {});

  // Paths of vectors (x.dim == dim()); requires a fitted or loaded taxonomy. Greedy
  // descent: the nearest child at every level.
  Prediction predict(const MatrixView& x) const;
  // Beam descent: keeps the `beam` best nodes per level (by distance to the node's centroid,
  // the greedy node always among them) and returns the path of the nearest leaf met, so the
  // result is never farther than greedy's. beam == 1 is exactly predict(x); beam >= 1.
  Prediction predict(const MatrixView& x, int beam) const;
  // predict(x, options.beam) where options.predict_device is "cpu"; on "cuda" the rows are
  // descended on a GPU as predict-to-files descends a shard's (the same rows give the same
  // paths and distances bit for bit; every child scanned, greedy, options.predict_gpu and
  // predict_gpu_dtype as there). The engine keeps that GPU's copy of the levels between such
  // calls (same gpu and dtypes) until release_gpu(), a fit or its destruction; calls on one
  // engine take the GPU one at a time. options.log gets where the time went.
  Prediction predict(const MatrixView& x, const FitOptions& options) const;
  // Frees what predict(x, options) keeps on a GPU (device memory, a page-locked buffer).
  void release_gpu() noexcept;
  // The same for every shard of input_uri, written like fit()'s outputs (beam width from
  // options.beam; on a GPU with options.predict_device). Under mpirun / srun
  // (options.executor, as for fit) the ranks share the shards, each writing its own files;
  // every rank returns the totals.
  PredictReport predict(const std::string& input_uri, const std::string& output_uri,
                        const FitOptions& options = {}) const;

  // Threads for later fit/predict calls (0 = all hardware threads); does not change results.
  void set_threads(int threads) noexcept;
  // Centroid search for later predict calls: exact = scan every child (ignore the HNSW
  // graphs); ef = HNSW search breadth (>= 1; 0 keeps the current one).
  void set_search(bool exact, std::int64_t ef);

  const TaxonomyConfig& config() const noexcept;
  std::int64_t dim() const noexcept;  // 0 until fitted/loaded
  bool fitted() const noexcept;
  // Nodes per level (index 0 = level 1).
  std::vector<std::int64_t> nodes_per_level() const;
  // Centroids of level l (1-based): nodes x dim floats, row-major; valid until the engine
  // next fits, loads or is destroyed.
  std::span<const float> centroids(int level) const;
  // The manifest (taxonomy.json) as text.
  std::string manifest_json() const;

  // fit() on an executor of the caller (options.executor is ignored): for executors that
  // live outside this library, e.g. the Ray workers of the Python package, which run it on
  // a dist::CallbackExecutor (src/dist/callback_executor.h). SPMD: every worker calls it with
  // the same arguments and its own executor and engine. Unlike fit(), a failure is thrown on
  // the failing worker only: the caller must unblock the others (their collectives then
  // throw); the storage keeps its last committed level, so a later call with
  // options.resume continues it and ends with the same tree.
  FitReport fit_with(dist::Executor& executor, const std::string& input_uri,
                     const std::string& output_uri, const FitOptions& options);

 private:
  // predict-to-files on an executor (predict() picks it from options.executor): the shards
  // handed out dynamically, each worker writing its own; the totals all-reduced.
  PredictReport predict_shards(dist::Executor& executor, const std::string& input_uri,
                               const std::string& output_uri, const FitOptions& options) const;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace megatax
