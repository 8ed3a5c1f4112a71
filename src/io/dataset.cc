#include "megatax/dataset.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "core/parallel.h"

#include "megatax/error.h"
#include "megatax/storage.h"

namespace megatax {
namespace {

bool is_float_kind(DType t) { return t != DType::kU8; }

}  // namespace

Dataset::Dataset(Dataset&&) noexcept = default;
Dataset& Dataset::operator=(Dataset&&) noexcept = default;
Dataset::~Dataset() = default;

Dataset Dataset::open(std::string_view uri_glob) {
  return open(uri_glob, VectorReadOptions());
}

Dataset Dataset::open(const Storage& storage, const std::string& pattern) {
  return open(storage, pattern, VectorReadOptions());
}

Dataset Dataset::open(std::string_view uri_glob, const VectorReadOptions& options) {
  Dataset ds;
  ds.options_ = options;
  std::string pattern;
  ds.owned_storage_ = open_storage_for_uri(uri_glob, &pattern);
  ds.storage_ = ds.owned_storage_.get();
  ds.pattern_ = std::string(uri_glob);
  ds.open_shards(ds.storage_->glob(pattern));
  return ds;
}

Dataset Dataset::open(const Storage& storage, const std::string& pattern,
                      const VectorReadOptions& options) {
  Dataset ds;
  ds.options_ = options;
  ds.storage_ = &storage;
  ds.pattern_ = pattern;
  ds.open_shards(storage.glob(pattern));
  return ds;
}

void Dataset::open_shards(const std::vector<std::string>& paths) {
  if (paths.empty()) {
    throw_error(ErrorCode::kNotFound, "dataset: no files match '" + pattern_ + "'");
  }
  shards_.reserve(paths.size());
  readers_.reserve(paths.size());
  const ShardInfo* dim_from = nullptr;   // first shard that has a dim
  const ShardInfo* kind_from = nullptr;  // first shard (dtype reference)
  bool mixed_dtypes = false;
  std::int64_t total = 0;
  for (const std::string& path : paths) {
    std::unique_ptr<VectorReader> reader = open_vector_file(*storage_, path, options_);
    if (!options_.id_column.empty() && !reader->has_ids()) {
      throw_error(ErrorCode::kInvalidArgument,
                  "shard " + path + ": has no id column '" + options_.id_column + "' (a " +
                      vector_format_name(reader->format()) +
                      " file has no columns; ids need Parquet shards)");
    }
    ShardInfo info;
    info.path = path;
    info.format = reader->format();
    info.rows = reader->rows();
    info.dim = reader->dim();
    info.dtype = reader->dtype();
    info.global_begin = total;
    info.has_ids = reader->has_ids();
    info.skipped_rows = reader->skipped_rows();
    skipped_rows_ += info.skipped_rows;
    if (info.rows > std::numeric_limits<std::int64_t>::max() - total) {
      throw_error(ErrorCode::kOutOfRange,
                  "dataset '" + pattern_ + "': more than 2^63 rows at shard " + path);
    }
    total += info.rows;
    shards_.push_back(std::move(info));
    readers_.push_back(std::move(reader));
    const ShardInfo& s = shards_.back();
    if (kind_from == nullptr) {
      kind_from = &shards_.front();
    } else {
      if (is_float_kind(s.dtype) != is_float_kind(kind_from->dtype)) {
        throw_error(ErrorCode::kInvalidArgument,
                    "shard " + s.path + ": dtype " + dtype_name(s.dtype) + ", expected " +
                        (is_float_kind(kind_from->dtype) ? "a floating-point dtype like " : "") +
                        dtype_name(kind_from->dtype) + " (from " + kind_from->path + ")");
      }
      mixed_dtypes = mixed_dtypes || s.dtype != kind_from->dtype;
    }
    if (s.dim == 0) continue;  // empty .fvecs/.bvecs: no dim recorded
    if (dim_from == nullptr) {
      dim_from = &s;
    } else if (s.dim != dim_from->dim) {
      throw_error(ErrorCode::kInvalidArgument,
                  "shard " + s.path + ": dim " + std::to_string(s.dim) + ", expected " +
                      std::to_string(dim_from->dim) + " (from " + dim_from->path + ")");
    }
  }
  // (Pointers into shards_ stay valid: reserve() above prevents reallocation.)
  if (total == 0 || dim_from == nullptr) {
    throw_error(ErrorCode::kInvalidArgument,
                "dataset '" + pattern_ + "': all " + std::to_string(shards_.size()) +
                    " shard(s) are empty (0 rows); expected at least one vector");
  }
  rows_ = total;
  dim_ = dim_from->dim;
  dtype_ = mixed_dtypes ? DType::kF32 : kind_from->dtype;
  has_ids_ = !options_.id_column.empty();
  for (ShardInfo& s : shards_) s.dim = dim_;
}

const VectorReader& Dataset::reader(std::size_t s) const {
  if (s >= readers_.size()) {
    throw_error(ErrorCode::kOutOfRange, "dataset '" + pattern_ + "': shard index " +
                                            std::to_string(s) +
                                            " >= " + std::to_string(readers_.size()) + " shards");
  }
  return *readers_[s];
}

ShardRow Dataset::locate(Id global_id) const {
  if (global_id < 0 || global_id >= rows_) {
    throw_error(ErrorCode::kOutOfRange, "dataset '" + pattern_ + "': global id " +
                                            std::to_string(global_id) + " outside [0, " +
                                            std::to_string(rows_) + ")");
  }
  // Last shard whose global_begin <= id and that has rows.
  auto it = std::upper_bound(shards_.begin(), shards_.end(), global_id,
                             [](Id id, const ShardInfo& s) { return id < s.global_begin; });
  // it > begin because shards_[0].global_begin == 0 <= id.
  --it;
  while (it->rows == 0) --it;  // empty shards share global_begin with the next one
  return ShardRow{static_cast<std::size_t>(it - shards_.begin()), global_id - it->global_begin};
}

BatchReader::BatchReader(const Dataset& dataset, std::size_t shard, std::int64_t batch_rows,
                         std::int64_t row_begin, std::int64_t row_end, std::vector<float>* buffer)
    : dataset_(dataset), shard_(shard), batch_rows_(batch_rows), next_row_(row_begin),
      buffer_(buffer != nullptr ? *buffer : own_) {
  const VectorReader& reader = dataset.reader(shard);  // checks the index
  const ShardInfo& info = dataset.shards()[shard];
  if (batch_rows < 1) {
    throw_error(ErrorCode::kInvalidArgument, "shard " + info.path + ": batch_rows " +
                                                 std::to_string(batch_rows) + " must be >= 1");
  }
  row_end_ = row_end < 0 ? reader.rows() : row_end;
  if (row_begin < 0 || row_begin > row_end_ || row_end_ > reader.rows()) {
    throw_error(ErrorCode::kOutOfRange, "shard " + info.path + ": row range [" +
                                            std::to_string(row_begin) + ", " +
                                            std::to_string(row_end_) + ") is not inside [0, " +
                                            std::to_string(reader.rows()) + ")");
  }
  const std::int64_t max_rows = std::min(batch_rows, row_end_ - row_begin);
  std::int64_t floats = 0;
  if (__builtin_mul_overflow(max_rows, dataset.dim(), &floats) ||
      static_cast<std::uint64_t>(floats) > std::vector<float>().max_size()) {
    throw_error(ErrorCode::kInvalidArgument,
                "shard " + info.path + ": a batch of " + std::to_string(max_rows) + " x " +
                    std::to_string(dataset.dim()) + " floats is too large");
  }
  // The f32 buffer is sized at the first batch that is converted into it (next()): a reader
  // told to keep the stored dtype or to convert into the caller's memory never touches it
  // (sizing it here cost a 1 GB zero fill per shard of 1M x 256 batches).
}

namespace {
// f32 rows are "kept as stored" too: the same values, but read in parallel ranges straight
// into the caller's buffer (and checked there) instead of through read_f32 on one thread.
bool keeps_stored(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }
}  // namespace

void BatchReader::keep_stored_dtype(std::vector<unsigned char>* raw_buffer) {
  const VectorReader& reader = dataset_.reader(shard_);
  if (!keeps_stored(reader.dtype())) return;
  raw_ = raw_buffer;
  fixed_ = nullptr;
  converted_ = nullptr;
  const auto bytes = static_cast<std::size_t>(std::min(batch_rows_, row_end_ - next_row_) * reader.row_bytes());
  if (raw_->size() < bytes) raw_->resize(bytes);
}

void BatchReader::keep_stored_dtype(unsigned char* buffer, std::size_t bytes) {
  const VectorReader& reader = dataset_.reader(shard_);
  if (!keeps_stored(reader.dtype())) return;
  const auto need = static_cast<std::size_t>(std::min(batch_rows_, row_end_ - next_row_) * reader.row_bytes());
  if (buffer == nullptr || bytes < need)
    throw_error(ErrorCode::kInvalidArgument, "shard " + dataset_.shards()[shard_].path + ": a batch needs " +
                                                 std::to_string(need) + " bytes, the buffer has " +
                                                 std::to_string(buffer == nullptr ? 0 : bytes));
  raw_ = nullptr;
  fixed_ = buffer;
  converted_ = nullptr;
}

void BatchReader::convert_into(unsigned char* buffer, std::size_t bytes, DType to) {
  const std::string& path = dataset_.shards()[shard_].path;
  if (to != DType::kF32 && to != DType::kF16 && to != DType::kBF16)
    throw_error(ErrorCode::kInvalidArgument, "shard " + path + ": rows convert to f32, f16 or bf16, not " +
                                                 std::string(dtype_name(to)));
  if (dataset_.reader(shard_).dtype() == to) {
    keep_stored_dtype(buffer, bytes);  // the same thing for rows stored as wanted
    return;
  }
  const auto need = static_cast<std::size_t>(std::min(batch_rows_, row_end_ - next_row_) * dataset_.dim()) *
                    dtype_size(to);
  if (buffer == nullptr || bytes < need)
    throw_error(ErrorCode::kInvalidArgument, "shard " + path + ": a batch of " + dtype_name(to) + " rows needs " +
                                                 std::to_string(need) + " bytes, the buffer has " +
                                                 std::to_string(buffer == nullptr ? 0 : bytes));
  if (reinterpret_cast<std::uintptr_t>(buffer) % dtype_size(to) != 0)
    throw_error(ErrorCode::kInvalidArgument, "shard " + path + ": the buffer for " + dtype_name(to) +
                                                 " rows is not " + std::to_string(dtype_size(to)) + "-byte aligned");
  raw_ = nullptr;
  fixed_ = nullptr;
  converted_ = buffer;
  convert_to_ = to;
}

bool BatchReader::next(Batch* batch) {
  if (next_row_ >= row_end_) return false;
  const std::int64_t n = std::min(batch_rows_, row_end_ - next_row_);
  const ShardInfo& info = dataset_.shards()[shard_];
  const VectorReader& reader = dataset_.reader(shard_);
  batch->checked = false;
  if (raw_ != nullptr || fixed_ != nullptr) {
    // Row ranges of >= 16 MiB read in parallel: one thread's copies out of the page cache
    // run at a fraction of the memory bandwidth (measured 4-5 GB/s for 4 GB of f16 rows).
    // Into the caller's buffer, each range is checked for non-finite values while it is
    // still in cache (the first bad range is then checked again to name the row). Ranges
    // handed on as they land (on_rows_landed) are 2 MiB: 16 threads' 16 MiB ranges all
    // landed at the end of a batch, so a GPU's copy of the whole batch (256 MiB, ~5 ms)
    // started only then; of 2 MiB ranges only the last few are still to copy.
    const std::int64_t rb = reader.row_bytes();
    const std::int64_t range_bytes = std::int64_t{landed_ ? 2 : 16} << 20;
    const std::int64_t piece = std::max<std::int64_t>(1, range_bytes / std::max<std::int64_t>(1, rb));
    const std::int64_t pieces = (n + piece - 1) / piece;
    unsigned char* dst = fixed_ != nullptr ? fixed_ : raw_->data();
    const std::int64_t first = next_row_;
    const bool check = fixed_ != nullptr;
    const auto elements_per_row = static_cast<std::size_t>(dataset_.dim());
    std::atomic<std::int64_t> first_bad{pieces};
    parallel_for(resolve_threads(0, pieces), pieces, [&](std::int64_t p, int) {
      const std::int64_t r0 = p * piece, k = std::min(piece, n - r0);
      unsigned char* out = dst + static_cast<std::size_t>(r0 * rb);
      reader.read(first + r0, k, out);
      if (check && first_non_finite(reader.dtype(), out, static_cast<std::size_t>(k) * elements_per_row) <
                       static_cast<std::size_t>(k) * elements_per_row) {
        std::int64_t seen = first_bad.load();
        while (p < seen && !first_bad.compare_exchange_weak(seen, p)) {
        }
        return;  // not handed on: the batch fails below
      }
      if (check && landed_) landed_(first, n, r0, k);
    });
    batch->view = MatrixView(dst, n, dataset_.dim(), reader.dtype());
    batch->data = reader.dtype() == DType::kF32 ? reinterpret_cast<float*>(dst) : nullptr;
    if (check) {
      if (const std::int64_t p = first_bad.load(); p < pieces)
        check_finite(MatrixView(dst + static_cast<std::size_t>(p * piece * rb), n - p * piece, dataset_.dim(),
                                reader.dtype()),
                     info.path, next_row_ + p * piece, info.global_begin + next_row_ + p * piece);
      batch->checked = true;
    }
  } else {
    // Converted to f32 in ranges of >= 16 MiB of stored rows on parallel threads too (one
    // thread read and converted f32 rows out of the page cache at ~4 GB/s). Into the
    // caller's buffer (convert_into), each range is checked while in cache and handed on
    // as it lands, in 2 MiB of converted rows, as above; a 16-bit target goes through f32
    // on the reading thread (the f32 values are checked, then the conversion's overflow).
    const bool check = converted_ != nullptr;
    const DType to = check ? convert_to_ : DType::kF32;
    const std::int64_t d = dataset_.dim();
    const auto out_row_bytes = static_cast<std::int64_t>(static_cast<std::size_t>(d) * dtype_size(to));
    const std::int64_t rb = std::max<std::int64_t>(1, check && landed_ ? out_row_bytes : reader.row_bytes());
    const std::int64_t range_bytes = std::int64_t{check && landed_ ? 2 : 16} << 20;
    const std::int64_t piece = std::max<std::int64_t>(1, range_bytes / rb);
    const std::int64_t pieces = (n + piece - 1) / piece;
    const std::int64_t first = next_row_;
    if (!check && buffer_.size() < static_cast<std::size_t>(n * d)) buffer_.resize(static_cast<std::size_t>(n * d));
    unsigned char* out = check ? converted_ : reinterpret_cast<unsigned char*>(buffer_.data());
    std::atomic<std::int64_t> first_bad{pieces};
    const int threads = resolve_threads(0, pieces);
    if (to != DType::kF32 && scratch_.size() < static_cast<std::size_t>(threads)) scratch_.resize(threads);
    parallel_for(threads, pieces, [&](std::int64_t p, int worker) {
      const std::int64_t r0 = p * piece, k = std::min(piece, n - r0);
      const auto count = static_cast<std::size_t>(k * d);
      unsigned char* dst = out + r0 * out_row_bytes;
      float* values = reinterpret_cast<float*>(dst);
      if (to != DType::kF32) {  // the worker's f32 rows (kept across batches: no fresh pages)
        std::vector<float>& f32 = scratch_[static_cast<std::size_t>(worker)];
        if (f32.size() < count) f32.resize(count);
        values = f32.data();
      }
      reader.read_f32(first + r0, k, values);
      bool bad = check && first_non_finite(DType::kF32, values, count) < count;
      if (!bad && check && transform_) transform_(values, k);
      if (!bad && to != DType::kF32) {
        convert_from_f32(values, count, to, dst);
        bad = first_non_finite(to, dst, count) < count;  // f16: a finite value too large
      }
      if (bad) {
        std::int64_t seen = first_bad.load();
        while (p < seen && !first_bad.compare_exchange_weak(seen, p)) {
        }
        return;  // not handed on: the batch fails below
      }
      if (check && landed_) landed_(first, n, r0, k);
    });
    batch->view = MatrixView(out, n, d, to);
    batch->data = to == DType::kF32 ? reinterpret_cast<float*>(out) : nullptr;
    if (check) {
      if (const std::int64_t p = first_bad.load(); p < pieces) {
        // The first bad range again, as f32: a non-finite value as stored, else an overflow.
        const std::int64_t r0 = p * piece, k = std::min(piece, n - r0);
        std::vector<float> f32(static_cast<std::size_t>(k * d));
        reader.read_f32(first + r0, k, f32.data());
        check_finite(MatrixView(f32.data(), k, d, DType::kF32), info.path, first + r0, info.global_begin + first + r0);
        std::vector<unsigned char> one(dtype_size(to));
        for (std::size_t i = 0; i < f32.size(); ++i) {
          convert_from_f32(&f32[i], 1, to, one.data());
          if (first_non_finite(to, one.data(), 1) == 0) {
            const std::int64_t row = first + r0 + static_cast<std::int64_t>(i) / d;
            throw_error(ErrorCode::kDataLoss,
                        "shard " + info.path + ": row " + std::to_string(row) + " (global id " +
                            std::to_string(info.global_begin + row) + ") has a value too large for " +
                            dtype_name(to) + " (" + std::to_string(f32[i]) + ") in column " +
                            std::to_string(static_cast<std::int64_t>(i) % d) +
                            ", the dtype its rows are converted to (f16's largest is 65504)");
          }
        }
        throw_error(ErrorCode::kInternal, "shard " + info.path + ": rows from " + std::to_string(first + r0) +
                                              " failed their check, but read again they pass");
      }
      batch->checked = true;
    }
  }
  batch->shard = shard_;
  batch->local_begin = next_row_;
  batch->global_begin = info.global_begin + next_row_;
  next_row_ += n;
  return true;
}


void check_finite(const MatrixView& rows, const std::string& shard_path, std::int64_t local_begin,
                  Id global_begin) {
  validate_view(rows, ("check_finite of shard " + shard_path).c_str());
  if (rows.dtype == DType::kU8) return;
  const auto d = static_cast<std::size_t>(rows.dim);
  // Row chunks of ~4M elements checked in parallel; the first bad row of all is reported
  // (the same one whatever the thread count).
  const std::int64_t chunk_rows = std::max<std::int64_t>(1, (std::int64_t{1} << 22) / rows.dim);
  const std::int64_t chunks = (rows.rows + chunk_rows - 1) / chunk_rows;
  std::atomic<std::int64_t> first_bad{rows.rows};
  parallel_for(resolve_threads(0, chunks), chunks, [&](std::int64_t c, int) {
    const std::int64_t end = std::min(rows.rows, (c + 1) * chunk_rows);
    for (std::int64_t i = c * chunk_rows; i < end && i < first_bad.load(std::memory_order_relaxed); ++i) {
      if (first_non_finite(rows.dtype, rows.row(i), d) == d) continue;
      std::int64_t seen = first_bad.load();
      while (i < seen && !first_bad.compare_exchange_weak(seen, i)) {
      }
      return;
    }
  });
  if (const std::int64_t i = first_bad.load(); i < rows.rows) {
    const void* row = rows.row(i);
    const std::size_t j = first_non_finite(rows.dtype, row, d);
    float value = 0.0f;
    convert_to_f32(rows.dtype, static_cast<const char*>(row) + j * dtype_size(rows.dtype), 1,
                   &value);
    const char* what = std::isnan(value) ? "nan" : (value > 0 ? "inf" : "-inf");
    throw_error(ErrorCode::kDataLoss,
                "shard " + shard_path + ": row " + std::to_string(local_begin + i) +
                    " (global id " + std::to_string(global_begin + i) +
                    ") has a non-finite value (" + what + ") in column " + std::to_string(j));
  }
}

void check_finite(const Batch& batch, const Dataset& dataset) {
  check_finite(batch.view, dataset.shards().at(batch.shard).path, batch.local_begin,
               batch.global_begin);
}

}  // namespace megatax
