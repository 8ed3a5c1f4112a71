// numpy arrays -> MatrixView: zero copy where the layout allows, else one float32 copy.
#include <string>

#include "binding.h"
#include "megatax/error.h"

namespace megatax::python {
namespace {

// numpy type numbers (stable parts of numpy's C API).
constexpr int kNpyHalf = 23;
constexpr int kNpyFloat = 11;
// numpy array flag: the data pointer is aligned for its dtype.
constexpr int kNpyAligned = 0x0100;

bool native_byte_order(const py::dtype& dt) {
  const char order = dt.byteorder();
  constexpr char kNative = (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) ? '<' : '>';
  return order == '=' || order == '|' || order == kNative;
}

std::string shape_text(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(a.shape(i));
  }
  if (a.ndim() == 1) s += ",";
  return s + ")";
}

}  // namespace

MatrixArg matrix_arg(py::handle x, const char* what) {
  MatrixArg out;
  if (py::isinstance<py::array>(x)) {
    out.array = py::reinterpret_borrow<py::array>(x);
  } else {
    out.array = py::module_::import("numpy").attr("asarray")(x);
  }
  py::array& a = out.array;
  const py::dtype dt = a.dtype();
  const char kind = dt.kind();
  if (kind != 'f' && kind != 'i' && kind != 'u')
    throw py::type_error(std::string(what) + ": dtype " + py::str(dt).cast<std::string>() +
                         " is not supported; expected float32 or float16 (used without a "
                         "copy) or another real number type (copied once to float32)");
  if (a.ndim() != 2)
    throw_error(ErrorCode::kInvalidArgument,
                std::string(what) + ": expected a 2-D array of shape (n, d), got an array of shape " +
                    shape_text(a));
  const std::int64_t rows = a.shape(0), dim = a.shape(1);
  const int num = dt.num();
  const bool f32 = num == kNpyFloat && dt.itemsize() == 4;
  const bool f16 = num == kNpyHalf && dt.itemsize() == 2;
  if ((f32 || f16) && native_byte_order(dt) && (a.flags() & kNpyAligned) != 0) {
    const auto item = static_cast<std::int64_t>(dt.itemsize());
    const std::int64_t row_bytes = a.strides(0), col_bytes = a.strides(1);
    const bool unit_columns = dim <= 1 || col_bytes == item;
    const bool rows_ok = rows <= 1 || (row_bytes >= 0 && row_bytes % item == 0 && row_bytes / item >= dim);
    if (unit_columns && rows_ok) {
      const std::int64_t stride = rows <= 1 ? dim : row_bytes / item;
      out.view = MatrixView(a.data(), rows, dim, f32 ? DType::kF32 : DType::kF16, stride);
      return out;
    }
  }
  // The one documented copy: C-contiguous float32.
  out.array = py::module_::import("numpy").attr("ascontiguousarray")(a, "float32");
  out.copied = true;
  out.view = MatrixView(out.array.data(), rows, dim, DType::kF32);
  return out;
}

}  // namespace megatax::python
