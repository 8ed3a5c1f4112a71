#include "io/fault_injection_storage.h"

namespace megatax::io {

void FaultInjectionStorage::fail_read(std::int64_t nth, ReadFault kind, ErrorCode code) {
  if (nth < 1) throw_error(ErrorCode::kInvalidArgument, "fail_read: nth must be >= 1");
  read_kind_ = kind;
  read_code_ = code;
  read_fault_at_ = reads_.load() + nth;
}

void FaultInjectionStorage::fail_write(std::int64_t nth, WriteFault kind, ErrorCode code) {
  if (nth < 1) throw_error(ErrorCode::kInvalidArgument, "fail_write: nth must be >= 1");
  write_kind_ = kind;
  write_code_ = code;
  write_fault_at_ = writes_.load() + nth;
}

void FaultInjectionStorage::clear_faults() {
  read_fault_at_ = 0;
  write_fault_at_ = 0;
}

void FaultInjectionStorage::read_range(const std::string& path, std::uint64_t offset,
                                       std::uint64_t length, void* dst) const {
  const std::int64_t call = ++reads_;
  std::int64_t armed = call;
  if (!read_fault_at_.compare_exchange_strong(armed, 0)) {
    base_.read_range(path, offset, length, dst);
    return;
  }
  const std::string where =
      "read #" + std::to_string(call) + " of " + path + " at offset " + std::to_string(offset);
  if (read_kind_.load() == ReadFault::kShortRead) {
    const std::uint64_t half = length / 2;
    base_.read_range(path, offset, half, dst);
    throw_error(ErrorCode::kDataLoss, "short read (injected fault): file " + path + ": wanted " +
                                          std::to_string(length) + " bytes at offset " +
                                          std::to_string(offset) + ", got " + std::to_string(half));
  }
  throw_error(read_code_.load(), "injected fault: " + where);
}

void FaultInjectionStorage::write_atomic_gather(const std::string& path,
                                                std::span<const ByteSpan> pieces) {
  const std::int64_t call = ++writes_;
  std::int64_t armed = call;
  if (!write_fault_at_.compare_exchange_strong(armed, 0)) {
    base_.write_atomic_gather(path, pieces);
    return;
  }
  const bool after = write_kind_.load() == WriteFault::kAfterWrite;
  if (after) base_.write_atomic_gather(path, pieces);
  throw_error(write_code_.load(), std::string("injected fault: write #") + std::to_string(call) +
                                      " of " + path +
                                      (after ? " (after the write completed)" : ""));
}

}  // namespace megatax::io
