// megatax/vector_format.h -- reading vector files (.npy, .fbin/.u8bin, .fvecs/.bvecs and,
// when built with Arrow, .parquet) row range by row range, and writing .npy arrays. On-disk
// layouts: docs/formats.md.
//
// A VectorReader describes one file of `rows` vectors of `dim` elements stored as
// `dtype` (f32, f16 or u8, as stored; never converted on open) and copies row ranges out
// of it on request. It never loads the whole file: open() reads and checks the header (and
// the file size); read() reads exactly the requested rows through the Storage.
// Element (i, j) of a read of n rows lands at dst[i * dim + j] (dense, row-major).
//
// Errors (megatax::Error; messages name the file and what was expected):
//   kDataLoss        corrupt or truncated file: bad magic, unparsable header, size not
//                    matching the header, a .fvecs row whose dim differs from row 0
//   kInvalidArgument valid file of an unsupported kind: dtype, Fortran order, rank != 2,
//                    unknown extension
//   kOutOfRange      a read past the last row
//   plus whatever the Storage throws (kNotFound, kIoError, ...).
//
// Thread-safety: a VectorReader is immutable after open; read() and read_f32() are const
// and may run concurrently (each call uses its own scratch memory), provided the Storage
// is safe for concurrent access (all of ours are). The Parquet reader keeps a cache of
// decoded row-group pieces behind a mutex: its calls are safe concurrently but one reader
// serves them one at a time (use one reader per thread, or one shard per thread, for
// parallel decoding). Little-endian hosts only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "megatax/dtype.h"
#include "megatax/matrix.h"
#include "megatax/storage.h"

namespace megatax {

class Storage;

enum class VectorFormat : std::uint8_t { kNpy, kFbin, kU8bin, kFvecs, kBvecs, kParquet };

// "npy", "fbin", "u8bin", "fvecs", "bvecs", "parquet".
const char* vector_format_name(VectorFormat format) noexcept;

// The format named by a path's extension (case-sensitive: .npy .fbin .u8bin .fvecs
// .bvecs .parquet); Error(kInvalidArgument) naming the path and the accepted extensions
// otherwise. (.parquet is recognised also when built without Arrow: opening one then
// throws kUnimplemented.)
VectorFormat vector_format_from_path(const std::string& path);

// How to read files that hold more than a bare matrix (Parquet; the other formats ignore
// every field). A plain struct; the defaults read column "embedding", no ids, and refuse
// null rows.
struct VectorReadOptions {
  // The embedding column (a top-level field): list<float>, large_list<float>,
  // fixed_size_list<float>, list/large_list/fixed_size_list<halffloat>, or
  // binary/large_binary/fixed_size_binary of packed little-endian elements (binary_dtype).
  std::string column = "embedding";
  // Optional id column (a top-level integer field, int8..int64 or uint8..uint32, no nulls);
  // empty = none. Its values are returned by VectorReader::read_ids().
  std::string id_column;
  // false: a null embedding row is an error (kDataLoss naming file, column and row).
  // true: null rows are skipped -- rows() counts only non-null rows, row r of the reader
  // is the r-th non-null row -- and counted in skipped_rows().
  bool skip_null = false;
  // Element type packed in a binary column: kF32 (4 bytes per element) or kF16 (2 bytes;
  // the bytes alone cannot tell f16 from f32, so this must be said). Ignored for list
  // columns, whose element type is in the schema.
  DType binary_dtype = DType::kF32;
};

class VectorReader {
 public:
  VectorReader() = default;
  VectorReader(const VectorReader&) = delete;
  VectorReader& operator=(const VectorReader&) = delete;
  virtual ~VectorReader() = default;

  virtual const std::string& path() const noexcept = 0;
  virtual VectorFormat format() const noexcept = 0;
  // Number of vectors (>= 0).
  virtual std::int64_t rows() const noexcept = 0;
  // Elements per vector (>= 1), except 0 for an empty .fvecs/.bvecs file, whose dim is
  // not recorded anywhere.
  virtual std::int64_t dim() const noexcept = 0;
  // Element type as stored: kF32, kF16 or kU8.
  virtual DType dtype() const noexcept = 0;

  // Copies rows [row_begin, row_begin + n_rows) in the stored dtype into dst, which must
  // hold n_rows * dim() * dtype_size(dtype()) bytes. Requires 0 <= row_begin,
  // 0 <= n_rows, row_begin + n_rows <= rows() (else kOutOfRange). Reads
  // n_rows * (stored row size) bytes plus, for .fvecs/.bvecs, a bounded scratch buffer.
  // .fvecs/.bvecs: every row's leading dim is checked; a mismatch throws kDataLoss naming
  // the row. On failure dst holds unspecified data.
  virtual void read(std::int64_t row_begin, std::int64_t n_rows, void* dst) const = 0;

  // As read(), converted to float32: dst holds n_rows * dim() floats. For stored f16/u8,
  // conversion goes through a scratch buffer of at most ~1 MiB (or one row).
  void read_f32(std::int64_t row_begin, std::int64_t n_rows, float* dst) const;

