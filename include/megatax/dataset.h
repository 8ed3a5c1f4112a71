// megatax/dataset.h -- a dataset: the vector files ("shards") behind a URI glob, in name
// order, with 64-bit global ids, and bounded-memory batch reading of one shard.
//
// Global ids: shard s's row r has global id shards()[s].global_begin + r, where
// global_begin is the total row count of the shards before s (sorted byte-wise by path).
// Ids are stable as long as the set of files and their contents are.
//
// Opening reads every shard's header (not its data) and checks that all shards agree:
//   * same dim (an empty .fvecs/.bvecs shard has no dim and takes the dataset's);
//   * same dtype kind: all floating point (f32/f16, converted to f32 on read) or all u8.
// Empty shards (0 rows) are allowed; a dataset with no rows at all is an error.
//
// Thread-safety: a Dataset is immutable after open(); its const methods may run
// concurrently. A BatchReader is used by one thread at a time; several BatchReaders over
// one Dataset may run concurrently (one per thread).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "megatax/dtype.h"
#include "megatax/matrix.h"
#include "megatax/vector_format.h"

namespace megatax {

class Storage;

// One input file of the dataset.
struct ShardInfo {
  std::string path;  // path within the dataset's storage (no URI scheme)
  VectorFormat format = VectorFormat::kNpy;
  std::int64_t rows = 0;      // >= 0
  std::int64_t dim = 0;       // the dataset's dim (also for an empty .fvecs/.bvecs shard)
  DType dtype = DType::kF32;  // as stored
  Id global_begin = 0;        // global id of row 0
  bool has_ids = false;       // the file carries ids (Parquet id column; reader(s).read_ids)
  std::int64_t skipped_rows = 0;  // null rows skipped (VectorReadOptions::skip_null)
};

// Where a global id lives.
struct ShardRow {
  std::size_t shard = 0;
  std::int64_t row = 0;
};

class Dataset {
 public:
  // Opens the shards matching `uri_glob`: a plain path or a file:// URI whose last path
  // component may hold * ? [...] (e.g. "/data/emb/part-*.npy"). Other schemes: the error
  // of open_storage_for_uri (s3:// etc.: kUnimplemented until the Arrow backend). The
  // storage is owned by the Dataset.
  // Errors: kNotFound "no files match '<pattern>'"; kInvalidArgument for a dim or dtype
  // mismatch ("shard /d/b.npy: dim 768, expected 1024 (from /d/a.npy)") or a dataset
  // without rows; and every error of open_vector_file, naming the shard.
  static Dataset open(std::string_view uri_glob);
  // As above, reading every shard with `options` (Parquet column, id column, skip_null;
  // see vector_format.h). With options.id_column set, every shard must be a file that has
  // that column (kInvalidArgument otherwise).
  static Dataset open(std::string_view uri_glob, const VectorReadOptions& options);

  // As above over a borrowed storage (which must outlive the Dataset); `pattern` is a
  // path pattern in that storage (no scheme).
  static Dataset open(const Storage& storage, const std::string& pattern);
  static Dataset open(const Storage& storage, const std::string& pattern,
                      const VectorReadOptions& options);

  Dataset(Dataset&&) noexcept;
  Dataset& operator=(Dataset&&) noexcept;
  ~Dataset();

  const std::string& pattern() const noexcept { return pattern_; }
  const std::vector<ShardInfo>& shards() const noexcept { return shards_; }
  std::int64_t rows() const noexcept { return rows_; }  // total over all shards, >= 1
  std::int64_t dim() const noexcept { return dim_; }    // >= 1
  // The shards' stored dtype if they all agree, otherwise (f32 and f16 mixed) kF32.
  DType dtype() const noexcept { return dtype_; }
  const Storage& storage() const noexcept { return *storage_; }
  const VectorReadOptions& read_options() const noexcept { return options_; }
  // True if every shard carries ids (options.id_column was set); then the ids of shard s
  // come from reader(s).read_ids().
  bool has_ids() const noexcept { return has_ids_; }
  // Null rows skipped over all shards (options.skip_null); not counted in rows().
  std::int64_t skipped_rows() const noexcept { return skipped_rows_; }

  // Random access to shard s (0 <= s < shards().size(), else kOutOfRange). The reader
  // lives as long as the Dataset.
  const VectorReader& reader(std::size_t s) const;

  // The shard and row of a global id; kOutOfRange unless 0 <= id < rows(). O(log shards).
  ShardRow locate(Id global_id) const;

 private:
  Dataset() = default;
  void open_shards(const std::vector<std::string>& paths);

  std::string pattern_;
  VectorReadOptions options_;
  std::unique_ptr<Storage> owned_storage_;  // null when the storage is borrowed
  const Storage* storage_ = nullptr;
  std::vector<ShardInfo> shards_;
  std::vector<std::unique_ptr<VectorReader>> readers_;  // one per shard
  std::int64_t rows_ = 0;
  std::int64_t dim_ = 0;
  DType dtype_ = DType::kF32;
  bool has_ids_ = false;
  std::int64_t skipped_rows_ = 0;
};

// One batch of consecutive rows of one shard, converted to float32 (or, when the reader
// keeps the stored dtype, as stored).
struct Batch {
  std::size_t shard = 0;
  std::int64_t local_begin = 0;  // row of view row 0 within the shard
  Id global_begin = 0;           // global id of view row 0
  // rows x dim, dense (stride == dim); rows >= 1; f32, or f16/bf16 as stored (see
  // BatchReader::keep_stored_dtype). Points into the BatchReader's buffer: valid until the
  // next call of next() or the reader's destruction.
  MatrixView view;
  // The same memory when it is f32, writable (e.g. to normalise in place): view.rows *
  // view.dim floats; null for a batch kept in its stored 16-bit dtype.
  float* data = nullptr;
  // True when the reader already checked every value is finite (check_finite's contract,
  // with its error): then check_finite(batch) has nothing left to find.
  bool checked = false;
};

// Reads rows [row_begin, row_end) of one shard in batches of at most `batch_rows` rows,
// converted to f32. Holds one buffer of min(batch_rows, row_end - row_begin) * dim
// floats, allocated by the first batch converted into it: memory does not depend on the
// shard's size.
class BatchReader {
 public:
  // `dataset` is borrowed and must outlive the reader. batch_rows >= 1; row_end = -1
  // means the end of the shard; 0 <= row_begin <= row_end <= shard rows. Violations:
  // kInvalidArgument / kOutOfRange naming the shard.
  // `buffer` (optional): a vector the reader uses (and grows) instead of its own, so that a
  // caller reading shard after shard reuses one allocation (no fresh pages to fault in).
  BatchReader(const Dataset& dataset, std::size_t shard, std::int64_t batch_rows,
              std::int64_t row_begin = 0, std::int64_t row_end = -1,
              std::vector<float>* buffer = nullptr);

