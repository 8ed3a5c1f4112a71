#include "core/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace megatax {
namespace {

std::string human(double v) {
  char buf[32];
  if (v >= 1e9) std::snprintf(buf, sizeof buf, "%.2fG", v / 1e9);
  else if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else if (v >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

}  // namespace

bool Progress::stderr_is_terminal() noexcept { return ::isatty(STDERR_FILENO) == 1; }

Progress::Progress(std::string label, std::int64_t total, std::string unit, bool enabled)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      enabled_(enabled && stderr_is_terminal()),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

Progress::~Progress() { finish(); }

void Progress::add(std::int64_t done) {
  done_.fetch_add(done, std::memory_order_relaxed);
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
  if (!lock.owns_lock() || now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw(false);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  draw(true);
  std::fputc('\n', stderr);
}

void Progress::draw(bool final) {
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const std::int64_t done = done_.load(std::memory_order_relaxed);
  const double frac = total_ > 0 ? static_cast<double>(done) / static_cast<double>(total_) : 1.0;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(std::lround(frac * kWidth));
  std::string bar(static_cast<std::size_t>(filled > kWidth ? kWidth : filled), '=');
  bar.resize(kWidth, ' ');
  const double rate = secs > 0 ? static_cast<double>(done) / secs : 0.0;
  const double eta = rate > 0 && !final ? static_cast<double>(total_ - done) / rate : 0.0;
  std::fprintf(stderr, "\r%s [%s] %3.0f%% %s/%s %s %s/s ETA %.0fs   ", label_.c_str(),
               bar.c_str(), frac * 100, human(static_cast<double>(done)).c_str(),
               human(static_cast<double>(total_)).c_str(), unit_.c_str(), human(rate).c_str(),
               eta);
  std::fflush(stderr);
}

}  // namespace megatax
