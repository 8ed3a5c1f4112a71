// dist/message.h -- the byte messages that driver and workers exchange.
//
// Messages are plain byte strings (std::string) built by MessageWriter and read back by
// MessageReader, little-endian, without padding: the same bytes go through MPI, Ray's object
// store or a file. A reader that runs past the end throws Error(kDataLoss) naming `what`.
// Thread-safety: values; one thread at a time.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "megatax/error.h"

namespace megatax::dist {

class MessageWriter {
 public:
  void put_i64(std::int64_t v) { put_raw(&v, sizeof v); }
  void put_f64(double v) { put_raw(&v, sizeof v); }
  template <typename T>
  void put_array(std::span<const T> values) {  // count, then the elements
    put_i64(static_cast<std::int64_t>(values.size()));
    put_raw(values.data(), values.size() * sizeof(T));
  }
  // Room for `bytes` more without reallocating (large messages: no growth copies).
  void reserve(std::size_t bytes) { bytes_.reserve(bytes_.size() + bytes); }
  std::string take() { return std::move(bytes_); }

 private:
  void put_raw(const void* p, std::size_t n) {
    bytes_.append(static_cast<const char*>(p), n);
  }
  std::string bytes_;
};

class MessageReader {
 public:
  MessageReader(const std::string& bytes, std::string what) : bytes_(bytes), what_(std::move(what)) {}
  std::int64_t get_i64() {
    std::int64_t v;
    get_raw(&v, sizeof v);
    return v;
  }
  double get_f64() {
    double v;
    get_raw(&v, sizeof v);
    return v;
  }
  template <typename T>
  std::vector<T> get_array() {
    const std::int64_t n = get_i64();
    if (n < 0 || static_cast<std::size_t>(n) > (bytes_.size() - pos_) / sizeof(T))
      throw_error(ErrorCode::kDataLoss, what_ + ": bad array length " + std::to_string(n));
    std::vector<T> out(static_cast<std::size_t>(n));
    get_raw(out.data(), out.size() * sizeof(T));
    return out;
  }
  bool done() const noexcept { return pos_ == bytes_.size(); }

 private:
  void get_raw(void* p, std::size_t n) {
    if (bytes_.size() - pos_ < n)
      throw_error(ErrorCode::kDataLoss, what_ + ": message ends early");
    if (n > 0) std::memcpy(p, bytes_.data() + pos_, n);
    pos_ += n;
  }
  const std::string& bytes_;
  std::string what_;
  std::size_t pos_ = 0;
};

}  // namespace megatax::dist
