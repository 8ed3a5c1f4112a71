// mega_taxonomy._core.TaxonomyConfig / _TaxonomyEngine over megatax::TaxonomyEngine. The
// public class mega_taxonomy.TaxonomyEngine (python/mega_taxonomy/_taxonomy.py) wraps
// _TaxonomyEngine with keyword arguments and URI-or-array dispatch.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include "binding.h"
#include "dist/callback_executor.h"
#include "megatax/error.h"
#include "megatax/taxonomy.h"

namespace megatax::python {
namespace {

// The Python object: one engine and the lock of its "one thread at a time" contract.
class PyEngine {
 public:
  explicit PyEngine(TaxonomyEngine engine) : engine_(std::move(engine)) {}
  TaxonomyEngine& engine() { return engine_; }

 private:
  friend class EngineLock;
  TaxonomyEngine engine_;
  std::mutex mu_;
  std::atomic<std::thread::id> owner_{};  // the thread holding mu_, if any
};

// Holds the engine for one call; take it with the GIL released. A second call from the
// thread that already holds it (fit's `log` callback calling the engine) would deadlock:
// it is refused with Error(kFailedPrecondition) instead.
class EngineLock {
 public:
  explicit EngineLock(PyEngine& e) : e_(e) {
    if (e_.owner_.load() == std::this_thread::get_id())
      throw_error(ErrorCode::kFailedPrecondition,
                  "TaxonomyEngine: this thread is already inside a call of this engine (a fit "
                  "log callback cannot use the engine it reports on)");
    e_.mu_.lock();
    e_.owner_.store(std::this_thread::get_id());
  }
  ~EngineLock() {
    e_.owner_.store(std::thread::id());
    e_.mu_.unlock();
  }
  EngineLock(const EngineLock&) = delete;
  EngineLock& operator=(const EngineLock&) = delete;

 private:
  PyEngine& e_;
};

py::dict report_dict(const FitReport& r) {
  py::list levels;
  for (const LevelReport& l : r.levels) {
    py::dict d;
    d["level"] = l.level;
    d["nodes"] = l.nodes;
    d["split_parents"] = l.split_parents;
    d["points"] = l.points;
    d["inertia"] = l.inertia;
    d["seconds"] = l.seconds;
    d["train_seconds"] = l.train_seconds;
    d["assign_seconds"] = l.assign_seconds;
    levels.append(std::move(d));
  }
  py::dict out;
  out["points"] = r.points;
  out["resumed_from_level"] = r.resumed_from_level;
  out["seconds"] = r.seconds;
  out["points_levels_per_second"] = r.points_levels_per_second;
  out["levels"] = std::move(levels);
  return out;
}

// The Python side of one fit call: the options' log and should_stop hooks, and the first
// Python exception raised by a hook or a callback (`pending`). Every hook runs in the fit's
// thread, takes the GIL back and runs Python's signal handlers (PyErr_CheckSignals). A
// Python exception there -- KeyboardInterrupt from Ctrl-C, or one raised by `log` or an
// executor callback -- is kept, the fit is stopped by throwing Error(kCancelled) out of the
// hook (the taxonomy keeps its last committed level, so fit(resume=True) continues it), and
// the kept exception is raised in its place (run).
class PythonHooks {
 public:
  PythonHooks(bool resume, bool progress, std::optional<py::function> log) : log_(std::move(log)) {
    options_.resume = resume;
    options_.progress = progress;
    options_.log = [this](const std::string& line) {
      call("log", [&] {
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        if (log_) (*log_)(line);
      });
    };
    // Between batches and trained nodes too: Ctrl-C stops a long pass within one batch.
    options_.should_stop = [this]() {
      py::gil_scoped_acquire gil;
      if (pending_) return true;
      if (PyErr_CheckSignals() != 0) {
        pending_.emplace();  // fetches the KeyboardInterrupt
        return true;
      }
      return false;
    };
  }
  PythonHooks(const PythonHooks&) = delete;  // the hooks point at this object
  PythonHooks& operator=(const PythonHooks&) = delete;
  FitOptions& options() { return options_; }

