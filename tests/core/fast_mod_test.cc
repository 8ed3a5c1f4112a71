// FastMod against the % operator: every divisor 1..300 on fresh random numerators and the
// edges (0, d - 1, d, multiples of d, 2^32 - 1), plus random large divisors.
#include "core/fast_mod.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>

namespace megatax {
namespace {

TEST(FastMod, EqualsTheRemainderForEveryDivisorAndEdge) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::uint32_t> any;
  auto check = [&](std::uint32_t d) {
    const FastMod mod(d);
    ASSERT_EQ(mod.divisor(), d);
    const std::uint32_t edges[] = {0u, d - 1, d, d + 1, 2 * d, 0xFFFFFFFFu, 0xFFFFFFFFu - d, 0xFFFFFFFFu / d * d};
    for (const std::uint32_t x : edges) ASSERT_EQ(mod(x), x % d) << "x = " << x << ", d = " << d;
    for (int i = 0; i < 2000; ++i) {
      const std::uint32_t x = any(rng);
      ASSERT_EQ(mod(x), x % d) << "x = " << x << ", d = " << d;
    }
  };
  for (std::uint32_t d = 1; d <= 300; ++d) check(d);
  for (int i = 0; i < 200; ++i) check(std::max<std::uint32_t>(1, any(rng)));
  check(0xFFFFFFFFu);
}

}  // namespace
}  // namespace megatax
