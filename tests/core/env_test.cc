// Strict environment settings (core/env.h): accepted values come back, unset and empty are
// "not given", and anything else is an Error(kInvalidArgument) naming the variable, the value
// and what it takes.
#include "core/env.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>

#include "megatax/error.h"

namespace megatax {
namespace {

constexpr const char* kVar = "MEGATAX_ENV_TEST_VARIABLE";

class EnvTest : public ::testing::Test {
 protected:
  void TearDown() override { unsetenv(kVar); }
  static void set(const std::string& value) { setenv(kVar, value.c_str(), 1); }
  // The message of the error `f` throws (kInvalidArgument expected), "" if none.
  template <class F>
  static std::string error_of(F&& f) {
    try {
      f();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      return e.what();
    }
    return "";
  }
};

TEST_F(EnvTest, ChoiceReturnsAnAllowedValueAndNothingWhenUnsetOrEmpty) {
  unsetenv(kVar);
  EXPECT_FALSE(env_choice(kVar, {"0", "1", "device", "host"}).has_value());
  set("");
  EXPECT_FALSE(env_choice(kVar, {"0", "1", "device", "host"}).has_value());
  for (const char* v : {"0", "1", "device", "host"}) {
    set(v);
    EXPECT_EQ(env_choice(kVar, {"0", "1", "device", "host"}).value_or("?"), v);
  }
}

TEST_F(EnvTest, ChoiceRejectsATypoNamingTheVariableTheValueAndTheChoices) {
  for (const char* v : {"hots", "Host", "host ", "2", "-1"}) {
    set(v);
    const std::string what = error_of([] { env_choice(kVar, {"0", "1", "device", "host"}); });
    EXPECT_NE(what.find(std::string(kVar) + "='" + v + "'"), std::string::npos) << what;
    EXPECT_NE(what.find("0, 1, device, host"), std::string::npos) << what;
  }
}

TEST_F(EnvTest, SwitchTakesOnlyZeroAndOne) {
  unsetenv(kVar);
  EXPECT_TRUE(env_switch(kVar, true));
  EXPECT_FALSE(env_switch(kVar, false));
  set("0");
  EXPECT_FALSE(env_switch(kVar, true));
  set("1");
  EXPECT_TRUE(env_switch(kVar, false));
  for (const char* v : {"yes", "off", "true", "00"}) {
    set(v);
    EXPECT_NE(error_of([] { env_switch(kVar, true); }).find(std::string("'") + v + "'"), std::string::npos) << v;
  }
}

TEST_F(EnvTest, MibIsAWholeNumberReturnedInBytes) {
  unsetenv(kVar);
  EXPECT_FALSE(env_mib(kVar).has_value());
  set("");
  EXPECT_FALSE(env_mib(kVar).has_value());
  std::mt19937_64 rng(std::random_device{}());
  for (int i = 0; i < 20; ++i) {
    const std::int64_t mib = static_cast<std::int64_t>(rng() % (std::uint64_t{1} << 40));
    set(std::to_string(mib));
    EXPECT_EQ(env_mib(kVar).value_or(-1), mib * 1024 * 1024) << mib;
  }
  set("0");
  EXPECT_EQ(env_mib(kVar).value_or(-1), 0);
}

TEST_F(EnvTest, MibRejectsUnitsSignsAndOverflow) {
  for (const char* v : {"16G", "1.5", "-1", "abc", " 7", "99999999999999999999", "17592186044417"}) {
    set(v);
    const std::string what = error_of([] { env_mib(kVar); });
    EXPECT_NE(what.find(std::string(kVar) + "='" + v + "'"), std::string::npos) << v << ": " << what;
    EXPECT_NE(what.find("MiB"), std::string::npos) << what;
  }
}

TEST_F(EnvTest, IntIsAWholeNumberInItsRange) {
  unsetenv(kVar);
  EXPECT_FALSE(env_int(kVar, 1, 8).has_value());
  set("");
  EXPECT_FALSE(env_int(kVar, 1, 8).has_value());
  std::mt19937_64 rng(std::random_device{}());
  for (int i = 0; i < 20; ++i) {
    const std::int64_t lo = static_cast<std::int64_t>(rng() % 2001) - 1000;
    const std::int64_t hi = lo + static_cast<std::int64_t>(rng() % 1000);
    const std::int64_t n = lo + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(hi - lo + 1));
    set(std::to_string(n));
    EXPECT_EQ(env_int(kVar, lo, hi).value_or(lo - 1), n) << n << " in [" << lo << ", " << hi << "]";
  }
}

TEST_F(EnvTest, IntRejectsOutOfRangeAndNonNumbers) {
  for (const char* v : {"0", "9", "-1", "2x", "1.5", " 3", "+3", "abc", "99999999999999999999"}) {
    set(v);
    const std::string what = error_of([] { env_int(kVar, 1, 8); });
    EXPECT_NE(what.find(std::string(kVar) + "='" + v + "'"), std::string::npos) << v << ": " << what;
    EXPECT_NE(what.find("from 1 to 8"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace megatax
