// StorageInputFile: a Storage object as an arrow::io::RandomAccessFile.
#include "io/arrow_file.h"

#include <arrow/buffer.h>
#include <arrow/result.h>
#include <arrow/status.h>

#include <algorithm>
#include <utility>

namespace megatax::io {

StorageInputFile::StorageInputFile(const Storage& storage, std::string path, std::int64_t size)
    : storage_(storage), path_(std::move(path)), size_(size) {
  set_mode(arrow::io::FileMode::READ);
}

arrow::Status StorageInputFile::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  return arrow::Status::OK();
}

bool StorageInputFile::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

arrow::Result<std::int64_t> StorageInputFile::Tell() const {
  std::lock_guard<std::mutex> lock(mu_);
  return position_;
}

arrow::Status StorageInputFile::Seek(std::int64_t position) {
  if (position < 0 || position > size_) {
    return arrow::Status::IOError("file ", path_, ": seek to ", position, " outside [0, ", size_,
                                  "]");
  }
  std::lock_guard<std::mutex> lock(mu_);
  position_ = position;
  return arrow::Status::OK();
}

arrow::Result<std::int64_t> StorageInputFile::ReadAt(std::int64_t position, std::int64_t nbytes,
                                                     void* out) {
  if (position < 0 || nbytes < 0) {
    return arrow::Status::Invalid("file ", path_, ": read of ", nbytes, " bytes at ", position);
  }
  const std::int64_t n = std::max<std::int64_t>(0, std::min(nbytes, size_ - position));
  if (n == 0) return 0;
  try {
    storage_.read_range(path_, static_cast<std::uint64_t>(position), static_cast<std::uint64_t>(n),
                        out);
  } catch (const Error& e) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_) error_ = e;
    return arrow::Status::IOError(e.what());
  }
  std::lock_guard<std::mutex> lock(mu_);
  bytes_read_ += n;
  return n;
}

arrow::Result<std::shared_ptr<arrow::Buffer>> StorageInputFile::ReadAt(std::int64_t position,
                                                                       std::int64_t nbytes) {
  if (position < 0 || nbytes < 0) {
    return arrow::Status::Invalid("file ", path_, ": read of ", nbytes, " bytes at ", position);
  }
  const std::int64_t n = std::max<std::int64_t>(0, std::min(nbytes, size_ - position));
  ARROW_ASSIGN_OR_RAISE(std::unique_ptr<arrow::ResizableBuffer> buffer,
                        arrow::AllocateResizableBuffer(n));
  ARROW_ASSIGN_OR_RAISE(std::int64_t got, ReadAt(position, n, buffer->mutable_data()));
  ARROW_RETURN_NOT_OK(buffer->Resize(got, /*shrink_to_fit=*/false));
  return std::shared_ptr<arrow::Buffer>(std::move(buffer));
}

arrow::Result<std::int64_t> StorageInputFile::Read(std::int64_t nbytes, void* out) {
  std::int64_t position = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    position = position_;
  }
  ARROW_ASSIGN_OR_RAISE(std::int64_t got, ReadAt(position, nbytes, out));
  std::lock_guard<std::mutex> lock(mu_);
  position_ = position + got;
  return got;
}

arrow::Result<std::shared_ptr<arrow::Buffer>> StorageInputFile::Read(std::int64_t nbytes) {
  std::int64_t position = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    position = position_;
  }
  ARROW_ASSIGN_OR_RAISE(std::shared_ptr<arrow::Buffer> buffer, ReadAt(position, nbytes));
  std::lock_guard<std::mutex> lock(mu_);
  position_ = position + buffer->size();
  return buffer;
}

arrow::Result<std::int64_t> StorageInputFile::GetSize() { return size_; }

std::optional<Error> StorageInputFile::take_error() {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<Error> out = std::move(error_);
  error_.reset();
  return out;
}

std::int64_t StorageInputFile::bytes_read() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_read_;
}

}  // namespace megatax::io
