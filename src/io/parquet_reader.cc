// The Parquet VectorReader: Arrow's parquet::arrow::FileReader over our Storage, column
// projection to the embedding (+ id) column, streamed in record batches per row group.
#include "io/parquet_reader.h"

#include <arrow/api.h>
#include <arrow/util/float16.h>
#include <parquet/arrow/reader.h>
#include <parquet/arrow/schema.h>
#include <parquet/exception.h>
#include <parquet/file_reader.h>
#include <parquet/metadata.h>
#include <parquet/properties.h>
#include <parquet/statistics.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

#include "io/arrow_file.h"
#include "megatax/error.h"

namespace megatax::io {
namespace {

// How the vectors sit in the embedding column.
enum class Layout : std::uint8_t { kList, kLargeList, kFixedList, kBinary, kLargeBinary, kFixedBinary };

// Decoded bytes of the embedding column per record batch that the reader aims for.
constexpr std::int64_t kTargetBatchBytes = std::int64_t{8} << 20;
// Bytes per read from storage while decoding a column chunk (Parquet's buffered stream):
// bounds memory whatever the row-group size, and makes S3 reads 8 MiB ranged GETs.
constexpr std::int64_t kStreamBufferBytes = std::int64_t{8} << 20;
// Streaming positions kept per file (readers of one shard at different rows).
constexpr std::size_t kMaxCursors = 4;

// Row counts of one row group.
struct Group {
  std::int64_t physical_begin = 0;  // file row of its first row
  std::int64_t physical_rows = 0;
  std::int64_t logical_begin = 0;   // reader row of its first kept row
  std::int64_t logical_rows = 0;    // kept rows (non-null with skip_null, else all)
};

// A streaming position inside one row group and its current, validated batch.
struct Cursor {
  int group = -1;
  std::unique_ptr<arrow::RecordBatchReader> stream;
  std::shared_ptr<arrow::Array> embedding;  // current batch's embedding column (or null)
  std::shared_ptr<arrow::Array> ids;        // current batch's id column (or null)
  std::vector<std::int32_t> kept;  // batch rows kept, ascending (when !all_kept)
  bool all_kept = true;
  std::int64_t batch_physical_begin = 0;  // file row of batch row 0
  std::int64_t batch_logical_begin = 0;   // reader row of the batch's first kept row
  std::int64_t batch_logical_rows = 0;
  std::int64_t next_physical = 0;  // file row after the current batch
  std::uint64_t last_used = 0;

  bool holds(std::int64_t row) const {
    return embedding != nullptr && row >= batch_logical_begin &&
           row < batch_logical_begin + batch_logical_rows;
  }
  // Batch row of reader row `row` (requires holds(row)).
  std::int64_t batch_row(std::int64_t row) const {
    const std::int64_t k = row - batch_logical_begin;
    return all_kept ? k : kept[static_cast<std::size_t>(k)];
  }
};

class ParquetVectorReader final : public VectorReader {
 public:
  ParquetVectorReader(const Storage& storage, std::string path, VectorReadOptions options)
      : storage_(storage), path_(std::move(path)), options_(std::move(options)) {
    cursors_.reserve(kMaxCursors);  // references into it stay valid
  }

  void open();

  const std::string& path() const noexcept override { return path_; }
  VectorFormat format() const noexcept override { return VectorFormat::kParquet; }
  std::int64_t rows() const noexcept override { return rows_; }
  std::int64_t dim() const noexcept override { return dim_; }
  DType dtype() const noexcept override { return dtype_; }
  bool has_ids() const noexcept override { return id_field_ >= 0; }
  std::int64_t skipped_rows() const noexcept override { return skipped_; }
  void drop_caches() const noexcept override {
    std::lock_guard<std::mutex> lock(mu_);
    cursors_.clear();
  }

  void read(std::int64_t row_begin, std::int64_t n_rows, void* dst) const override {
    check_read_range(row_begin, n_rows, dst);
    guarded_copy(row_begin, n_rows, static_cast<unsigned char*>(dst), nullptr);
  }
  void read_ids(std::int64_t row_begin, std::int64_t n_rows, std::int64_t* dst) const override {
    if (!has_ids()) VectorReader::read_ids(row_begin, n_rows, dst);  // throws
    check_read_range(row_begin, n_rows, dst);
    guarded_copy(row_begin, n_rows, nullptr, dst);
  }

