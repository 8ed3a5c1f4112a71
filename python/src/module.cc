// The mega_taxonomy._core extension module (pybind11). See python/README.md for the API.
#include "binding.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  namespace mp = megatax::python;
  m.doc() =
      "Compiled core of mega_taxonomy: IndexFlat{L2,IP} and the taxonomy engine. Import the "
      "package `mega_taxonomy`, not this module.";
  mp::register_errors(m);
  mp::bind_index_flat(m);
  mp::bind_taxonomy(m);

  m.def(
      "_matrix_arg_info",
      [](py::handle x) {
        mp::MatrixArg a = mp::matrix_arg(x, "x");
        py::dict d;
        d["copied"] = a.copied;
        d["dtype"] = megatax::dtype_name(a.view.dtype);
        d["rows"] = a.view.rows;
        d["dim"] = a.view.dim;
        d["stride"] = a.view.stride;
        d["data"] = reinterpret_cast<std::uintptr_t>(a.view.data);
        return d;
      },
      py::arg("x"),
      "Testing aid: how an array argument is read (copied or not, dtype, stride in elements, "
      "data address).");
}
