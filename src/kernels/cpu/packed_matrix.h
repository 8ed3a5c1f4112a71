// kernels/cpu/packed_matrix.h -- a database of vectors stored in the kernels' panel layout.
//
// Rows are grouped in panels of kPanelRows (16) consecutive rows; inside a panel the data
// is dimension-major so a micro-kernel loads the same dimension of 16 rows with one vector
// load. With dp = dim rounded up to an even number (dim_padded):
//   f32  : panel p = float[dp][16];    element (row 16p + r, dim k) at [k * 16 + r]
//   f16  : panel p = uint16[dp][16];   same indexing, IEEE half bits
//   bf16 : panel p = uint16[dp/2][16][2]; element (16p + r, k) at [(k/2)*32 + r*2 + (k&1)]
//          (pairs of dimensions side by side: the operand layout of vdpbf16ps; shifting a
//          32-bit lane left by 16 / masking its high half gives the two floats)
// Padding (dims dim..dp-1, and rows past rows() in the last panel) is zero. Panels are
// contiguous and the buffer is 64-byte aligned.
//
// Squared norms of the stored (rounded) rows are kept beside the data, in float (summed
// in double). Rows past rows() have norm 0.
//
// Thread-safety: const methods may be called concurrently; append/clear need exclusive
// access.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "megatax/dtype.h"
#include "megatax/matrix.h"

namespace megatax::kernels {

inline constexpr std::int64_t kPanelRows = 16;

// The first value of x (rows in order; converted to f32) that `target` cannot hold
// (megatax::first_unstorable: NaN, Inf, or too large for f16/bf16), the rows scanned on all
// hardware threads when there are many; row -1 when every value fits (u8 rows always do).
struct UnstorableValue {
  std::int64_t row = -1, dim = 0;
  float value = 0;
};
UnstorableValue find_unstorable(const MatrixView& x, DType target);

class PackedMatrix {
 public:
  // dtype must be f32, f16 or bf16 (throws Error(kInvalidArgument) otherwise); dim >= 1.
  PackedMatrix(std::int64_t dim, DType dtype);
  PackedMatrix(PackedMatrix&&) noexcept;
  PackedMatrix& operator=(PackedMatrix&&) noexcept;
  ~PackedMatrix();

  // Appends the rows of `x` (any dtype, x.dim == dim()), converting them to dtype()
  // (rounded to nearest even). Rows holding NaN or Inf are refused with
  // Error(kInvalidArgument) naming the row (index within x), and nothing is appended.
  void append(const MatrixView& x);
  // append() for rows the caller has already checked (find_unstorable(x, dtype()) found
  // nothing): no second scan of the values.
  void append_valid(const MatrixView& x);
  // Appends raw rows already in dtype(): `src` holds n rows of dim() elements of dtype(),
  // row-major (used by load()). No finiteness check.
  void append_raw(const void* src, std::int64_t n);
  void clear() noexcept;
  void reserve(std::int64_t rows);

  std::int64_t rows() const noexcept { return rows_; }
  std::int64_t dim() const noexcept { return dim_; }
  std::int64_t dim_padded() const noexcept { return dim_padded_; }
  DType dtype() const noexcept { return dtype_; }
  std::int64_t panels() const noexcept { return (rows_ + kPanelRows - 1) / kPanelRows; }
  // Bytes of one panel: 16 * dim_padded * dtype_size.
  std::size_t panel_bytes() const noexcept { return panel_bytes_; }
  // Pointer to panel p (0 <= p < panels()); panels p..panels()-1 follow contiguously.
  const void* panel(std::int64_t p) const noexcept {
    return data_.get() + static_cast<std::size_t>(p) * panel_bytes_;
  }
  // Squared L2 norms, one per row, padded with zeros to panels() * 16 entries.
  const float* norms() const noexcept { return norms_.data(); }

  // Copies row i (0 <= i < rows()) out as dim() elements of dtype() (raw bits).
  void get_row_raw(std::int64_t i, void* out) const noexcept;
  // Copies rows [first, first + count) out, row-major, each dim() elements of dtype() (raw
  // bits: get_row_raw's, row after row). Whole panels a task, on all hardware threads when
  // the range holds several tasks. 0 <= first, first + count <= rows().
  void get_rows_raw(std::int64_t first, std::int64_t count, void* out) const;
  // Copies row i out as dim() floats (exact conversion of the stored value).
  void get_row_f32(std::int64_t i, float* out) const noexcept;

 private:
  void grow_to_panels(std::int64_t panels);
  struct RowScratch {  // one thread's buffers for store_row_f32
    std::vector<std::uint16_t> half;
    std::vector<float> back;
  };
  void store_row_f32(std::int64_t i, const float* v, RowScratch& scratch);  // converts + writes + norm
  // Stores rows rows_ .. rows_ + n - 1 (capacity reserved) from row_f32(j, out): the j-th new
  // row's dim() floats. Whole panels a task, on all hardware threads when there are several.
  void store_rows(std::int64_t n, const std::function<void(std::int64_t, float*)>& row_f32);

  std::int64_t dim_;
  std::int64_t dim_padded_;
  DType dtype_;
  std::size_t panel_bytes_;
  std::int64_t rows_ = 0;
  std::int64_t capacity_panels_ = 0;
  struct FreeAligned {
    void operator()(std::uint8_t* p) const noexcept;
  };
  std::unique_ptr<std::uint8_t[], FreeAligned> data_;
  std::vector<float> norms_;
};

}  // namespace megatax::kernels
