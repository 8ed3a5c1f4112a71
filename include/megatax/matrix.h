// megatax/matrix.h -- non-owning views of row-major matrices of vectors.
//
// Layout (declared once, used everywhere): element (i, j) of a view lives at
//   static_cast<const char*>(data) + (i * stride + j) * dtype_size(dtype)
// i.e. `stride` counts elements, not bytes, and stride >= dim. Row i is a vector of
// `dim` elements. Shapes are 64-bit throughout.
//
// A view never owns its memory; the caller keeps the buffer alive while the view is used.
// Thread-safety: a view is a plain value; concurrent reads are safe when the buffer is.
#pragma once

#include <cstdint>

#include "megatax/dtype.h"

namespace megatax {

using Id = std::int64_t;  // global vector id: shard offset + row, or position in an index

struct MatrixView {
  const void* data = nullptr;
  std::int64_t rows = 0;
  std::int64_t dim = 0;
  std::int64_t stride = 0;  // elements between the starts of consecutive rows (>= dim)
  DType dtype = DType::kF32;

  MatrixView() = default;
  MatrixView(const void* data_, std::int64_t rows_, std::int64_t dim_, DType dtype_,
             std::int64_t stride_ = -1)
      : data(data_), rows(rows_), dim(dim_), stride(stride_ < 0 ? dim_ : stride_),
        dtype(dtype_) {}

  // Pointer to the first element of row i (no bounds check: 0 <= i < rows).
  const void* row(std::int64_t i) const noexcept {
    return static_cast<const char*>(data) +
           static_cast<std::int64_t>(dtype_size(dtype)) * i * stride;
  }
  // Rows [begin, begin + count) as a view (no bounds check).
  MatrixView slice(std::int64_t begin, std::int64_t count) const noexcept {
    return MatrixView(row(begin), count, dim, dtype, stride);
  }
  bool empty() const noexcept { return rows == 0; }
};

// Convenience for float32 row-major buffers of n x d.
inline MatrixView f32_view(const float* x, std::int64_t n, std::int64_t d) {
  return MatrixView(x, n, d, DType::kF32);
}

// Checks the view's invariants (non-negative sizes, stride >= dim, data non-null when
// rows > 0) and throws Error(kInvalidArgument) naming `what` ("queries", "database") if
// they do not hold.
void validate_view(const MatrixView& view, const char* what);

}  // namespace megatax