 private:
  std::string where() const { return "file " + path_ + ", column '" + options_.column + "'"; }
  [[noreturn]] void fail(ErrorCode code, const std::string& what) const {
    throw_error(code, where() + ": " + what);
  }
  // Rethrows a Storage error seen by the Arrow file (keeping its code), else throws
  // `code` with Arrow's/Parquet's message.
  [[noreturn]] void fail_arrow(ErrorCode code, const std::string& what,
                               const std::string& detail) const;

  void check_schema();
  void count_rows();
  std::int64_t count_null_rows(int group) const;
  std::int64_t bytes_per_row_estimate() const;

  // copy_rows, with Parquet's exceptions (corrupt pages) turned into Error(kDataLoss).
  void guarded_copy(std::int64_t row_begin, std::int64_t n, unsigned char* vectors,
                    std::int64_t* ids) const {
    try {
      copy_rows(row_begin, n, vectors, ids);
    } catch (const parquet::ParquetException& e) {
      fail_arrow(ErrorCode::kDataLoss, "corrupt Parquet data", e.what());
    }
  }
  // Copies reader rows [row_begin, row_begin + n) into vectors (if non-null) and ids.
  void copy_rows(std::int64_t row_begin, std::int64_t n, unsigned char* vectors,
                 std::int64_t* ids) const;
  // A cursor whose current batch holds reader row `row` (caller holds mu_).
  Cursor& cursor_for(std::int64_t row) const;
  void start_group(Cursor& c, int group) const;
  // Reads the cursor's next batch and validates it; false at the end of the row group.
  bool advance(Cursor& c) const;
  // Checks every row of the batch (nulls, dim, null elements) and fills c.kept.
  void validate_batch(Cursor& c) const;
  std::int64_t row_length(const arrow::Array& a, std::int64_t i) const;  // elements in row i
  const unsigned char* row_data(const arrow::Array& a, std::int64_t i) const;
  std::int64_t id_at(const arrow::Array& a, std::int64_t i, std::int64_t file_row) const;

  const Storage& storage_;
  const std::string path_;
  const VectorReadOptions options_;
  // shared_ptr: Arrow's Parquet reader takes shared ownership of its input file.
  std::shared_ptr<StorageInputFile> file_;
  std::unique_ptr<parquet::arrow::FileReader> reader_;
  std::vector<int> leaves_;  // Parquet leaf columns to decode (projection)
  int field_ = -1;           // top-level field index of the embedding column
  int id_field_ = -1;        // ... of the id column, or -1
  Layout layout_ = Layout::kList;
  DType dtype_ = DType::kF32;
  std::int64_t elem_bytes_ = 4;
  // 0 until known (an empty or all-null file keeps 0). Set while open() decodes the first
  // non-null row (learning_dim_), hence mutable; never changes after open().
  mutable std::int64_t dim_ = 0;
  mutable std::int64_t dim_row_ = -1;  // file row that dim came from (-1: from the schema)
  std::int64_t rows_ = 0;
  std::int64_t skipped_ = 0;
  std::vector<Group> groups_;

