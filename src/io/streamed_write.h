// io/streamed_write.h -- one object written while it is being produced: the producer
// appends pieces as they become ready, and a thread of the writer's own hands them to
// Storage::write_atomic_stream (POSIX: written and on their way to the disk at once), so
// that the write's disk time overlaps the production instead of following it. The object
// appears atomically at finish(), as with write_atomic_gather; a writer dropped unfinished
// leaves the old object (or none) and no temporary.
//
// Thread-safety: append() and finish() one call at a time (the producer; any thread, e.g. the
// training lanes taking turns under their own lock).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>

#include "megatax/storage.h"

namespace megatax::io {

class StreamedWrite {
 public:
  // Starts writing `path` of `storage` (which must outlive the writer).
  StreamedWrite(Storage& storage, std::string path);
  // Unfinished: abandons the write and waits for its thread.
  ~StreamedWrite();
  StreamedWrite(const StreamedWrite&) = delete;
  StreamedWrite& operator=(const StreamedWrite&) = delete;

  // Queues `bytes` bytes at `data`, which must stay valid until finish() or the destructor
  // returns. Never blocks; a failed write surfaces at finish().
  void append(const void* data, std::uint64_t bytes);
  // No more pieces: returns once the object is in place and durable; rethrows the write's
  // error (then nothing was replaced). Call once.
  void finish();
  // Bytes appended so far.
  std::uint64_t appended() const noexcept { return appended_; }

 private:
  enum class End { kOpen, kFinished, kAbandoned };
  bool next_piece(ByteSpan* piece);  // the write thread's source

  std::string path_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<ByteSpan> queue_;
  End end_ = End::kOpen;
  std::uint64_t appended_ = 0;
  std::exception_ptr error_;
  bool joined_ = false;
  std::thread thread_;
};

}  // namespace megatax::io
