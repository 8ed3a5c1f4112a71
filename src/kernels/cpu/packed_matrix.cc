#include "kernels/cpu/packed_matrix.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "core/memory.h"
#include "core/parallel.h"
#include "megatax/error.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#elif defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace megatax::kernels {

UnstorableValue find_unstorable(const MatrixView& x, DType target) {
  if (x.dtype == DType::kU8 || x.rows == 0) return {};  // 0..255: fits every index dtype
  const auto d = static_cast<std::size_t>(x.dim);
  // Tasks of ~256k values; each stops at its first bad row, and the first task's wins.
  const std::int64_t per_task = std::max<std::int64_t>(1, (std::int64_t{1} << 18) / x.dim);
  const std::int64_t tasks = (x.rows + per_task - 1) / per_task;
  std::vector<UnstorableValue> found(static_cast<std::size_t>(tasks));
  parallel_for(tasks > 1 ? 0 : 1, tasks, [&](std::int64_t t, int) {
    std::vector<float> row(x.dtype == DType::kF32 ? 0 : d);
    const std::int64_t end = std::min(x.rows, (t + 1) * per_task);
    for (std::int64_t i = t * per_task; i < end; ++i) {
      const float* v = row.data();
      if (x.dtype == DType::kF32) {
        v = static_cast<const float*>(x.row(i));
      } else {
        convert_to_f32(x.dtype, x.row(i), d, row.data());
      }
      const std::size_t j = first_unstorable(v, d, target);
      if (j < d) {
        found[static_cast<std::size_t>(t)] = {i, static_cast<std::int64_t>(j), v[j]};
        return;
      }
    }
  });
  for (const UnstorableValue& f : found)
    if (f.row >= 0) return f;
  return {};
}

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
  // Large matrices on 2 MiB boundaries, asked to be backed by huge pages: the stores that
  // first touch them fault once per 2 MiB. aligned_alloc wants a multiple of the alignment.
  constexpr std::size_t kHuge = std::size_t{2} << 20;
  const std::size_t align = bytes >= kHuge ? kHuge : 64;
  const std::size_t rounded = (bytes + align - 1) / align * align;
  std::unique_ptr<std::uint8_t[], FreeAligned> fresh(static_cast<std::uint8_t*>(std::aligned_alloc(align, rounded)));
  if (!fresh) throw std::bad_alloc();
  std::uint8_t* p = fresh.get();
  advise_huge_pages(p, rounded);
  // The panels in use move (64 MiB a task, on all threads); fresh panels are written whole
  // by store_rows (padding too), so the rest is not zeroed here.
  const std::size_t used = static_cast<std::size_t>(this->panels()) * panel_bytes_;
  constexpr std::size_t kCopyTask = std::size_t{64} << 20;
  const auto copy_tasks = static_cast<std::int64_t>((used + kCopyTask - 1) / kCopyTask);
  parallel_for(copy_tasks > 1 ? 0 : 1, copy_tasks, [&](std::int64_t t, int) {
    const std::size_t b = static_cast<std::size_t>(t) * kCopyTask, e = std::min(used, b + kCopyTask);
    std::memcpy(p + b, data_.get() + b, e - b);
  });
  data_ = std::move(fresh);
  capacity_panels_ = cap;
  norms_.resize(static_cast<std::size_t>(cap * kPanelRows), 0.f);
}

void PackedMatrix::reserve(std::int64_t rows) {
  grow_to_panels((rows + kPanelRows - 1) / kPanelRows);
}