  // Reads the next batch into *batch and returns true, or returns false when all rows
  // have been read (then *batch is untouched). Errors of the reader propagate (the
  // reader stays at the failed batch, so next() may be retried after a kUnavailable).
  bool next(Batch* batch);

  // From now on, batches of an f32, f16 or bf16 shard come as stored (no float32 conversion;
  // for a consumer that computes in that dtype, e.g. the GPU; f32: the same values, data
  // pointing at them), read in parallel ranges into `raw_buffer` (borrowed, grown as needed,
  // reusable across readers like `buffer`). No effect on u8 shards.
  void keep_stored_dtype(std::vector<unsigned char>* raw_buffer);
  // The same, into a buffer the caller owns (e.g. page-locked memory a GPU copies from
  // directly) of `bytes`, which must hold a whole batch (Error(kInvalidArgument) naming the
  // shard otherwise). Batches read this way are checked for non-finite values while they
  // are read (Batch::checked).
  void keep_stored_dtype(unsigned char* buffer, std::size_t bytes);
  // From now on, batches come converted to `to` (f32, f16 or bf16; whatever the stored
  // dtype), read and converted in parallel ranges into a buffer the caller owns of `bytes`,
  // which must hold a whole batch of such rows (Error(kInvalidArgument) naming the shard
  // otherwise): for a consumer computing in `to` that moves rows out of its own memory (a
  // GPU's page-locked buffer). Values convert through f32, rounded to nearest (the values
  // convert_from_f32 gives); checked while they are read (non-finite values as stored, and a
  // finite value too large for f16: Error(kDataLoss) naming its row, column and value),
  // handed on as they land (on_rows_landed), as with keep_stored_dtype(buffer, bytes), which a
  // shard stored in `to` takes. Batch::data points at the rows when `to` is f32, else is null.
  void convert_into(unsigned char* buffer, std::size_t bytes, DType to = DType::kF32);
  // For batches converted by convert_into (not a shard stored in `to`): `transform` is called
  // on each range's rows as f32 after they are checked and before they are converted (e.g.
  // to normalise them), from the reading threads (concurrently, ranges disjoint).
  using RowsTransform = std::function<void(float* rows, std::int64_t count)>;
  void transform_converted_rows(RowsTransform transform) { transform_ = std::move(transform); }

  // For batches read into a caller's buffer (keep_stored_dtype(buffer, bytes) or
  // convert_into): `landed` is called as each range of a batch's rows is in the buffer and
  // checked, from the reading threads (concurrently, ranges disjoint, in any order), with the
  // batch's first row in the shard, the batch's rows, and the range's first row and row count
  // within the batch. A consumer may start moving those rows (e.g. copying them to a GPU)
  // before next() returns. An exception it throws fails that next().
  using RowsLanded = std::function<void(std::int64_t batch_begin, std::int64_t batch_rows, std::int64_t first,
                                        std::int64_t count)>;
  void on_rows_landed(RowsLanded landed) { landed_ = std::move(landed); }

  BatchReader(const BatchReader&) = delete;  // buffer_ may refer to own_
  BatchReader& operator=(const BatchReader&) = delete;

  // Rows not yet returned.
  std::int64_t remaining() const noexcept { return row_end_ - next_row_; }

 private:
  const Dataset& dataset_;
  std::size_t shard_;
  std::int64_t batch_rows_;
  std::int64_t next_row_;
  std::int64_t row_end_;
  std::vector<float> own_;
  std::vector<float>& buffer_;  // own_ or the caller's
  std::vector<unsigned char>* raw_ = nullptr;  // set: batches keep the stored dtype
  unsigned char* fixed_ = nullptr;             // ... into the caller's buffer instead
  unsigned char* converted_ = nullptr;         // set: converted into the caller's buffer
  DType convert_to_ = DType::kF32;             // ... to this dtype
  std::vector<std::vector<float>> scratch_;    // ... through f32 rows, one a reading thread
  RowsLanded landed_;                          // see on_rows_landed
  RowsTransform transform_;                    // see transform_converted_rows
};

// Throws Error(kDataLoss) if any element of `rows` (f32, f16 or bf16; u8 always passes) is
// NaN or +-Inf, naming the first such element:
//   "shard <path>: row <local> (global id <global>) has a non-finite value (nan) in
//    column <j>"
// where row local_begin + i / global_begin + i is view row i.
void check_finite(const MatrixView& rows, const std::string& shard_path, std::int64_t local_begin,
                  Id global_begin);

// The same for a batch of `dataset`.
void check_finite(const Batch& batch, const Dataset& dataset);

}  // namespace megatax