  // Runs body() under the GIL; a Python exception (or a C++ one of pybind11's casts) is kept
  // and ends the fit with Error(kCancelled) naming `what`.
  template <typename Body>
  void call(const char* what, Body&& body) {
    py::gil_scoped_acquire gil;
    try {
      body();
    } catch (py::error_already_set& e) {
      if (!pending_) pending_.emplace(std::move(e));
      throw Error(ErrorCode::kCancelled,
                  std::string("fit stopped by a Python exception in ") + what);
    } catch (const py::cast_error& e) {
      if (!pending_) {
        PyErr_SetString(PyExc_TypeError, (std::string(what) + ": " + e.what()).c_str());
        pending_.emplace();
      }
      throw Error(ErrorCode::kCancelled, std::string("fit stopped: bad result of ") + what);
    }
  }

  // Runs fit(options) with the GIL released; an Error caused by a kept Python exception is
  // replaced by that exception.
  template <typename Fit>
  FitReport run(Fit&& fit) {
    try {
      py::gil_scoped_release release;
      return fit(options_);
    } catch (const Error&) {
      if (pending_) throw *pending_;
      throw;
    }
  }

 private:
  FitOptions options_;
  std::optional<py::function> log_;
  std::optional<py::error_already_set> pending_;
};

// fit() with the GIL released (see PythonHooks for log, Ctrl-C and exceptions).
py::dict fit(PyEngine& self, const std::string& input_uri, const std::string& output_uri,
             bool resume, bool progress, std::optional<py::function> log,
             const std::string& executor) {
  PythonHooks hooks(resume, progress, std::move(log));
  hooks.options().executor = executor;
  return report_dict(hooks.run([&](const FitOptions& options) {
    EngineLock lock(self);
    return self.engine().fit(input_uri, output_uri, options);
  }));
}

// This process's part of an SPMD fit whose collectives go through two Python callables (a
// dist::CallbackExecutor; the Ray workers of mega_taxonomy.ray): next_shard(round, n_shards)
// -> int and allgather(bytes) -> list of bytes by rank, called with the GIL held in the
// fit's thread. An exception raised by a callback stops this worker's fit and is raised
// from here; the caller must unblock the other workers (their callbacks then raise).
py::dict fit_with_callbacks(PyEngine& self, const std::string& input_uri,
                            const std::string& output_uri, bool resume, int rank, int workers,
                            py::function next_shard, py::function allgather, bool progress,
                            std::optional<py::function> log) {
  PythonHooks hooks(resume, progress, std::move(log));
  dist::CallbackExecutor executor(
      rank, workers,
      [&hooks, &next_shard](std::int64_t round, std::int64_t n_shards) {
        std::int64_t shard = -1;
        hooks.call("next_shard", [&] { shard = next_shard(round, n_shards).cast<std::int64_t>(); });
        return shard;
      },
      [&hooks, &allgather](const std::string& mine) {
        std::vector<std::string> parts;
        hooks.call("allgather",
                   [&] { parts = allgather(py::bytes(mine)).cast<std::vector<std::string>>(); });
        return parts;
      });
  return report_dict(hooks.run([&](const FitOptions& options) {
    EngineLock lock(self);
    return self.engine().fit_with(executor, input_uri, output_uri, options);
  }));
}

// Paths (int32 [n, L]) and distances (float32 [n]) of the rows of x, returned without a
// copy: both arrays share ownership of the Prediction.
py::tuple predict_array(PyEngine& self, py::handle x, int beam, const std::string& device, int gpu,
                        const std::string& gpu_dtype) {
  MatrixArg a = matrix_arg(x, "predict: vectors");
  auto prediction = std::make_unique<Prediction>();
  {
    FitOptions options;
    options.beam = beam;
    options.predict_device = device;
    options.predict_gpu = gpu;
    options.predict_gpu_dtype = gpu_dtype;
    py::gil_scoped_release release;
    EngineLock lock(self);
    *prediction = self.engine().predict(a.view, options);
  }
  const std::int64_t n = a.view.rows, levels = prediction->n_levels;
  Prediction* p = prediction.get();
  py::capsule owner(prediction.release(), [](void* q) { delete static_cast<Prediction*>(q); });
  py::array_t<std::int32_t> paths({n, levels}, p->paths.data(), owner);
  py::array_t<float> distances({n}, p->distances.data(), owner);
  return py::make_tuple(std::move(paths), std::move(distances));
}

constexpr const char* kConfigDoc = R"(Settings of a taxonomy (megatax::TaxonomyConfig); one attribute per field.

n_levels            levels L >= 1
branching_factor    children per node: [b] for every level or one value per level
dim                 vector dimension; 0 = taken from the data at fit time
storage_uri         where the model and the fit state live (path, file://, ...)
metric              'l2', 'ip' or 'cosine'
sample_per_centroid training sample per node = this x branching
max_iter            Lloyd iterations per node (on its sample)
tol                 relative inertia change that stops Lloyd
seed                random seed (same data + config + seed = same tree)
threads             0 = all hardware threads (does not change results)
lloyd_passes        extra full-data Lloyd passes per level
batch_rows          rows read per batch
memory_budget_mb    training samples per group of node problems (CUDA: two groups held)
simd                CPU kernel path: auto, scalar, avx2, avx512 or neon
column, id_column, skip_null   Parquet inputs: embedding column, id column, skip null rows
output_format       'npy' or 'parquet'
balance, min_node_size, max_leaf_size, min_branching, max_branching, max_split_rounds
                    auto-balancing of skewed data (see megatax/taxonomy.h)
hnsw_threshold, hnsw_m, hnsw_ef_construction, hnsw_ef
                    HNSW search of wide parents' children (0 = always scan)
device, gpu_dtype, gpu   'cpu' or 'cuda' (a build with CUDA); what the GPU multiplies in;
                    which GPU (-1 = the MPI local rank's))";

}  // namespace

void bind_taxonomy(py::module_& m) {
  using py::arg;
  py::class_<TaxonomyConfig>(m, "TaxonomyConfig", kConfigDoc)
      .def(py::init<>(), "The default settings (n_levels=3, branching_factor=[100], ...).")
      .def_readwrite("n_levels", &TaxonomyConfig::n_levels,
                     "Levels L >= 1.")
      .def_readwrite("branching_factor", &TaxonomyConfig::branching,
                     "Children per node: [b] for every level or one value per level.")
      .def_readwrite("dim", &TaxonomyConfig::dim,
                     "Vector dimension; 0 = taken from the data at fit time.")
      .def_readwrite("storage_uri", &TaxonomyConfig::storage_uri,
                     "Where the model and the fit state live (path, file://, ...).")
      .def_property(
          "metric", [](const TaxonomyConfig& c) { return std::string(taxonomy_metric_name(c.metric)); },
          [](TaxonomyConfig& c, const std::string& name) { c.metric = parse_taxonomy_metric(name); },
          "'l2' (squared Euclidean), 'ip' (inner product) or 'cosine'.")
      .def_readwrite("sample_per_centroid", &TaxonomyConfig::sample_per_centroid,
                     "Training sample per node = this x branching.")
      .def_readwrite("max_iter", &TaxonomyConfig::max_iter,
                     "Lloyd iterations per node (on its sample).")
      .def_readwrite("tol", &TaxonomyConfig::tol,
                     "Relative inertia change that stops Lloyd.")
      .def_readwrite("seed", &TaxonomyConfig::seed,
                     "Random seed: same data + config + seed = same tree.")
      .def_readwrite("threads", &TaxonomyConfig::threads,
                     "Worker threads, 0 = all hardware threads (results do not change).")
      .def_readwrite("lloyd_passes", &TaxonomyConfig::lloyd_passes,
                     "Extra full-data Lloyd passes per level.")
      .def_readwrite("batch_rows", &TaxonomyConfig::batch_rows,
                     "Rows read per batch.")
      .def_readwrite("memory_budget_mb", &TaxonomyConfig::memory_budget_mb,
                     "Training samples held at once (per group), in MiB.")
      .def_readwrite("simd", &TaxonomyConfig::simd,
                     "CPU kernel path: auto, scalar, avx2, avx512 or neon.")
      .def_readwrite("column", &TaxonomyConfig::column, "Parquet: the embedding column.")
      .def_readwrite("id_column", &TaxonomyConfig::id_column,
                     "Parquet: an integer id column carried to the outputs ('' = global ids).")
      .def_readwrite("skip_null", &TaxonomyConfig::skip_null,
                     "Parquet: skip (count) null embeddings instead of failing.")
      .def_readwrite("output_format", &TaxonomyConfig::output_format, "'npy' or 'parquet'.")
      .def_readwrite("balance", &TaxonomyConfig::balance,
                     "Children per node follow its share of points; oversized leaves split.")
      .def_readwrite("min_node_size", &TaxonomyConfig::min_node_size,
                     "Balance: parents with fewer points stay leaves (0 = the branching).")
      .def_readwrite("max_leaf_size", &TaxonomyConfig::max_leaf_size,
                     "Balance: last-level cap (0 = 1.5 N / prod(branching)).")
      .def_readwrite("min_branching", &TaxonomyConfig::min_branching, "Balance: children per node, lower bound.")
      .def_readwrite("max_branching", &TaxonomyConfig::max_branching,
                     "Balance: children per node, upper bound (0 = 4 x branching).")
      .def_readwrite("max_split_rounds", &TaxonomyConfig::max_split_rounds,
                     "Balance: dynamic splitting rounds on the last level.")
      .def_readwrite("hnsw_threshold", &TaxonomyConfig::hnsw_threshold,
                     "Parents with more children are searched through an HNSW graph (0 = never).")
      .def_readwrite("hnsw_m", &TaxonomyConfig::hnsw_m, "HNSW graph degree.")
      .def_readwrite("hnsw_ef_construction", &TaxonomyConfig::hnsw_ef_construction, "HNSW build breadth.")
      .def_readwrite("hnsw_ef", &TaxonomyConfig::hnsw_ef, "HNSW search breadth.")
      .def_readwrite("device", &TaxonomyConfig::device,
                     "'cpu' or 'cuda' (needs a build with the CUDA backend and a GPU).")
      .def_readwrite("gpu_dtype", &TaxonomyConfig::gpu_dtype, "'auto', 'f32', 'f16' or 'bf16'.")
      .def_readwrite("gpu", &TaxonomyConfig::gpu, "GPU index; -1 = the MPI local rank's.")
      .def("validate", &TaxonomyConfig::validate,
           "Raises MegataxValueError naming the field when the config is unusable.")
      .def("__repr__", [](const TaxonomyConfig& c) {
        std::string s = "TaxonomyConfig(n_levels=";
        s += std::to_string(c.n_levels);
        s += ", branching_factor=[";
        for (std::size_t i = 0; i < c.branching.size(); ++i) {
          if (i > 0) s += ", ";
          s += std::to_string(c.branching[i]);
        }
        s += "], dim=";
        s += std::to_string(c.dim);
        s += ", storage_uri=";
        s += py::repr(py::str(c.storage_uri)).cast<std::string>();
        s += ", metric='";
        s += taxonomy_metric_name(c.metric);
        s += "')";
        return s;
      });

  py::class_<PyEngine>(m, "_TaxonomyEngine",
                       "megatax::TaxonomyEngine; use mega_taxonomy.TaxonomyEngine instead.")
      .def(py::init([](const TaxonomyConfig& config) {
             return std::make_unique<PyEngine>(TaxonomyEngine(config));
           }),
           arg("config"))
      .def_static(
          "load",
          [](const std::string& storage_uri) {
            std::unique_ptr<PyEngine> out;
            {
              py::gil_scoped_release release;
              out = std::make_unique<PyEngine>(TaxonomyEngine::load(storage_uri));
            }
            return out;
          },
          arg("storage_uri"))
      .def("fit", &fit, arg("input_uri"), arg("output_uri"), arg("resume") = false,
           arg("progress") = true, arg("log") = py::none(), arg("executor") = "auto")
      .def("fit_with_callbacks", &fit_with_callbacks, arg("input_uri"), arg("output_uri"),
           arg("resume"), arg("rank"), arg("workers"), arg("next_shard"), arg("allgather"),
           arg("progress") = false, arg("log") = py::none(),
           "This worker's part of a fit whose collectives go through next_shard(round, "
           "n_shards) -> int (-1: all claimed) and allgather(bytes) -> [bytes by rank] "
           "(mega_taxonomy.ray).")
      .def("predict_array", &predict_array, arg("x"), arg("beam") = 1, arg("device") = "cpu", arg("gpu") = -1,
           arg("gpu_dtype") = "auto")
      .def("release_gpu",
           [](PyEngine& self) {
             py::gil_scoped_release release;
             EngineLock lock(self);
             self.engine().release_gpu();
           })
      .def(
          "predict_uri",
          [](PyEngine& self, const std::string& input_uri, const std::string& output_uri, bool progress,
             int beam, const std::string& device, int gpu, const std::string& gpu_dtype) {
            FitOptions options;
            options.progress = progress;
            options.beam = beam;
            options.predict_device = device;
            options.predict_gpu = gpu;
            options.predict_gpu_dtype = gpu_dtype;
            py::gil_scoped_release release;
            EngineLock lock(self);
            self.engine().predict(input_uri, output_uri, options);
          },
          arg("input_uri"), arg("output_uri"), arg("progress") = true, arg("beam") = 1, arg("device") = "cpu",
          arg("gpu") = -1, arg("gpu_dtype") = "auto")
      .def(
          "set_threads",
          [](PyEngine& self, int threads) {
            py::gil_scoped_release release;
            EngineLock lock(self);
            self.engine().set_threads(threads);
          },
          arg("threads"))
      .def_property_readonly("config", [](PyEngine& self) {
        py::gil_scoped_release release;
        EngineLock lock(self);
        return self.engine().config();
      })
      .def_property_readonly("dim", [](PyEngine& self) {
        py::gil_scoped_release release;
        EngineLock lock(self);
        return self.engine().dim();
      })
      .def_property_readonly("fitted", [](PyEngine& self) {
        py::gil_scoped_release release;
        EngineLock lock(self);
        return self.engine().fitted();
      })
      .def("nodes_per_level",
           [](PyEngine& self) {
             py::gil_scoped_release release;
             EngineLock lock(self);
             return self.engine().nodes_per_level();
           })
      .def(
          "centroids",
          [](PyEngine& self, int level) {
            std::vector<float> c;
            std::int64_t d = 0;
            {
              py::gil_scoped_release release;
              EngineLock lock(self);
              const std::span<const float> all = self.engine().centroids(level);
              c.assign(all.begin(), all.end());
              d = self.engine().dim();
            }
            const auto rows = d > 0 ? static_cast<std::int64_t>(c.size()) / d : 0;
            auto* owned = new std::vector<float>(std::move(c));
            py::capsule owner(owned, [](void* q) { delete static_cast<std::vector<float>*>(q); });
            return py::array_t<float>({rows, d}, owned->data(), owner);
          },
          arg("level"))
      .def("manifest_json", [](PyEngine& self) {
        py::gil_scoped_release release;
        EngineLock lock(self);
        return self.engine().manifest_json();
      });
}

}  // namespace megatax::python
