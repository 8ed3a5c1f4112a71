// core/progress.h -- a progress bar on stderr for long passes (rate and ETA).
//
// Draws only when enabled and stderr is a terminal; otherwise every call is a no-op, so
// logs and CI output stay clean. Redraws at most ~10 times a second.
// Thread-safety: add() may be called from several threads; the rest from one.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace megatax {

class Progress {
 public:
  // `total` units (e.g. points) labelled `label` ("level 2/3 assign"), `unit` ("pts").
  Progress(std::string label, std::int64_t total, std::string unit, bool enabled);
  ~Progress();  // finishes the line
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void add(std::int64_t done);
  void finish();

  static bool stderr_is_terminal() noexcept;

 private:
  void draw(bool final);

  std::string label_;
  std::string unit_;
  std::int64_t total_;
  bool enabled_;
  bool finished_ = false;
  std::atomic<std::int64_t> done_{0};
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  std::mutex mu_;
};

}  // namespace megatax