void PackedMatrix::store_row_f32(std::int64_t i, const float* v, RowScratch& scratch) {
  const std::int64_t p = i / kPanelRows, r = i % kPanelRows;
  std::uint8_t* base = data_.get() + static_cast<std::size_t>(p) * panel_bytes_;
  double norm = 0;
  if (dtype_ == DType::kF32) {
    auto* d = reinterpret_cast<float*>(base);
    for (std::int64_t k = 0; k < dim_; ++k) {
      d[k * kPanelRows + r] = v[k];
      norm += static_cast<double>(v[k]) * v[k];
    }
  } else {
    // Rounded in bulk (the scalar conversions' bits), the norm from the stored values.
    const auto n = static_cast<std::size_t>(dim_);
    scratch.half.resize(n);
    scratch.back.resize(n);
    convert_from_f32(v, n, dtype_, scratch.half.data());
    convert_to_f32(dtype_, scratch.half.data(), n, scratch.back.data());
    const std::uint16_t* h = scratch.half.data();
    auto* d = reinterpret_cast<std::uint16_t*>(base);
    if (dtype_ == DType::kF16) {
      for (std::int64_t k = 0; k < dim_; ++k) d[k * kPanelRows + r] = h[k];
    } else {  // bf16: pairs of dimensions per row (the kernels' layout)
      for (std::int64_t k = 0; k < dim_; ++k) d[(k / 2) * 2 * kPanelRows + r * 2 + (k & 1)] = h[k];
    }
    for (std::int64_t k = 0; k < dim_; ++k) {
      const double x = scratch.back[static_cast<std::size_t>(k)];
      norm += x * x;
    }
  }
  norms_[static_cast<std::size_t>(i)] = static_cast<float>(norm);
}

namespace {

// Tile transposes between a panel ([words][16 rows]) and row-major rows: dst row u, element
// t = src row t, element u. Rows are src_stride / dst_stride bytes apart; any alignment.
// 4 x 4 tiles of 4-byte words (f32 values, bf16 pairs) and 8 x 8 tiles of 2-byte ones (f16);
// SSE2 on x86-64, NEON on AArch64, element copies elsewhere.
inline void transpose_tile_4x4_u32(const std::uint8_t* src, std::size_t src_stride, std::uint8_t* dst,
                                   std::size_t dst_stride) {
#if defined(__SSE2__)
  const auto load = [&](int t) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + t * src_stride)); };
  const auto store = [&](int u, __m128i v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + u * dst_stride), v); };
  const __m128i a = load(0), b = load(1), c = load(2), d = load(3);
  const __m128i ab01 = _mm_unpacklo_epi32(a, b), cd01 = _mm_unpacklo_epi32(c, d);
  const __m128i ab23 = _mm_unpackhi_epi32(a, b), cd23 = _mm_unpackhi_epi32(c, d);
  store(0, _mm_unpacklo_epi64(ab01, cd01));
  store(1, _mm_unpackhi_epi64(ab01, cd01));
  store(2, _mm_unpacklo_epi64(ab23, cd23));
  store(3, _mm_unpackhi_epi64(ab23, cd23));
#elif defined(__ARM_NEON) && defined(__aarch64__)
  const auto load = [&](int t) { return vreinterpretq_u64_u8(vld1q_u8(src + t * src_stride)); };
  const auto store = [&](int u, uint64x2_t v) { vst1q_u8(dst + u * dst_stride, vreinterpretq_u8_u64(v)); };
  const auto trn1_32 = [](uint64x2_t x, uint64x2_t y) {
    return vreinterpretq_u64_u32(vtrn1q_u32(vreinterpretq_u32_u64(x), vreinterpretq_u32_u64(y)));
  };
  const auto trn2_32 = [](uint64x2_t x, uint64x2_t y) {
    return vreinterpretq_u64_u32(vtrn2q_u32(vreinterpretq_u32_u64(x), vreinterpretq_u32_u64(y)));
  };
  const uint64x2_t a = load(0), b = load(1), c = load(2), d = load(3);
  const uint64x2_t ab0 = trn1_32(a, b), ab1 = trn2_32(a, b);  // a0 b0 a2 b2 | a1 b1 a3 b3
  const uint64x2_t cd0 = trn1_32(c, d), cd1 = trn2_32(c, d);
  store(0, vtrn1q_u64(ab0, cd0));
  store(1, vtrn1q_u64(ab1, cd1));
  store(2, vtrn2q_u64(ab0, cd0));
  store(3, vtrn2q_u64(ab1, cd1));
#else
  for (std::size_t u = 0; u < 4; ++u)
    for (std::size_t t = 0; t < 4; ++t) std::memcpy(dst + u * dst_stride + t * 4, src + t * src_stride + u * 4, 4);
#endif
}

