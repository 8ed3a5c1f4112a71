// mega_taxonomy.IndexFlat / IndexFlatL2 / IndexFlatIP over megatax::IndexFlat.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include "binding.h"
#include "megatax/dtype.h"
#include "megatax/error.h"
#include "megatax/index_flat.h"
#include "megatax/metric.h"

namespace megatax::python {
namespace {

// The Python object: one IndexFlat and the lock that makes the C++ thread-safety contract
// hold while the GIL is released (search: shared; add, reset: exclusive). Polymorphic so
// that load() can return the subclass of the file's metric.
class PyIndexFlat {
 public:
  explicit PyIndexFlat(IndexFlat index) : index_(std::move(index)) {}
  virtual ~PyIndexFlat() = default;
  PyIndexFlat(const PyIndexFlat&) = delete;
  PyIndexFlat& operator=(const PyIndexFlat&) = delete;

  IndexFlat& index() { return index_; }
  const IndexFlat& index() const { return index_; }
  std::shared_mutex& mu() const { return mu_; }

 private:
  IndexFlat index_;
  mutable std::shared_mutex mu_;
};

class PyIndexFlatL2 final : public PyIndexFlat {
 public:
  using PyIndexFlat::PyIndexFlat;
};
class PyIndexFlatIP final : public PyIndexFlat {
 public:
  using PyIndexFlat::PyIndexFlat;
};

std::unique_ptr<PyIndexFlat> wrap(IndexFlat index) {
  if (index.metric() == Metric::kInnerProduct) return std::make_unique<PyIndexFlatIP>(std::move(index));
  return std::make_unique<PyIndexFlatL2>(std::move(index));
}

Metric parse_metric(const std::string& name) {
  if (name == "l2" || name == "L2") return Metric::kL2;
  if (name == "ip" || name == "IP" || name == "inner_product") return Metric::kInnerProduct;
  throw_error(ErrorCode::kInvalidArgument, "metric: unknown value '" + name + "': expected l2 or ip");
}

void add(PyIndexFlat& self, py::handle x) {
  MatrixArg a = matrix_arg(x, "add: vectors");
  py::gil_scoped_release release;
  std::unique_lock lock(self.mu());
  self.index().add(a.view);
}

py::tuple search(const PyIndexFlat& self, py::handle xq, std::int64_t k, int threads,
                 const std::string& backend, const std::optional<std::vector<int>>& devices) {
  MatrixArg q = matrix_arg(xq, "search: queries");
  SearchOptions options;
  options.threads = threads;
  options.backend = parse_backend(backend);
  if (devices) options.devices = *devices;
  const std::int64_t n = q.view.rows;
  if (k < 1) {
    // Let the C++ index refuse k (and any other argument) with its own message.
    py::gil_scoped_release release;
    std::shared_lock lock(self.mu());
    self.index().search(q.view, k, nullptr, nullptr, options);
  }
  py::array_t<float> distances({n, k});
  py::array_t<std::int64_t> ids({n, k});
  float* d = distances.mutable_data();
  std::int64_t* i = ids.mutable_data();
  {
    py::gil_scoped_release release;
    std::shared_lock lock(self.mu());
    self.index().search(q.view, k, d, i, options);
  }
  return py::make_tuple(std::move(distances), std::move(ids));
}

constexpr const char* kClassDoc = R"(Exact (brute-force) k-nearest-neighbour index over vectors of dimension d.

Every added vector is copied into the index, stored as `dtype` ("f32", "f16" or "bf16";
other inputs are rounded to nearest even); ids are insertion positions 0..ntotal-1.
Search scans all vectors with the fused multithreaded CPU kernels; results per query are
sorted nearest first, ties to the smaller id. IndexFlatL2 returns squared L2 distances,
IndexFlatIP inner products (largest first). If k > ntotal the tail of each row has id -1
and distance +inf (L2) or -inf (IP).

Arrays: float32 and float16 arrays of shape (n, d) with unit-stride rows are read in place
(no copy); other real dtypes and layouts are copied once to float32.

Thread-safety: search() may run from several Python threads at once (the GIL is released
while computing); add(), reset() wait for running searches and run alone.)";

}  // namespace