  // Reads the given rows (ascending, each in [0, rows()), else kOutOfRange) into dst, one
  // after the other (rows.size() * row_bytes() bytes): scattered rows in one storage call
  // (dense formats; the others read row by row).
  virtual void read_rows(std::span<const std::int64_t> rows, void* dst) const;
  // As read_rows(), converted to float32 (rows.size() * dim() floats).
  void read_rows_f32(std::span<const std::int64_t> rows, float* dst) const;

  // Bytes of one row as stored, header-free: dim() * dtype_size(dtype()).
  std::int64_t row_bytes() const noexcept {
    return dim() * static_cast<std::int64_t>(dtype_size(dtype()));
  }

  // The rows as stored, in place, where the storage shows the file's bytes without a copy
  // (Storage::map_read_only: POSIX files) and the format keeps them back to back (.npy,
  // .fbin, .u8bin): row r's row_bytes() bytes at data + r * row_bytes() for every row, inside
  // `file` (the whole file's bytes, which it keeps valid). Empty (data null) otherwise, also
  // for a file no longer the one opened (another size): read() the rows then.
  struct InPlaceRows {
    std::shared_ptr<const Storage::MappedBytes> file;
    const unsigned char* data = nullptr;
  };
  virtual InPlaceRows rows_in_place() const { return {}; }

  // True if the file carries an id per row (Parquet with VectorReadOptions::id_column).
  virtual bool has_ids() const noexcept { return false; }

  // Copies the ids of rows [row_begin, row_begin + n_rows) into dst (n_rows int64 values;
  // same row numbering as read(), so with skip_null the ids of the non-null rows). Range
  // as for read() (kOutOfRange). Without ids: Error(kFailedPrecondition) naming the file.
  virtual void read_ids(std::int64_t row_begin, std::int64_t n_rows, std::int64_t* dst) const;

  // Rows that the file holds but the reader skips (null embeddings with skip_null); 0 for
  // formats without nulls.
  virtual std::int64_t skipped_rows() const noexcept { return 0; }

  // Frees what the reader keeps between calls to make the next sequential read cheap (the
  // Parquet reader: up to 4 streaming positions, each ~16 MiB of buffers and decoded rows;
  // also freed by itself when a read reaches the last row). Call it when done with a shard
  // for a while. Reads stay correct; the next one restarts its row group. No-op elsewhere.
  virtual void drop_caches() const noexcept {}

 protected:
  // Throws kOutOfRange / kInvalidArgument unless the range and dst are valid (see read()).
  void check_read_range(std::int64_t row_begin, std::int64_t n_rows, const void* dst) const;
};

// Opens `path` in `storage` as the format named by its extension and checks its header
// and size (reads at most the header and, for .fvecs/.bvecs, the first and last row's
// dim; for .parquet the footer, the schema and, to learn dim, the first non-null row -- and,
// with skip_null when the column statistics cannot show that there are no nulls, one pass
// over the column to count them). `storage` is borrowed and must outlive the reader.
// .parquet without the Arrow backend: Error(kUnimplemented).
std::unique_ptr<VectorReader> open_vector_file(const Storage& storage, const std::string& path);
std::unique_ptr<VectorReader> open_vector_file(const Storage& storage, const std::string& path,
                                               const VectorReadOptions& options);

// ---- Writing .npy --------------------------------------------------------------------

// Element types the .npy writer accepts, with their numpy descr.
enum class NpyType : std::uint8_t {
  kF32,  // '<f4'
  kF16,  // '<f2'
  kU8,   // '|u1'
  kI32,  // '<i4'
  kI64,  // '<i8'
};
std::size_t npy_type_size(NpyType type) noexcept;
const char* npy_type_descr(NpyType type) noexcept;

// Writes a C-order array of `shape` (1 or 2 entries, each >= 0) whose elements are
// `data` (dense, prod(shape) elements of `type`; may be null when that product is 0) as an
// .npy file (format version 1.0; 2.0 only if the header would not fit) at `path`, through
// storage.write_atomic_gather: the file appears whole or not at all. The data is not
// copied. Errors: kInvalidArgument for a bad shape/null data, plus the storage's errors.
void write_npy(Storage& storage, const std::string& path, const void* data, NpyType type,
               std::span<const std::int64_t> shape);

// Typed forms (shape as above; data.size() must equal the product of shape).
void write_npy(Storage& storage, const std::string& path, std::span<const float> data,
               std::span<const std::int64_t> shape);
void write_npy(Storage& storage, const std::string& path, std::span<const std::int32_t> data,
               std::span<const std::int64_t> shape);
void write_npy(Storage& storage, const std::string& path, std::span<const std::int64_t> data,
               std::span<const std::int64_t> shape);

// Writes the matrix (rows x dim, any stride) as a 2-D array. `type` (kF32, kF16 or kU8)
// defaults to the view's dtype, which must then be f32, f16 or u8 (numpy has no bf16:
// pass kF32 or kF16). A view written in its own dtype is not copied (a strided one is
// written row by row); a conversion makes one converted copy of the matrix in memory.
void write_npy(Storage& storage, const std::string& path, const MatrixView& matrix,
               std::optional<NpyType> type = std::nullopt);

}  // namespace megatax
