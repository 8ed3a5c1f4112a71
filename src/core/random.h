// core/random.h -- portable, seedable randomness: the same bits on every platform.
//
// std::uniform_*_distribution differ between standard libraries, so everything that must be
// reproducible (k-means++ picks, sampling priorities) goes through these functions.
// Thread-safety: pure functions; Rng is a value (one per thread).
#pragma once

#include <cstdint>

namespace megatax {

// SplitMix64 finaliser: a bijective 64-bit mix with good avalanche.
constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Hash of (a, b, c): the sampling priority of global id a for seed b at level c.
constexpr std::uint64_t hash64(std::uint64_t a, std::uint64_t b, std::uint64_t c) noexcept {
  return mix64(a ^ mix64(b ^ mix64(c)));
}

// A tiny sequential generator (SplitMix64 stream).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) noexcept : state_(mix64(seed)) {}
  std::uint64_t next() noexcept {
    state_ += 0x9E3779B97F4A7C15ull;
    return mix64(state_);
  }
  // Uniform double in [0, 1) with 53 random bits.
  double uniform() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n) (n >= 1), by rejection: no modulo bias.
  std::uint64_t below(std::uint64_t n) noexcept {
    const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % n);
    for (;;) {
      const std::uint64_t x = next();
      if (x < limit) return x % n;
    }
  }

 private:
  std::uint64_t state_;
};

}  // namespace megatax