void bind_index_flat(py::module_& m) {
  using py::arg;
  py::class_<PyIndexFlat> base(m, "IndexFlat", kClassDoc);
  base.def(py::init([](std::int64_t d, const std::string& metric, const std::string& dtype) {
             return std::make_unique<PyIndexFlat>(IndexFlat(d, parse_metric(metric), parse_dtype(dtype)));
           }),
           arg("d"), arg("metric") = "l2", arg("dtype") = "f32",
           "Creates an empty index. d >= 1; metric 'l2' or 'ip'; dtype 'f32', 'f16' or 'bf16'.")
      .def("add", &add, arg("x"),
           "Appends the rows of x (shape (n, d); float32/float16 read without a copy). All "
           "rows are checked first: a NaN or Inf row raises MegataxValueError and nothing is "
           "added. Releases the GIL.")
      .def("search", &search, arg("xq"), arg("k"), arg("threads") = 0, py::kw_only(),
           arg("backend") = "auto", arg("devices") = py::none(),
           "k nearest neighbours of each row of xq (shape (nq, d)). Returns (D, I): D float32 "
           "(nq, k) distances, I int64 (nq, k) ids, nearest first. threads: 0 = all hardware "
           "threads. backend: 'auto' or 'cpu' (the CPU kernels), 'cuda' (a build with the CUDA "
           "backend: the vectors stay on the GPU between searches). devices: with 'cuda', the "
           "GPUs that hold the vectors (e.g. [0, 1]: rows dealt to both, searched at once, the "
           "same results as one GPU's); default [0]. Releases the GIL.")
      .def(
          "reset",
          [](PyIndexFlat& self) {
            py::gil_scoped_release release;
            std::unique_lock lock(self.mu());
            self.index().reset();
          },
          "Removes every vector (ntotal becomes 0).")
      .def(
          "reconstruct",
          [](const PyIndexFlat& self, std::int64_t i) {
            py::array_t<float> out(self.index().dim());
            float* p = out.mutable_data();
            py::gil_scoped_release release;
            std::shared_lock lock(self.mu());
            self.index().reconstruct(i, p);
            return out;
          },
          arg("i"), "Stored vector i (0 <= i < ntotal) as float32 (d,).")
      .def(
          "save",
          [](const PyIndexFlat& self, const std::filesystem::path& path) {
            py::gil_scoped_release release;
            std::shared_lock lock(self.mu());
            self.index().save(path.string());
          },
          arg("path"),
          "Writes the index to path atomically (temp file + rename; format MTXFLAT1).")
      .def_static(
          "load",
          [](const std::filesystem::path& path) {
            std::unique_ptr<PyIndexFlat> out;
            {
              py::gil_scoped_release release;
              out = wrap(IndexFlat::load(path.string()));
            }
            return out;
          },
          arg("path"),
          "Reads an index written by save(). Returns an IndexFlatL2 or IndexFlatIP, per the "
          "file's metric.")
      .def_property_readonly(
          "ntotal",
          [](const PyIndexFlat& self) {
            std::shared_lock lock(self.mu());
            return self.index().ntotal();
          },
          "Number of vectors in the index.")
      .def_property_readonly(
          "d", [](const PyIndexFlat& self) { return self.index().dim(); }, "Vector dimension.")
      .def_property_readonly(
          "dtype", [](const PyIndexFlat& self) { return std::string(dtype_name(self.index().dtype())); },
          "Storage type: 'f32', 'f16' or 'bf16'.")
      .def_property_readonly(
          "metric", [](const PyIndexFlat& self) { return std::string(metric_name(self.index().metric())); },
          "'l2' or 'ip'.")
      .def("__len__", [](const PyIndexFlat& self) {
        std::shared_lock lock(self.mu());
        return self.index().ntotal();
      })
      .def("__repr__", [](py::handle h) {
        const auto& self = h.cast<const PyIndexFlat&>();
        std::shared_lock lock(self.mu());
        return py::str(py::type::handle_of(h).attr("__name__")).cast<std::string>() + "(d=" +
               std::to_string(self.index().dim()) + ", dtype='" + dtype_name(self.index().dtype()) +
               "', ntotal=" + std::to_string(self.index().ntotal()) + ")";
      });

  py::class_<PyIndexFlatL2, PyIndexFlat>(m, "IndexFlatL2",
                                         "IndexFlat with squared L2 distances (smaller is nearer).")
      .def(py::init([](std::int64_t d, const std::string& dtype) {
             return std::make_unique<PyIndexFlatL2>(IndexFlatL2(d, parse_dtype(dtype)));
           }),
           arg("d"), arg("dtype") = "f32", "Creates an empty L2 index of dimension d.");
  py::class_<PyIndexFlatIP, PyIndexFlat>(m, "IndexFlatIP",
                                         "IndexFlat with inner products (larger is nearer).")
      .def(py::init([](std::int64_t d, const std::string& dtype) {
             return std::make_unique<PyIndexFlatIP>(IndexFlatIP(d, parse_dtype(dtype)));
           }),
           arg("d"), arg("dtype") = "f32", "Creates an empty inner-product index of dimension d.");
}

}  // namespace megatax::python
