// io/fault_injection_storage.h -- a forwarding Storage that fails chosen calls (tests).
//
// Wraps a borrowed Storage and forwards every call to it, except that a test can arm a
// fault so that the Nth read_range (or the Nth write_atomic_gather) from now throws
// Error(code, "injected fault: ..."). Counting starts at 1 with the first call after
// arming; a fault fires once and disarms itself. Other calls are never failed.
//
// Write faults come in two kinds:
//   kBeforeWrite  the call throws without reaching the wrapped storage (the write is lost,
//                 the old object is untouched) -- what a caller sees when the storage
//                 refuses a write;
//   kAfterWrite   the write reaches the wrapped storage and completes, then the call throws
//                 -- an ambiguous outcome (e.g. a failed directory sync, a lost reply from
//                 an object store); callers must cope with "maybe written".
// Read faults throw before forwarding; kShortRead instead reads only the first half of the
// range and throws Error(kDataLoss) "short read", as a truncated file would.
//
// Thread-safety: safe for concurrent access if the wrapped storage is; the counters are
// atomic, so with concurrent callers "the Nth call" is the Nth to reach the counter.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "megatax/error.h"
#include "megatax/storage.h"

namespace megatax::io {

enum class WriteFault : std::uint8_t { kBeforeWrite, kAfterWrite };
enum class ReadFault : std::uint8_t { kError, kShortRead };

class FaultInjectionStorage final : public Storage {
 public:
  // `base` is borrowed and must outlive this object.
  explicit FaultInjectionStorage(Storage& base) : base_(base) {}

  // Arms a fault on the nth (>= 1) read_range call from now. code is used for kError.
  void fail_read(std::int64_t nth, ReadFault kind = ReadFault::kError,
                 ErrorCode code = ErrorCode::kIoError);
  // Arms a fault on the nth (>= 1) write_atomic_gather call from now.
  void fail_write(std::int64_t nth, WriteFault kind = WriteFault::kBeforeWrite,
                  ErrorCode code = ErrorCode::kIoError);
  // Disarms both faults.
  void clear_faults();

  // Calls seen so far (all, failed ones included).
  std::int64_t reads() const { return reads_.load(); }
  std::int64_t writes() const { return writes_.load(); }

  std::string name() const override { return "fault-injection(" + base_.name() + ")"; }
  void read_range(const std::string& path, std::uint64_t offset, std::uint64_t length,
                  void* dst) const override;
  std::uint64_t size(const std::string& path) const override { return base_.size(path); }
  bool exists(const std::string& path) const override { return base_.exists(path); }
  void write_atomic_gather(const std::string& path, std::span<const ByteSpan> pieces) override;
  std::vector<std::string> list(const std::string& dir) const override { return base_.list(dir); }
  std::vector<std::string> glob(const std::string& pattern) const override {
    return base_.glob(pattern);
  }
  bool remove(const std::string& path) override { return base_.remove(path); }
  void make_dirs(const std::string& path) override { base_.make_dirs(path); }

 private:
  Storage& base_;
  mutable std::atomic<std::int64_t> reads_{0};
  std::atomic<std::int64_t> writes_{0};
  // The call number (of reads_/writes_) that fails; 0 = none.
  mutable std::atomic<std::int64_t> read_fault_at_{0};
  std::atomic<std::int64_t> write_fault_at_{0};
  std::atomic<ReadFault> read_kind_{ReadFault::kError};
  std::atomic<WriteFault> write_kind_{WriteFault::kBeforeWrite};
  std::atomic<ErrorCode> read_code_{ErrorCode::kIoError};
  std::atomic<ErrorCode> write_code_{ErrorCode::kIoError};
};

}  // namespace megatax::io