inline void transpose_tile_8x8_u16(const std::uint8_t* src, std::size_t src_stride, std::uint8_t* dst,
                                   std::size_t dst_stride) {
#if defined(__SSE2__)
  const auto load = [&](int t) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + t * src_stride)); };
  const auto store = [&](int u, __m128i v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + u * dst_stride), v); };
  __m128i a[8], b[8];
  for (int t = 0; t < 8; ++t) a[t] = load(t);
  for (int t = 0; t < 8; t += 2) {  // pairs of rows, interleaved by element
    b[t / 2] = _mm_unpacklo_epi16(a[t], a[t + 1]);      // elements 0-3
    b[4 + t / 2] = _mm_unpackhi_epi16(a[t], a[t + 1]);  // elements 4-7
  }
  for (int h = 0; h < 8; h += 4) {  // h: elements 0-3, then 4-7
    const __m128i q01 = _mm_unpacklo_epi32(b[h], b[h + 1]), q23 = _mm_unpackhi_epi32(b[h], b[h + 1]);
    const __m128i q45 = _mm_unpacklo_epi32(b[h + 2], b[h + 3]), q67 = _mm_unpackhi_epi32(b[h + 2], b[h + 3]);
    store(h + 0, _mm_unpacklo_epi64(q01, q45));
    store(h + 1, _mm_unpackhi_epi64(q01, q45));
    store(h + 2, _mm_unpacklo_epi64(q23, q67));
    store(h + 3, _mm_unpackhi_epi64(q23, q67));
  }
#elif defined(__ARM_NEON) && defined(__aarch64__)
  uint16x8_t a[8];
  for (int t = 0; t < 8; ++t) a[t] = vreinterpretq_u16_u8(vld1q_u8(src + t * src_stride));
  uint32x4_t b[8];  // pairs of rows, transposed in 2 x 2 blocks of elements
  for (int t = 0; t < 8; t += 2) {
    b[t] = vreinterpretq_u32_u16(vtrn1q_u16(a[t], a[t + 1]));      // elements 0, 2, 4, 6
    b[t + 1] = vreinterpretq_u32_u16(vtrn2q_u16(a[t], a[t + 1]));  // elements 1, 3, 5, 7
  }
  uint64x2_t c[8];  // fours of rows: c[0..3] from rows 0-3, c[4..7] from rows 4-7
  for (int h = 0; h < 8; h += 4) {
    c[h + 0] = vreinterpretq_u64_u32(vtrn1q_u32(b[h], b[h + 2]));      // elements 0, 4
    c[h + 1] = vreinterpretq_u64_u32(vtrn1q_u32(b[h + 1], b[h + 3]));  // elements 1, 5
    c[h + 2] = vreinterpretq_u64_u32(vtrn2q_u32(b[h], b[h + 2]));      // elements 2, 6
    c[h + 3] = vreinterpretq_u64_u32(vtrn2q_u32(b[h + 1], b[h + 3]));  // elements 3, 7
  }
  for (int u = 0; u < 4; ++u) {
    vst1q_u8(dst + u * dst_stride, vreinterpretq_u8_u64(vtrn1q_u64(c[u], c[4 + u])));
    vst1q_u8(dst + (u + 4) * dst_stride, vreinterpretq_u8_u64(vtrn2q_u64(c[u], c[4 + u])));
  }
#else
  for (std::size_t u = 0; u < 8; ++u)
    for (std::size_t t = 0; t < 8; ++t) std::memcpy(dst + u * dst_stride + t * 2, src + t * src_stride + u * 2, 2);
#endif
}

