// python/src/binding.h -- what the files of the mega_taxonomy._core extension share.
//
// The extension is a thin translation of include/megatax/ (STYLE.md, line 5): numpy arrays
// become MatrixViews (arrays.cc), megatax::Error becomes a Python exception (errors.cc),
// and each public type gets a class (index_flat_binding.cc, taxonomy_binding.cc). No
// engine logic lives here.
//
// GIL policy: every call that computes (fit, predict, add, search, save, load) releases the
// GIL; the objects then hold a lock of their own so that other Python threads can only use
// them in the ways the C++ type allows (IndexFlat: concurrent searches, exclusive add/reset;
// TaxonomyEngine: one call at a time). The GIL is always released before such a lock is
// taken, so a thread waiting for the lock never holds the GIL.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "megatax/matrix.h"

namespace megatax::python {

namespace py = pybind11;

// A 2-D numpy array seen as a MatrixView (see arrays.cc for the rules). `array` keeps the
// viewed buffer alive: the caller's array itself (zero copy) or the one converted copy.
struct MatrixArg {
  py::array array;
  MatrixView view;
  bool copied = false;  // true when `array` is a float32 copy of the input
};

// Reads `x` (a numpy array or anything numpy.asarray accepts) as a matrix of vectors.
// Zero copy for float32 and float16 arrays whose rows are unit-stride (any row step);
// other real dtypes (float64, integers) and other layouts are copied once to C-contiguous
// float32. Raises TypeError for non-numeric dtypes and megatax::Error(kInvalidArgument)
// (MegataxValueError in Python) for an ndim other than 2. `what` names the argument in
// messages ("search: queries"). Requires the GIL.
MatrixArg matrix_arg(py::handle x, const char* what);

// Installs the translator megatax::Error -> mega_taxonomy.MegataxError (and subclasses).
void register_errors(py::module_& m);

void bind_index_flat(py::module_& m);
void bind_taxonomy(py::module_& m);

}  // namespace megatax::python
