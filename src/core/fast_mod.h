// core/fast_mod.h -- x % d for 32-bit x and a divisor fixed ahead, by two multiplications
// instead of a division (Lemire, Kaser, Kurz, "Faster remainder by direct computation",
// 2019): M = ceil(2^64 / d); x % d = ((M * x mod 2^64) * d) >> 64, exact for every 32-bit x
// and d >= 1. For hot loops that test x % d per element (a division is 20-40 cycles).
#pragma once

#include <cstdint>

namespace megatax {

class FastMod {
 public:
  // d >= 1.
  explicit FastMod(std::uint32_t d) noexcept : d_(d), m_(~std::uint64_t{0} / d + 1) {}
  std::uint32_t operator()(std::uint32_t x) const noexcept {
    const std::uint64_t low = m_ * x;
    return static_cast<std::uint32_t>((static_cast<unsigned __int128>(low) * d_) >> 64);
  }
  std::uint32_t divisor() const noexcept { return d_; }

 private:
  std::uint32_t d_;
  std::uint64_t m_;
};

}  // namespace megatax