// Between a panel's [words][16] layout and its 16 rows [16][words] (row-major, row_stride
// bytes apart; words of w = 4 or 2 bytes), for words [0, words): whole tiles through the tile
// transposes, the words past the last whole tile one at a time.
template <bool kToPanel>
void transpose_words(std::size_t w, std::size_t words, const std::uint8_t* src, std::uint8_t* dst,
                     std::size_t row_stride) {
  constexpr auto kRows = static_cast<std::size_t>(kPanelRows);
  const std::size_t tile = w == 4 ? 4 : 8, tiled = words / tile * tile;
  const std::size_t panel_stride = kRows * w;  // from one word of the panel to the next
  const auto rows_at = [&](std::size_t r0, std::size_t j0) { return r0 * row_stride + j0 * w; };
  const auto panel_at = [&](std::size_t r0, std::size_t j0) { return (j0 * kRows + r0) * w; };
  // Words in blocks of a cache line per row: a row tile's lines are done before the next
  // rows' (rows 4 KB apart share an L1 set; 16 lines open at once would evict each other).
  const std::size_t line_words = 64 / w;
  for (std::size_t b0 = 0; b0 < tiled; b0 += line_words) {
    const std::size_t b1 = std::min(tiled, b0 + line_words);
    for (std::size_t r0 = 0; r0 < kRows; r0 += tile) {
      for (std::size_t j0 = b0; j0 < b1; j0 += tile) {
        const std::uint8_t* in = src + (kToPanel ? rows_at(r0, j0) : panel_at(r0, j0));
        std::uint8_t* to = dst + (kToPanel ? panel_at(r0, j0) : rows_at(r0, j0));
        const std::size_t in_stride = kToPanel ? row_stride : panel_stride;
        const std::size_t to_stride = kToPanel ? panel_stride : row_stride;
        if (w == 4) {
          transpose_tile_4x4_u32(in, in_stride, to, to_stride);
        } else {
          transpose_tile_8x8_u16(in, in_stride, to, to_stride);
        }
      }
    }
  }
  for (std::size_t j = tiled; j < words; ++j) {
    for (std::size_t r = 0; r < kRows; ++r) {
      if (kToPanel) {
        std::memcpy(dst + panel_at(r, j), src + rows_at(r, j), w);
      } else {
        std::memcpy(dst + rows_at(r, j), src + panel_at(r, j), w);
      }
    }
  }
}

// norms[r] = float(the float64 sum, in dimension order, of v[r * stride + k]^2 over k < d),
// for the m <= kPanelRows rows of a panel. Each row's sum is the serial one (the same bits as
// a row at a time), but the rows' chains are interleaved: one row alone is a chain of
// dependent adds, bound by the add's latency rather than by the loads.
void panel_norms(const float* v, std::size_t m, std::size_t d, std::size_t stride, float* norms) {
  double acc[kPanelRows] = {};
  for (std::size_t k = 0; k < d; ++k) {
    for (std::size_t r = 0; r < m; ++r) {
      const double x = v[r * stride + k];
      acc[r] += x * x;
    }
  }
  for (std::size_t r = 0; r < m; ++r) norms[r] = static_cast<float>(acc[r]);
}

}  // namespace