  mutable std::mutex mu_;
  mutable std::vector<Cursor> cursors_;  // guarded by mu_
  mutable std::uint64_t clock_ = 0;      // guarded by mu_
  // dim learned from the first non-null row while opening (then immutable).
  mutable bool learning_dim_ = false;
};

void ParquetVectorReader::fail_arrow(ErrorCode code, const std::string& what,
                                     const std::string& detail) const {
  if (file_) {
    if (std::optional<Error> storage_error = file_->take_error()) {
      throw_error(storage_error->code(), where() + ": " + what + ": " + storage_error->what());
    }
  }
  fail(code, what + ": " + detail);
}

void ParquetVectorReader::open() {
  if (options_.column.empty()) {
    throw_error(ErrorCode::kInvalidArgument,
                "file " + path_ + ": empty embedding column name (VectorReadOptions::column)");
  }
  if (options_.binary_dtype != DType::kF32 && options_.binary_dtype != DType::kF16) {
    fail(ErrorCode::kInvalidArgument, std::string("binary_dtype ") +
                                          dtype_name(options_.binary_dtype) +
                                          " is not supported; expected f32 or f16");
  }
  const std::uint64_t size = storage_.size(path_);
  file_ = std::make_shared<StorageInputFile>(storage_, path_, static_cast<std::int64_t>(size));
  parquet::ReaderProperties props(arrow::default_memory_pool());
  props.enable_buffered_stream();
  props.set_buffer_size(kStreamBufferBytes);
  parquet::ArrowReaderProperties arrow_props(/*use_threads=*/false);
  arrow_props.set_pre_buffer(false);  // pre-buffering would hold whole column chunks
  std::unique_ptr<parquet::ParquetFileReader> parquet_reader;
  try {
    parquet_reader = parquet::ParquetFileReader::Open(file_, props);
  } catch (const std::exception& e) {
    fail_arrow(ErrorCode::kDataLoss, "not a readable Parquet file (corrupt or truncated footer)",
               e.what());
  }
  arrow::Result<std::unique_ptr<parquet::arrow::FileReader>> reader =
      parquet::arrow::FileReader::Make(arrow::default_memory_pool(), std::move(parquet_reader),
                                       arrow_props);
  if (!reader.ok()) {
    fail_arrow(ErrorCode::kDataLoss, "cannot read the Parquet schema",
               reader.status().ToString());
  }
  reader_ = std::move(*reader);
  check_schema();
  reader_->set_batch_size(std::max<std::int64_t>(
      1, std::min<std::int64_t>(65536, kTargetBatchBytes / bytes_per_row_estimate())));
  count_rows();
  if (dim_ == 0 && rows_ > 0) {
    // dim from the first non-null row: decoding it also validates that batch.
    std::lock_guard<std::mutex> lock(mu_);
    learning_dim_ = true;
    (void)cursor_for(0);
    learning_dim_ = false;
    cursors_.clear();  // an opened, unread shard holds no decoded rows
  }
}

void ParquetVectorReader::check_schema() {
  const parquet::arrow::SchemaManifest& manifest = reader_->manifest();
  std::vector<std::string> names;
  for (std::size_t i = 0; i < manifest.schema_fields.size(); ++i) {
    const std::string& name = manifest.schema_fields[i].field->name();
    names.push_back(name);
    if (name == options_.column) {
      if (field_ >= 0) fail(ErrorCode::kInvalidArgument, "the file has two columns of that name");
      field_ = static_cast<int>(i);
    }
    if (!options_.id_column.empty() && name == options_.id_column) {
      if (id_field_ >= 0) {
        fail(ErrorCode::kInvalidArgument,
             "the file has two id columns named '" + options_.id_column + "'");
      }
      id_field_ = static_cast<int>(i);
    }
  }
  auto list_names = [&] {
    std::string s;
    for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
    return s.empty() ? std::string("(none)") : s;
  };
  if (field_ < 0) {
    fail(ErrorCode::kInvalidArgument,
         "no such column; the file's columns are: " + list_names() +
             " (choose one with --column / VectorReadOptions::column)");
  }
  if (!options_.id_column.empty() && id_field_ < 0) {
    throw_error(ErrorCode::kInvalidArgument, "file " + path_ + ", id column '" +
                                                 options_.id_column +
                                                 "': no such column; the file's columns are: " +
                                                 list_names());
  }
  const std::shared_ptr<arrow::DataType>& type = manifest.schema_fields[field_].field->type();
  const std::string expected =
      "; expected list<float>, large_list<float>, fixed_size_list<float>, list<halffloat> "
      "(or large/fixed-size), binary, large_binary or fixed_size_binary of packed " +
      std::string(dtype_name(options_.binary_dtype));
  auto element_dtype = [&](const std::shared_ptr<arrow::DataType>& value_type) {
    if (value_type->id() == arrow::Type::FLOAT) return DType::kF32;
    if (value_type->id() == arrow::Type::HALF_FLOAT) return DType::kF16;
    fail(ErrorCode::kInvalidArgument, "has type " + type->ToString() + expected);
  };
  switch (type->id()) {
    case arrow::Type::LIST:
      layout_ = Layout::kList;
      dtype_ = element_dtype(static_cast<const arrow::ListType&>(*type).value_type());
      break;
    case arrow::Type::LARGE_LIST:
      layout_ = Layout::kLargeList;
      dtype_ = element_dtype(static_cast<const arrow::LargeListType&>(*type).value_type());
      break;
    case arrow::Type::FIXED_SIZE_LIST: {
      const auto& t = static_cast<const arrow::FixedSizeListType&>(*type);
      layout_ = Layout::kFixedList;
      dtype_ = element_dtype(t.value_type());
      dim_ = t.list_size();
      if (dim_ < 1) fail(ErrorCode::kInvalidArgument, "has type " + type->ToString() + ": dim 0");
      break;
    }
    case arrow::Type::BINARY:
    case arrow::Type::LARGE_BINARY:
      layout_ = type->id() == arrow::Type::BINARY ? Layout::kBinary : Layout::kLargeBinary;
      dtype_ = options_.binary_dtype;
      break;
    case arrow::Type::FIXED_SIZE_BINARY: {
      layout_ = Layout::kFixedBinary;
      dtype_ = options_.binary_dtype;
      const std::int64_t width = static_cast<const arrow::FixedSizeBinaryType&>(*type).byte_width();
      const auto esize = static_cast<std::int64_t>(dtype_size(dtype_));
      if (width < esize || width % esize != 0) {
        fail(ErrorCode::kInvalidArgument,
             "has type " + type->ToString() + ": " + std::to_string(width) +
                 " bytes per row is not a whole number of " + dtype_name(dtype_) + " elements");
      }
      dim_ = width / esize;
      break;
    }
    default: fail(ErrorCode::kInvalidArgument, "has type " + type->ToString() + expected);
  }
  elem_bytes_ = static_cast<std::int64_t>(dtype_size(dtype_));
  if (id_field_ >= 0) {
    const std::shared_ptr<arrow::DataType>& id_type =
        manifest.schema_fields[id_field_].field->type();
    switch (id_type->id()) {
      case arrow::Type::INT8:
      case arrow::Type::INT16:
      case arrow::Type::INT32:
      case arrow::Type::INT64:
      case arrow::Type::UINT8:
      case arrow::Type::UINT16:
      case arrow::Type::UINT32:
      case arrow::Type::UINT64: break;
      default:
        throw_error(ErrorCode::kInvalidArgument,
                    "file " + path_ + ", id column '" + options_.id_column + "': has type " +
                        id_type->ToString() + "; expected an integer type (int64)");
    }
  }
  // Projection: the Parquet leaf columns under the chosen fields, nothing else.
  std::vector<const parquet::arrow::SchemaField*> todo = {&manifest.schema_fields[field_]};
  if (id_field_ >= 0) todo.push_back(&manifest.schema_fields[id_field_]);
  while (!todo.empty()) {
    const parquet::arrow::SchemaField* f = todo.back();
    todo.pop_back();
    if (f->is_leaf()) leaves_.push_back(f->column_index);
    for (const parquet::arrow::SchemaField& child : f->children) todo.push_back(&child);
  }
  std::sort(leaves_.begin(), leaves_.end());
}

std::int64_t ParquetVectorReader::bytes_per_row_estimate() const {
  if (dim_ > 0) return std::max<std::int64_t>(1, dim_ * elem_bytes_);
  const std::shared_ptr<parquet::FileMetaData> meta = reader_->parquet_reader()->metadata();
  for (int g = 0; g < meta->num_row_groups(); ++g) {
    const std::unique_ptr<parquet::RowGroupMetaData> rg = meta->RowGroup(g);
    if (rg->num_rows() <= 0) continue;
    std::int64_t bytes = 0;
    for (int leaf : leaves_) bytes += rg->ColumnChunk(leaf)->total_uncompressed_size();
    return std::max<std::int64_t>(1, bytes / rg->num_rows());
  }
  return 4096;
}

void ParquetVectorReader::count_rows() {
  const std::shared_ptr<parquet::FileMetaData> meta = reader_->parquet_reader()->metadata();
  const int n_groups = meta->num_row_groups();
  groups_.resize(static_cast<std::size_t>(n_groups));
  std::int64_t physical = 0;
  std::int64_t logical = 0;
  for (int g = 0; g < n_groups; ++g) {
    Group& group = groups_[static_cast<std::size_t>(g)];
    group.physical_begin = physical;
    group.physical_rows = meta->RowGroup(g)->num_rows();
    if (group.physical_rows < 0) {
      fail(ErrorCode::kDataLoss, "row group " + std::to_string(g) + " has a negative row count");
    }
    group.logical_begin = logical;
    std::int64_t nulls = 0;
    if (options_.skip_null && group.physical_rows > 0) nulls = count_null_rows(g);
    group.logical_rows = group.physical_rows - nulls;
    skipped_ += nulls;
    physical += group.physical_rows;
    logical += group.logical_rows;
  }
  rows_ = logical;
}

// Null rows of the embedding column in row group g. A leaf null count of 0 in the
// statistics proves there are none (a null row is a missing leaf value); for flat
// (binary) columns the leaf null count is exact. Otherwise the column is decoded once.
std::int64_t ParquetVectorReader::count_null_rows(int group) const {
  const std::unique_ptr<parquet::RowGroupMetaData> rg =
      reader_->parquet_reader()->metadata()->RowGroup(group);
  const parquet::arrow::SchemaField& field = reader_->manifest().schema_fields[field_];
  bool stats_say_none = true;
  std::int64_t flat_nulls = -1;
  std::vector<const parquet::arrow::SchemaField*> todo = {&field};
  while (!todo.empty()) {
    const parquet::arrow::SchemaField* f = todo.back();
    todo.pop_back();
    for (const parquet::arrow::SchemaField& child : f->children) todo.push_back(&child);
    if (!f->is_leaf()) continue;
    const std::unique_ptr<parquet::ColumnChunkMetaData> chunk = rg->ColumnChunk(f->column_index);
    const std::shared_ptr<parquet::EncodedStatistics> stats =
        chunk->is_stats_set() ? chunk->encoded_statistics() : nullptr;
    if (stats == nullptr || !stats->has_null_count) {
      stats_say_none = false;
      continue;
    }
    if (stats->null_count != 0) stats_say_none = false;
    if (f == &field) flat_nulls = stats->null_count;  // a flat column is its own leaf
  }
  if (stats_say_none) return 0;
  if (flat_nulls >= 0) return flat_nulls;
  // One decoding pass over this row group's embedding column.
  std::vector<int> embedding_leaves;
  todo = {&field};
  while (!todo.empty()) {
    const parquet::arrow::SchemaField* f = todo.back();
    todo.pop_back();
    if (f->is_leaf()) embedding_leaves.push_back(f->column_index);
    for (const parquet::arrow::SchemaField& child : f->children) todo.push_back(&child);
  }
  std::sort(embedding_leaves.begin(), embedding_leaves.end());
  arrow::Result<std::unique_ptr<arrow::RecordBatchReader>> stream =
      reader_->GetRecordBatchReader({group}, embedding_leaves);
  if (!stream.ok()) {
    fail_arrow(ErrorCode::kDataLoss, "row group " + std::to_string(group),
               stream.status().ToString());
  }
  std::int64_t nulls = 0;
  while (true) {
    std::shared_ptr<arrow::RecordBatch> batch;
    const arrow::Status st = (*stream)->ReadNext(&batch);
    if (!st.ok()) {
      fail_arrow(ErrorCode::kDataLoss,
                 "row group " + std::to_string(group) + ": cannot decode (counting null rows)",
                 st.ToString());
    }
    if (batch == nullptr) break;
    nulls += batch->column(0)->null_count();
  }
  return nulls;
}

void ParquetVectorReader::start_group(Cursor& c, int group) const {
  c = Cursor();
  c.group = group;
  arrow::Result<std::unique_ptr<arrow::RecordBatchReader>> stream =
      reader_->GetRecordBatchReader({group}, leaves_);
  if (!stream.ok()) {
    fail_arrow(ErrorCode::kDataLoss, "row group " + std::to_string(group),
               stream.status().ToString());
  }
  c.stream = std::move(*stream);
  const Group& g = groups_[static_cast<std::size_t>(group)];
  c.next_physical = g.physical_begin;
  c.batch_logical_begin = g.logical_begin;
  c.batch_logical_rows = 0;
}

bool ParquetVectorReader::advance(Cursor& c) const {
  std::shared_ptr<arrow::RecordBatch> batch;
  const arrow::Status st = c.stream->ReadNext(&batch);
  if (!st.ok()) {
    fail_arrow(ErrorCode::kDataLoss,
               "row group " + std::to_string(c.group) + " near row " +
                   std::to_string(c.next_physical) + ": cannot decode",
               st.ToString());
  }
  const std::int64_t logical_next = c.batch_logical_begin + c.batch_logical_rows;
  if (batch == nullptr) return false;
  c.embedding = batch->GetColumnByName(options_.column);
  c.ids = id_field_ >= 0 ? batch->GetColumnByName(options_.id_column) : nullptr;
  if (c.embedding == nullptr || (id_field_ >= 0 && c.ids == nullptr)) {
    fail(ErrorCode::kInternal, "decoded batch lacks the projected column");
  }
  c.batch_physical_begin = c.next_physical;
  c.next_physical += batch->num_rows();
  c.batch_logical_begin = logical_next;
  validate_batch(c);
  return true;
}

std::int64_t ParquetVectorReader::row_length(const arrow::Array& a, std::int64_t i) const {
  switch (layout_) {
    case Layout::kList: return static_cast<const arrow::ListArray&>(a).value_length(i);
    case Layout::kLargeList: return static_cast<const arrow::LargeListArray&>(a).value_length(i);
    case Layout::kFixedList: return dim_;
    case Layout::kBinary:
      return static_cast<const arrow::BinaryArray&>(a).value_length(i) / elem_bytes_;
    case Layout::kLargeBinary:
      return static_cast<const arrow::LargeBinaryArray&>(a).value_length(i) / elem_bytes_;
    case Layout::kFixedBinary: return dim_;
  }
  return 0;
}

const unsigned char* ParquetVectorReader::row_data(const arrow::Array& a, std::int64_t i) const {
  auto values_base = [&](const arrow::Array& values, std::int64_t first) {
    const arrow::ArrayData& d = *values.data();
    return d.buffers[1]->data() + (d.offset + first) * elem_bytes_;
  };
  switch (layout_) {
    case Layout::kList: {
      const auto& l = static_cast<const arrow::ListArray&>(a);
      return values_base(*l.values(), l.value_offset(i));
    }
    case Layout::kLargeList: {
      const auto& l = static_cast<const arrow::LargeListArray&>(a);
      return values_base(*l.values(), l.value_offset(i));
    }
    case Layout::kFixedList: {
      const auto& l = static_cast<const arrow::FixedSizeListArray&>(a);
      return values_base(*l.values(), l.value_offset(i));
    }
    case Layout::kBinary: {
      const auto& b = static_cast<const arrow::BinaryArray&>(a);
      return b.value_data()->data() + b.value_offset(i);
    }
    case Layout::kLargeBinary: {
      const auto& b = static_cast<const arrow::LargeBinaryArray&>(a);
      return b.value_data()->data() + b.value_offset(i);
    }
    case Layout::kFixedBinary:
      return static_cast<const arrow::FixedSizeBinaryArray&>(a).GetValue(i);
  }
  return nullptr;
}

void ParquetVectorReader::validate_batch(Cursor& c) const {
  const arrow::Array& a = *c.embedding;
  const std::int64_t n = a.length();
  const bool has_nulls = a.null_count() > 0;
  // Null elements inside list rows are never valid vectors.
  std::shared_ptr<arrow::Array> values;
  if (layout_ == Layout::kList) values = static_cast<const arrow::ListArray&>(a).values();
  if (layout_ == Layout::kLargeList) values = static_cast<const arrow::LargeListArray&>(a).values();
  if (layout_ == Layout::kFixedList) {
    values = static_cast<const arrow::FixedSizeListArray&>(a).values();
  }
  const bool element_nulls = values != nullptr && values->null_count() > 0;
  const bool binary = layout_ == Layout::kBinary || layout_ == Layout::kLargeBinary;
  c.kept.clear();
  c.all_kept = !has_nulls;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t file_row = c.batch_physical_begin + i;
    if (has_nulls && a.IsNull(i)) {
      if (!options_.skip_null) {
        fail(ErrorCode::kDataLoss, "row " + std::to_string(file_row) +
                                       " is null (pass --skip-null / VectorReadOptions::skip_null "
                                       "to skip null rows)");
      }
      continue;
    }
    if (!c.all_kept) c.kept.push_back(static_cast<std::int32_t>(i));
    std::int64_t len = row_length(a, i);
    if (binary) {
      const std::int64_t bytes = layout_ == Layout::kBinary
                                     ? static_cast<const arrow::BinaryArray&>(a).value_length(i)
                                     : static_cast<const arrow::LargeBinaryArray&>(a).value_length(i);
      if (bytes % elem_bytes_ != 0 || bytes == 0) {
        fail(ErrorCode::kDataLoss,
             "row " + std::to_string(file_row) + " has " + std::to_string(bytes) +
                 " bytes, not a whole, non-zero number of " + dtype_name(dtype_) +
                 " elements" +
                 (dim_ > 0 ? " (expected " + std::to_string(dim_ * elem_bytes_) + ")" : ""));
      }
    }
    if (dim_ == 0) {
      if (len < 1) {
        fail(ErrorCode::kDataLoss, "row " + std::to_string(file_row) +
                                       " is an empty vector; expected at least one element");
      }
      dim_ = len;  // learning_dim_: open() is still running, no other thread sees us
      dim_row_ = file_row;
    } else if (len != dim_) {
      fail(ErrorCode::kDataLoss,
           "row " + std::to_string(file_row) + " has dim " + std::to_string(len) + ", expected " +
               std::to_string(dim_) +
               (dim_row_ >= 0 ? " (from row " + std::to_string(dim_row_) + ")"
                              : " (from the column type)"));
    }
    if (element_nulls) {
      const std::int64_t first = layout_ == Layout::kList
                                     ? static_cast<const arrow::ListArray&>(a).value_offset(i)
                                 : layout_ == Layout::kLargeList
                                     ? static_cast<const arrow::LargeListArray&>(a).value_offset(i)
                                     : static_cast<const arrow::FixedSizeListArray&>(a).value_offset(i);
      for (std::int64_t j = 0; j < len; ++j) {
        if (values->IsNull(first + j)) {
          fail(ErrorCode::kDataLoss, "row " + std::to_string(file_row) + " element " +
                                         std::to_string(j) + " is null");
        }
      }
    }
  }
  c.batch_logical_rows = c.all_kept ? n : static_cast<std::int64_t>(c.kept.size());
  if (c.ids != nullptr && c.ids->null_count() > 0) {
    for (std::int64_t i = 0; i < n; ++i) {
      if (c.ids->IsNull(i) && !(has_nulls && a.IsNull(i))) {
        throw_error(ErrorCode::kDataLoss, "file " + path_ + ", id column '" + options_.id_column +
                                              "': row " + std::to_string(c.batch_physical_begin + i) +
                                              " is null; expected an id on every row");
      }
    }
  }
}

Cursor& ParquetVectorReader::cursor_for(std::int64_t row) const {
  // The row group holding reader row `row`: the last non-empty group starting at or before it.
  auto it = std::upper_bound(groups_.begin(), groups_.end(), row,
                             [](std::int64_t r, const Group& g) { return r < g.logical_begin; });
  while (it != groups_.begin() && (it - 1)->logical_rows == 0) --it;
  if (it == groups_.begin()) fail(ErrorCode::kInternal, "row " + std::to_string(row) + " not found");
  const int group = static_cast<int>(it - groups_.begin()) - 1;
  ++clock_;
  // A cursor that holds the row, else the furthest one of that group not past it.
  Cursor* best = nullptr;
  for (Cursor& c : cursors_) {
    if (c.group != group) continue;
    if (c.holds(row)) {
      c.last_used = clock_;
      return c;
    }
    const std::int64_t done = c.batch_logical_begin + c.batch_logical_rows;
    const bool before = c.embedding == nullptr ? c.batch_logical_begin <= row : done <= row;
    if (before && (best == nullptr || best->batch_logical_begin < c.batch_logical_begin)) {
      best = &c;
    }
  }
  if (best == nullptr) {
    if (cursors_.size() < kMaxCursors) {
      cursors_.emplace_back();
      best = &cursors_.back();
    } else {
      best = &*std::min_element(cursors_.begin(), cursors_.end(),
                                [](const Cursor& a, const Cursor& b) {
                                  return a.last_used < b.last_used;
                                });
    }
    try {
      start_group(*best, group);
    } catch (...) {
      *best = Cursor();
      throw;
    }
  }
  Cursor& c = *best;
  c.last_used = clock_;
  try {
    while (!c.holds(row)) {
      if (!advance(c)) {
        fail(ErrorCode::kDataLoss,
             "row group " + std::to_string(group) + " ended before row " + std::to_string(row) +
                 " (fewer rows than its metadata says)");
      }
      if (learning_dim_ && dim_ > 0) break;  // open(): dim is known now
    }
  } catch (...) {
    c = Cursor();  // an unknown position: start this group afresh next time
    throw;
  }
  return c;
}

std::int64_t ParquetVectorReader::id_at(const arrow::Array& a, std::int64_t i,
                                        std::int64_t file_row) const {
  switch (a.type_id()) {
    case arrow::Type::INT8: return static_cast<const arrow::Int8Array&>(a).Value(i);
    case arrow::Type::INT16: return static_cast<const arrow::Int16Array&>(a).Value(i);
    case arrow::Type::INT32: return static_cast<const arrow::Int32Array&>(a).Value(i);
    case arrow::Type::INT64: return static_cast<const arrow::Int64Array&>(a).Value(i);
    case arrow::Type::UINT8: return static_cast<const arrow::UInt8Array&>(a).Value(i);
    case arrow::Type::UINT16: return static_cast<const arrow::UInt16Array&>(a).Value(i);
    case arrow::Type::UINT32: return static_cast<const arrow::UInt32Array&>(a).Value(i);
    case arrow::Type::UINT64: {
      const std::uint64_t v = static_cast<const arrow::UInt64Array&>(a).Value(i);
      if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        throw_error(ErrorCode::kOutOfRange,
                    "file " + path_ + ", id column '" + options_.id_column + "': row " +
                        std::to_string(file_row) + " has id " + std::to_string(v) +
                        ", more than 2^63 - 1");
      }
      return static_cast<std::int64_t>(v);
    }
    default: break;
  }
  throw_error(ErrorCode::kInternal, "file " + path_ + ": unexpected id type");
}

