#include "kernels/cpu/packed_matrix.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "megatax/error.h"

namespace megatax::kernels {

void PackedMatrix::FreeAligned::operator()(std::uint8_t* p) const noexcept { std::free(p); }

PackedMatrix::PackedMatrix(std::int64_t dim, DType dtype)
    : dim_(dim), dim_padded_((dim + 1) & ~std::int64_t{1}), dtype_(dtype) {
  if (dim < 1)
    throw_error(ErrorCode::kInvalidArgument, "dim must be >= 1, got " + std::to_string(dim));
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16)
    throw_error(ErrorCode::kInvalidArgument,
                std::string("index dtype must be f32, f16 or bf16, got ") + dtype_name(dtype));
  panel_bytes_ = static_cast<std::size_t>(kPanelRows * dim_padded_) * dtype_size(dtype);
}

PackedMatrix::PackedMatrix(PackedMatrix&&) noexcept = default;
PackedMatrix& PackedMatrix::operator=(PackedMatrix&&) noexcept = default;
PackedMatrix::~PackedMatrix() = default;

void PackedMatrix::grow_to_panels(std::int64_t panels) {
  if (panels <= capacity_panels_) return;
  const std::int64_t cap = std::max<std::int64_t>(panels, capacity_panels_ * 3 / 2 + 4);
  const std::size_t bytes = static_cast<std::size_t>(cap) * panel_bytes_;
  // aligned_alloc requires the size to be a multiple of the alignment.
  const std::size_t rounded = (bytes + 63) / 64 * 64;
  auto* p = static_cast<std::uint8_t*>(std::aligned_alloc(64, rounded));
  if (p == nullptr) throw std::bad_alloc();
  const std::size_t used = static_cast<std::size_t>(capacity_panels_) * panel_bytes_;
  if (used > 0) std::memcpy(p, data_.get(), used);
  std::memset(p + used, 0, rounded - used);
  data_.reset(p);
  capacity_panels_ = cap;
  norms_.resize(static_cast<std::size_t>(cap * kPanelRows), 0.f);
}

void PackedMatrix::reserve(std::int64_t rows) {
  grow_to_panels((rows + kPanelRows - 1) / kPanelRows);
}

void PackedMatrix::store_row_f32(std::int64_t i, const float* v) {
  const std::int64_t p = i / kPanelRows, r = i % kPanelRows;
  std::uint8_t* base = data_.get() + static_cast<std::size_t>(p) * panel_bytes_;
  double norm = 0;
  switch (dtype_) {
    case DType::kF32: {
      auto* d = reinterpret_cast<float*>(base);
      for (std::int64_t k = 0; k < dim_; ++k) {
        d[k * kPanelRows + r] = v[k];
        norm += static_cast<double>(v[k]) * v[k];
      }
      break;
    }
    case DType::kF16: {
      auto* d = reinterpret_cast<std::uint16_t*>(base);
      for (std::int64_t k = 0; k < dim_; ++k) {
        const std::uint16_t h = f32_to_f16(v[k]);
        d[k * kPanelRows + r] = h;
        const double x = f16_to_f32(h);
        norm += x * x;
      }
      break;
    }
    case DType::kBF16: {
      auto* d = reinterpret_cast<std::uint16_t*>(base);
      for (std::int64_t k = 0; k < dim_; ++k) {
        const std::uint16_t h = f32_to_bf16(v[k]);
        d[(k / 2) * 2 * kPanelRows + r * 2 + (k & 1)] = h;
        const double x = bf16_to_f32(h);
        norm += x * x;
      }
      break;
    }
    case DType::kU8: break;  // rejected by the constructor
  }
  norms_[static_cast<std::size_t>(i)] = static_cast<float>(norm);
}