void PackedMatrix::store_rows(std::int64_t n, const std::function<void(std::int64_t, float*)>& row_f32) {
  // Tasks of whole panels (rows of one panel share cache lines), about 1M values each.
  const std::int64_t panel_rows =
      std::max<std::int64_t>(1, (std::int64_t{1} << 20) / (dim_ * kPanelRows)) * kPanelRows;
  const std::int64_t first = rows_, end = rows_ + n;
  const std::int64_t first_task = first / panel_rows, tasks = (end + panel_rows - 1) / panel_rows - first_task;
  const auto d = static_cast<std::size_t>(dim_), dp = static_cast<std::size_t>(dim_padded_);
  constexpr auto kRows = static_cast<std::size_t>(kPanelRows);
  // A fresh panel is written whole, padding included: its rows rounded into a [16][dp]
  // row-major scratch of stored values (zeros past dim and past the last row), which is the
  // panel transposed as a [16][words] matrix of 4-byte words (f32 values; bf16 pairs, the
  // lower dimension in the lower half) or 2-byte ones (f16); written back in tiles
  // (transpose_words), the panel's bytes in order.
  // (Words move through memcpy and byte pointers: the storage is bytes, whatever wrote them.)
  auto transpose_into = [&](auto word, const void* rows_v, std::uint8_t* panel) {
    constexpr std::size_t w = sizeof(word);
    const std::size_t words = panel_bytes_ / (kRows * w);
    transpose_words<true>(w, words, static_cast<const std::uint8_t*>(rows_v), panel, words * w);
  };
  parallel_for(tasks > 1 ? 0 : 1, tasks, [&](std::int64_t t, int) {
    const std::int64_t t0 = std::max(first, (first_task + t) * panel_rows);
    const std::int64_t t1 = std::min(end, (first_task + t + 1) * panel_rows);
    std::vector<float> values(kRows * dp);
    std::vector<std::uint16_t> half(dtype_ == DType::kF32 ? 0 : kRows * dp);
    RowScratch scratch;
    for (std::int64_t r0 = t0; r0 < t1;) {
      const std::int64_t p = r0 / kPanelRows, r1 = std::min(t1, (p + 1) * kPanelRows);
      if (r0 != p * kPanelRows) {  // the panel holds earlier rows: row by row into it
        for (std::int64_t i = r0; i < r1; ++i) {
          row_f32(i - first, values.data());
          store_row_f32(i, values.data(), scratch);
        }
        r0 = r1;
        continue;
      }
      const auto m = static_cast<std::size_t>(r1 - r0);
      std::fill(values.begin(), values.end(), 0.0f);
      for (std::size_t r = 0; r < m; ++r) row_f32(r0 + static_cast<std::int64_t>(r) - first, values.data() + r * dp);
      std::uint8_t* panel = data_.get() + static_cast<std::size_t>(p) * panel_bytes_;
      if (dtype_ == DType::kF32) {
        panel_norms(values.data(), m, d, dp, norms_.data() + r0);
        transpose_into(std::uint32_t{}, values.data(), panel);
        r0 = r1;
        continue;
      }
      // Rounded in bulk (the scalar conversions' bits), the norm from the stored values.
      convert_from_f32(values.data(), kRows * dp, dtype_, half.data());  // zeros stay zeros
      convert_to_f32(dtype_, half.data(), m * dp, values.data());
      panel_norms(values.data(), m, d, dp, norms_.data() + r0);
      if (dtype_ == DType::kF16) {
        transpose_into(std::uint16_t{}, half.data(), panel);
      } else {  // bf16 pairs: two adjacent halves of a row are one 4-byte word
        transpose_into(std::uint32_t{}, half.data(), panel);
      }
      r0 = r1;
    }
  });
}

void PackedMatrix::append(const MatrixView& x) {
  validate_view(x, "vectors");
  if (x.dim != dim_)
    throw_error(ErrorCode::kInvalidArgument, "vectors have dim " + std::to_string(x.dim) +
                                                 ", expected " + std::to_string(dim_));
  if (x.rows == 0) return;
  // Validate first so that a refused add leaves the matrix unchanged: NaN, Inf, and finite
  // values that overflow the storage type (70000 in f16).
  const UnstorableValue bad = find_unstorable(x, dtype_);
  if (bad.row >= 0) {
    if (!std::isfinite(bad.value))
      throw_error(ErrorCode::kInvalidArgument,
                  "vectors: row " + std::to_string(bad.row) + " holds a non-finite value (" +
                      std::to_string(bad.value) + " at dim " + std::to_string(bad.dim) + ")");
    throw_error(ErrorCode::kInvalidArgument,
                "vectors: row " + std::to_string(bad.row) + " value " + std::to_string(bad.value) +
                    " at dim " + std::to_string(bad.dim) + " overflows " + dtype_name(dtype_));
  }
  append_valid(x);
}

void PackedMatrix::append_valid(const MatrixView& x) {
  if (x.dim != dim_)
    throw_error(ErrorCode::kInvalidArgument, "vectors have dim " + std::to_string(x.dim) +
                                                 ", expected " + std::to_string(dim_));
  if (x.rows == 0) return;
  const auto d = static_cast<std::size_t>(dim_);
  grow_to_panels((rows_ + x.rows + kPanelRows - 1) / kPanelRows);
  store_rows(x.rows, [&](std::int64_t i, float* row) { convert_to_f32(x.dtype, x.row(i), d, row); });
  rows_ += x.rows;
}

