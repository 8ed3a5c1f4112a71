// megatax::Error -> mega_taxonomy.MegataxError (classes defined in mega_taxonomy/_errors.py).
#include <exception>

#include <pybind11/gil_safe_call_once.h>

#include "binding.h"
#include "megatax/error.h"

namespace megatax::python {
namespace {

// Raises the Python exception for `e`: the class is chosen by
// mega_taxonomy._errors.error_class(code) and gets the same message and `.code`.
void set_python_error(const Error& e) {
  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> errors_module;
  const char* code = error_code_name(e.code());
  try {
    const py::object& errors = errors_module
                                   .call_once_and_store_result(
                                       [] { return py::module_::import("mega_taxonomy._errors"); })
                                   .get_stored();
    py::object cls = errors.attr("error_class")(code);
    py::object exc = cls(e.what(), code);
    PyErr_SetObject(cls.ptr(), exc.ptr());
  } catch (py::error_already_set&) {
    // mega_taxonomy._errors could not be used (a broken install): keep the message.
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
}

}  // namespace

void register_errors(py::module_& m) {
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      set_python_error(e);
    }
  });
}

}  // namespace megatax::python
