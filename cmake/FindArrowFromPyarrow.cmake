# FindArrowFromPyarrow.cmake -- Apache Arrow C++ and Parquet from the `pyarrow` wheel.
#
# The pyarrow wheel (PyPI, pinned in requirements.txt) ships Arrow's and Parquet's headers and
# shared libraries for building against: pyarrow.get_include(), pyarrow.get_library_dirs().
# Its libraries carry only versioned names (libarrow.so.2600); pyarrow.create_library_symlinks()
# adds the unversioned ones (needs write access to site-packages). Without them we link the
# versioned files by full path, which works as well (the linker records their SONAME).
#
# Input:   MEGATAX_ARROW_PYTHON  interpreter to ask (default: Python3_EXECUTABLE, else python3)
# Output:  ArrowFromPyarrow_FOUND        TRUE when pyarrow imports and arrow + parquet are found
#          ArrowFromPyarrow_VERSION      pyarrow's version ("26.0.1")
#          ArrowFromPyarrow_INCLUDE_DIR  the headers
#          ArrowFromPyarrow_LIBRARY_DIR  the shared libraries (the binaries' RPATH points here)
#          ArrowFromPyarrow_WHY          why not found (for the status message)
#          target megatax_arrow::arrow   INTERFACE target: headers + libarrow + libparquet
#                                        (+ libarrow_s3, a separate library since Arrow 26)
#                                        + an RPATH to the wheel's folder, so that programs run
#                                        without LD_LIBRARY_PATH
include_guard(GLOBAL)

set(ArrowFromPyarrow_FOUND FALSE)
set(ArrowFromPyarrow_WHY "")

if(NOT MEGATAX_ARROW_PYTHON)
  if(Python3_EXECUTABLE)
    set(MEGATAX_ARROW_PYTHON "${Python3_EXECUTABLE}")
  else()
    find_program(MEGATAX_ARROW_PYTHON NAMES python3 python)
  endif()
endif()

if(NOT MEGATAX_ARROW_PYTHON)
  set(ArrowFromPyarrow_WHY "no python3 interpreter found")
  return()
endif()

execute_process(
  COMMAND "${MEGATAX_ARROW_PYTHON}" -c
          "import pyarrow as pa; print(pa.__version__); print(pa.get_include()); print(pa.get_library_dirs()[0])"
  OUTPUT_VARIABLE _mt_pa_out
  ERROR_VARIABLE _mt_pa_err
  RESULT_VARIABLE _mt_pa_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _mt_pa_rc EQUAL 0)
  string(REGEX REPLACE "\n.*" "" _mt_pa_first "${_mt_pa_err}")
  set(ArrowFromPyarrow_WHY "${MEGATAX_ARROW_PYTHON} cannot import pyarrow (pip install -r requirements.txt)")
  return()
endif()
string(REPLACE "\n" ";" _mt_pa_lines "${_mt_pa_out}")
list(GET _mt_pa_lines 0 ArrowFromPyarrow_VERSION)
list(GET _mt_pa_lines 1 ArrowFromPyarrow_INCLUDE_DIR)
list(GET _mt_pa_lines 2 ArrowFromPyarrow_LIBRARY_DIR)

# _mt_find_pyarrow_lib(<var> <name>): the unversioned lib<name>.so if present, else the
# versioned lib<name>.so.<N> (the newest by name), else <var>-NOTFOUND.
function(_mt_find_pyarrow_lib var name)
  set(_dir "${ArrowFromPyarrow_LIBRARY_DIR}")
  if(EXISTS "${_dir}/lib${name}.so")
    set(${var} "${_dir}/lib${name}.so" PARENT_SCOPE)
    return()
  endif()
  file(GLOB _versioned "${_dir}/lib${name}.so.*")
  list(FILTER _versioned EXCLUDE REGEX "\\.so\\.[0-9]+\\.[0-9]")  # the SONAME file only
  if(_versioned)
    list(SORT _versioned)
    list(GET _versioned -1 _lib)
    set(${var} "${_lib}" PARENT_SCOPE)
  else()
    set(${var} "${var}-NOTFOUND" PARENT_SCOPE)
  endif()
endfunction()

if(NOT EXISTS "${ArrowFromPyarrow_LIBRARY_DIR}/libarrow.so")
  # Best effort: the unversioned names make -larrow work for other tools too.
  execute_process(
    COMMAND "${MEGATAX_ARROW_PYTHON}" -c "import pyarrow; pyarrow.create_library_symlinks()"
    OUTPUT_QUIET ERROR_QUIET)
endif()

_mt_find_pyarrow_lib(_mt_arrow_lib arrow)
_mt_find_pyarrow_lib(_mt_parquet_lib parquet)
_mt_find_pyarrow_lib(_mt_arrow_s3_lib arrow_s3)
if(NOT _mt_arrow_lib OR NOT _mt_parquet_lib)
  set(ArrowFromPyarrow_WHY
      "pyarrow ${ArrowFromPyarrow_VERSION} at ${ArrowFromPyarrow_LIBRARY_DIR} lacks libarrow or libparquet")
  return()
endif()
if(NOT EXISTS "${ArrowFromPyarrow_INCLUDE_DIR}/arrow/api.h"
   OR NOT EXISTS "${ArrowFromPyarrow_INCLUDE_DIR}/parquet/arrow/reader.h")
  set(ArrowFromPyarrow_WHY "pyarrow ${ArrowFromPyarrow_VERSION} ships no C++ headers at ${ArrowFromPyarrow_INCLUDE_DIR}")
  return()
endif()

if(NOT TARGET megatax_arrow::arrow)
  add_library(megatax_arrow::arrow INTERFACE IMPORTED GLOBAL)
  # SYSTEM: Arrow's headers are not ours; their warnings are not ours to fix.
  set_target_properties(megatax_arrow::arrow PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${ArrowFromPyarrow_INCLUDE_DIR}"
    INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${ArrowFromPyarrow_INCLUDE_DIR}")
  set(_mt_libs "${_mt_parquet_lib}" "${_mt_arrow_lib}")
  if(_mt_arrow_s3_lib)
    list(APPEND _mt_libs "${_mt_arrow_s3_lib}")
  endif()
  target_link_libraries(megatax_arrow::arrow INTERFACE ${_mt_libs})
  # The wheel's folder as RPATH (DT_RUNPATH) of every binary linking Arrow: no LD_LIBRARY_PATH.
  target_link_options(megatax_arrow::arrow INTERFACE
    "LINKER:-rpath,${ArrowFromPyarrow_LIBRARY_DIR}")
endif()
set(ArrowFromPyarrow_FOUND TRUE)
