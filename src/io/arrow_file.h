// io/arrow_file.h -- our Storage seen as an arrow::io::RandomAccessFile, so that Arrow's
// Parquet reader reads through any Storage (POSIX, memory, object stores). Internal to io/.
//
// Every ReadAt is one Storage::read_range. A Storage error becomes an arrow IOError whose
// message is the Error's; the Error itself (with its code) is kept so that the caller can
// rethrow it unchanged (take_error) instead of a generic Parquet failure.
//
// Thread-safety: ReadAt and GetSize may run concurrently (as Arrow requires); the implicit
// position of Read/Seek/Tell is guarded by a mutex.
#pragma once

#include <arrow/io/interfaces.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "megatax/error.h"
#include "megatax/storage.h"

namespace megatax::io {

class StorageInputFile final : public arrow::io::RandomAccessFile {
 public:
  // `storage` is borrowed; `size` is the object's size (from storage.size()).
  StorageInputFile(const Storage& storage, std::string path, std::int64_t size);

  arrow::Status Close() override;
  bool closed() const override;
  arrow::Result<std::int64_t> Tell() const override;
  arrow::Status Seek(std::int64_t position) override;
  arrow::Result<std::int64_t> Read(std::int64_t nbytes, void* out) override;
  arrow::Result<std::shared_ptr<arrow::Buffer>> Read(std::int64_t nbytes) override;
  arrow::Result<std::int64_t> ReadAt(std::int64_t position, std::int64_t nbytes,
                                     void* out) override;
  arrow::Result<std::shared_ptr<arrow::Buffer>> ReadAt(std::int64_t position,
                                                       std::int64_t nbytes) override;
  arrow::Result<std::int64_t> GetSize() override;

  // The first Storage error seen since the last call, if any (and forgets it).
  std::optional<Error> take_error();

  std::int64_t bytes_read() const;

 private:
  const Storage& storage_;
  const std::string path_;
  const std::int64_t size_;
  mutable std::mutex mu_;
  std::int64_t position_ = 0;        // guarded by mu_
  bool closed_ = false;              // guarded by mu_
  std::optional<Error> error_;       // guarded by mu_
  std::int64_t bytes_read_ = 0;      // guarded by mu_
};

}  // namespace megatax::io