void PackedMatrix::append(const MatrixView& x) {
  validate_view(x, "vectors");
  if (x.dim != dim_)
    throw_error(ErrorCode::kInvalidArgument, "vectors have dim " + std::to_string(x.dim) +
                                                 ", expected " + std::to_string(dim_));
  if (x.rows == 0) return;
  // Validate first so that a refused add leaves the matrix unchanged.
  std::vector<float> row(static_cast<std::size_t>(dim_));
  for (std::int64_t i = 0; i < x.rows; ++i) {
    if (x.dtype == DType::kU8) continue;
    convert_to_f32(x.dtype, x.row(i), static_cast<std::size_t>(dim_), row.data());
    for (std::int64_t k = 0; k < dim_; ++k) {
      const float v = row[static_cast<std::size_t>(k)];
      if (!std::isfinite(v))
        throw_error(ErrorCode::kInvalidArgument,
                    "vectors: row " + std::to_string(i) + " holds a non-finite value (" +
                        std::to_string(v) + " at dim " + std::to_string(k) + ")");
      // A finite value may still overflow the storage type (70000 in f16).
      const float stored = dtype_ == DType::kF16    ? f16_to_f32(f32_to_f16(v))
                           : dtype_ == DType::kBF16 ? bf16_to_f32(f32_to_bf16(v))
                                                    : v;
      if (!std::isfinite(stored))
        throw_error(ErrorCode::kInvalidArgument,
                    "vectors: row " + std::to_string(i) + " value " + std::to_string(v) +
                        " at dim " + std::to_string(k) + " overflows " + dtype_name(dtype_));
    }
  }
  grow_to_panels((rows_ + x.rows + kPanelRows - 1) / kPanelRows);
  for (std::int64_t i = 0; i < x.rows; ++i) {
    convert_to_f32(x.dtype, x.row(i), static_cast<std::size_t>(dim_), row.data());
    store_row_f32(rows_ + i, row.data());
  }
  rows_ += x.rows;
}

void PackedMatrix::append_raw(const void* src, std::int64_t n) {
  if (n <= 0) return;
  grow_to_panels((rows_ + n + kPanelRows - 1) / kPanelRows);
  std::vector<float> row(static_cast<std::size_t>(dim_));
  const std::size_t row_bytes = static_cast<std::size_t>(dim_) * dtype_size(dtype_);
  for (std::int64_t i = 0; i < n; ++i) {
    convert_to_f32(dtype_, static_cast<const std::uint8_t*>(src) + i * row_bytes,
                   static_cast<std::size_t>(dim_), row.data());
    store_row_f32(rows_ + i, row.data());  // exact: the values are already in dtype
  }
  rows_ += n;
}

void PackedMatrix::clear() noexcept {
  data_.reset();
  norms_.clear();
  norms_.shrink_to_fit();
  capacity_panels_ = 0;
  rows_ = 0;
}

void PackedMatrix::get_row_raw(std::int64_t i, void* out) const noexcept {
  const std::int64_t p = i / kPanelRows, r = i % kPanelRows;
  const std::uint8_t* base = data_.get() + static_cast<std::size_t>(p) * panel_bytes_;
  if (dtype_ == DType::kF32) {
    const auto* s = reinterpret_cast<const float*>(base);
    auto* d = static_cast<float*>(out);
    for (std::int64_t k = 0; k < dim_; ++k) d[k] = s[k * kPanelRows + r];
  } else if (dtype_ == DType::kF16) {
    const auto* s = reinterpret_cast<const std::uint16_t*>(base);
    auto* d = static_cast<std::uint16_t*>(out);
    for (std::int64_t k = 0; k < dim_; ++k) d[k] = s[k * kPanelRows + r];
  } else {
    const auto* s = reinterpret_cast<const std::uint16_t*>(base);
    auto* d = static_cast<std::uint16_t*>(out);
    for (std::int64_t k = 0; k < dim_; ++k) d[k] = s[(k / 2) * 2 * kPanelRows + r * 2 + (k & 1)];
  }
}

void PackedMatrix::get_row_f32(std::int64_t i, float* out) const noexcept {
  if (dtype_ == DType::kF32) {
    get_row_raw(i, out);
    return;
  }
  std::vector<std::uint16_t> raw(static_cast<std::size_t>(dim_));
  get_row_raw(i, raw.data());
  convert_to_f32(dtype_, raw.data(), static_cast<std::size_t>(dim_), out);
}

}  // namespace megatax::kernels