void ParquetVectorReader::copy_rows(std::int64_t row_begin, std::int64_t n,
                                    unsigned char* vectors, std::int64_t* ids) const {
  if (n == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  const std::int64_t row_bytes = dim_ * elem_bytes_;
  for (std::int64_t done = 0; done < n;) {
    const std::int64_t row = row_begin + done;
    Cursor& c = cursor_for(row);
    const std::int64_t k = std::min(n - done, c.batch_logical_begin + c.batch_logical_rows - row);
    const arrow::Array& a = *c.embedding;
    if (vectors != nullptr) {
      unsigned char* out = vectors + done * row_bytes;
      const std::int64_t first = c.batch_row(row);
      const std::int64_t last = c.batch_row(row + k - 1);
      // Rows back to back in the column's buffer (the usual case): one copy.
      if (last - first == k - 1 && row_data(a, last) == row_data(a, first) + (k - 1) * row_bytes) {
        std::memcpy(out, row_data(a, first), static_cast<std::size_t>(k * row_bytes));
      } else {
        for (std::int64_t r = 0; r < k; ++r) {
          std::memcpy(out + r * row_bytes, row_data(a, c.batch_row(row + r)),
                      static_cast<std::size_t>(row_bytes));
        }
      }
    }
    if (ids != nullptr) {
      for (std::int64_t r = 0; r < k; ++r) {
        const std::int64_t b = c.batch_row(row + r);
        ids[done + r] = id_at(*c.ids, b, c.batch_physical_begin + b);
      }
    }
    done += k;
  }
  // The whole file (or its tail) has been read: free the streams and decoded rows.
  if (row_begin + n == rows_) cursors_.clear();
}

}  // namespace

std::unique_ptr<VectorReader> open_parquet(const Storage& storage, const std::string& path,
                                           const VectorReadOptions& options) {
  auto reader = std::make_unique<ParquetVectorReader>(storage, path, options);
  try {
    reader->open();
  } catch (const parquet::ParquetException& e) {
    throw_error(ErrorCode::kDataLoss, "file " + path + ", column '" + options.column +
                                          "': corrupt Parquet data: " + e.what());
  }
  return reader;
}

}  // namespace megatax::io
