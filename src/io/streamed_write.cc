#include "io/streamed_write.h"

#include <utility>

#include "megatax/error.h"

namespace megatax::io {

StreamedWrite::StreamedWrite(Storage& storage, std::string path) : path_(std::move(path)) {
  thread_ = std::thread([this, &storage] {
    try {
      storage.write_atomic_stream(path_, [this](ByteSpan* piece) { return next_piece(piece); });
    } catch (...) {
      error_ = std::current_exception();
    }
  });
}

StreamedWrite::~StreamedWrite() {
  if (joined_) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    end_ = End::kAbandoned;
  }
  ready_.notify_all();
  thread_.join();
}

bool StreamedWrite::next_piece(ByteSpan* piece) {
  std::unique_lock<std::mutex> lock(mutex_);
  ready_.wait(lock, [this] { return !queue_.empty() || end_ != End::kOpen; });
  // Abandoned: the source throws, so the storage drops the temporary and keeps the old object.
  if (end_ == End::kAbandoned)
    throw_error(ErrorCode::kCancelled, "write of " + path_ + " abandoned before its end");
  if (queue_.empty()) return false;  // finished, every piece taken
  *piece = queue_.front();
  queue_.pop_front();
  return true;
}

void StreamedWrite::append(const void* data, std::uint64_t bytes) {
  if (bytes == 0) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (end_ != End::kOpen) throw_error(ErrorCode::kInternal, "StreamedWrite: append to " + path_ + " after finish()");
    queue_.push_back(ByteSpan{data, bytes});
    appended_ += bytes;
  }
  ready_.notify_one();
}

void StreamedWrite::finish() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (end_ != End::kOpen) throw_error(ErrorCode::kInternal, "StreamedWrite: finish() of " + path_ + " twice");
    end_ = End::kFinished;
  }
  ready_.notify_all();
  thread_.join();
  joined_ = true;
  if (error_) std::rethrow_exception(error_);
}

}  // namespace megatax::io