void PackedMatrix::append_raw(const void* src, std::int64_t n) {
  if (n <= 0) return;
  grow_to_panels((rows_ + n + kPanelRows - 1) / kPanelRows);
  const std::size_t row_bytes = static_cast<std::size_t>(dim_) * dtype_size(dtype_);
  // exact: the values are already in dtype
  store_rows(n, [&](std::int64_t i, float* row) {
    convert_to_f32(dtype_, static_cast<const std::uint8_t*>(src) + static_cast<std::size_t>(i) * row_bytes,
                   static_cast<std::size_t>(dim_), row);
  });
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

void PackedMatrix::get_rows_raw(std::int64_t first, std::int64_t count, void* out) const {
  if (count <= 0) return;
  // A panel is a [words][16] matrix of 4-byte words (f32 values; bf16 pairs) or 2-byte ones
  // (f16): row r's j-th word at [j * 16 + r]. A panel whose 16 rows are all asked for is
  // transposed in tiles straight into the output (transpose_words); the first and last
  // panels of a range, when partial, in blocks of 16 words x their rows.
  const std::size_t word = dtype_ == DType::kF16 ? 2 : 4;
  const std::size_t row_bytes = static_cast<std::size_t>(dim_) * dtype_size(dtype_);
  const std::size_t full = row_bytes / word, tail = row_bytes % word;  // tail: an odd bf16 dim
  const std::int64_t end = first + count;
  const std::int64_t p0 = first / kPanelRows, p1 = (end + kPanelRows - 1) / kPanelRows;
  const std::int64_t per_task =
      std::max<std::int64_t>(1, (std::int64_t{1} << 20) / static_cast<std::int64_t>(panel_bytes_));
  const std::int64_t tasks = (p1 - p0 + per_task - 1) / per_task;
  constexpr auto kRows = static_cast<std::size_t>(kPanelRows);
  auto copy_panel = [&](auto word, const std::uint8_t* src, std::int64_t p) {
    constexpr std::size_t w = sizeof(word);
    const std::int64_t r0 = std::max(first, p * kPanelRows), r1 = std::min(end, (p + 1) * kPanelRows);
    auto* dst = static_cast<std::uint8_t*>(out);
    for (std::size_t j0 = 0; j0 < full; j0 += 16) {
      const std::size_t jn = std::min<std::size_t>(16, full - j0);
      for (std::int64_t i = r0; i < r1; ++i) {
        const auto r = static_cast<std::size_t>(i - p * kPanelRows);
        std::uint8_t block[16 * w];
        if (jn == 16) {
          for (std::size_t j = 0; j < 16; ++j) std::memcpy(block + j * w, src + ((j0 + j) * kRows + r) * w, w);
        } else {
          for (std::size_t j = 0; j < jn; ++j) std::memcpy(block + j * w, src + ((j0 + j) * kRows + r) * w, w);
        }
        std::memcpy(dst + static_cast<std::size_t>(i - first) * row_bytes + j0 * w, block, jn * w);
      }
    }
    if (tail != 0) {
      for (std::int64_t i = r0; i < r1; ++i)
        std::memcpy(dst + static_cast<std::size_t>(i - first) * row_bytes + full * w,
                    src + (full * kRows + static_cast<std::size_t>(i - p * kPanelRows)) * w, tail);
    }
  };
  parallel_for(tasks > 1 ? 0 : 1, tasks, [&](std::int64_t t, int) {
    const std::int64_t q1 = std::min(p1, p0 + (t + 1) * per_task);
    for (std::int64_t p = p0 + t * per_task; p < q1; ++p) {
      const std::uint8_t* src = data_.get() + static_cast<std::size_t>(p) * panel_bytes_;
      if (p * kPanelRows >= first && (p + 1) * kPanelRows <= end) {  // the whole panel
        auto* rows = static_cast<std::uint8_t*>(out) + static_cast<std::size_t>(p * kPanelRows - first) * row_bytes;
        transpose_words<false>(word, full, src, rows, row_bytes);
        for (std::size_t r = 0; tail != 0 && r < kRows; ++r)
          std::memcpy(rows + r * row_bytes + full * word, src + (full * kRows + r) * word, tail);
        continue;
      }
      if (word == 4) {
        copy_panel(std::uint32_t{}, src, p);
      } else {
        copy_panel(std::uint16_t{}, src, p);
      }
    }
  });
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
