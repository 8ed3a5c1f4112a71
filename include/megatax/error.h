// megatax/error.h -- the one error style of Mega-Taxonomy.
//
// Policy (one sentence): an operation that cannot complete throws megatax::Error,
// whose code says what the caller should do and whose message names the file, row
// or field and what was expected; asserts are only for programmer errors, and user
// input never reaches one. The C API and the Python module translate Error into a
// status code / exception with the same message; nothing crosses them untranslated.
//
// Thread-safety: Error is an immutable value; safe to copy between threads.
#pragma once

#include <stdexcept>
#include <string>

namespace megatax {

// What went wrong, phrased as what to do about it (after absl::StatusCode).
// The numeric values are part of the C API (megatax_c.h) and never change.
enum class ErrorCode : int {
  kOk = 0,
  kInvalidArgument = 1,     // fix the call: bad shape, dtype, k, option, path syntax
  kNotFound = 2,            // the named file, key or object does not exist
  kAlreadyExists = 3,       // refused to overwrite
  kOutOfRange = 4,          // an index or size past the end (k > ntotal, row >= rows)
  kFailedPrecondition = 5,  // fix the state first (index empty, taxonomy not fitted)
  kDataLoss = 6,            // corrupt or truncated input (bad header, short file, NaN row)
  kIoError = 7,             // the OS or storage refused a read/write (errno text in message)
  kUnavailable = 8,         // transient: retrying the same call may succeed
  kUnimplemented = 9,       // built without the feature (CUDA, Parquet, ...) or unsupported
  kResourceExhausted = 10,  // out of memory or a configured budget
  kCancelled = 11,          // interrupted by the caller (signal, Ctrl-C)
  kInternal = 12,           // a bug of ours: please report
};

// Stable lower-case name of a code ("invalid_argument"); "unknown" for out-of-range values.
const char* error_code_name(ErrorCode code) noexcept;

// The exception every Mega-Taxonomy operation throws on failure.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

// Throws Error(code, message). [[noreturn]] so callers need no dummy return.
[[noreturn]] void throw_error(ErrorCode code, const std::string& message);

}  // namespace megatax
