#include "core/env.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "megatax/error.h"

namespace megatax {
namespace {

const char* value_of(const char* var) {
  const char* v = std::getenv(var);
  return v == nullptr || *v == '\0' ? nullptr : v;
}

// Decimal digits with an optional leading '-' (no spaces, no '+', no unit), in an int64; else
// nullopt.
std::optional<std::int64_t> whole_number(const char* v) {
  const char* digits = *v == '-' ? v + 1 : v;
  if (!std::isdigit(static_cast<unsigned char>(*digits))) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(v, &end, 10);
  if (*end != '\0' || errno == ERANGE) return std::nullopt;
  return static_cast<std::int64_t>(n);
}

}  // namespace

std::optional<std::string> env_choice(const char* var, std::initializer_list<const char*> allowed) {
  const char* v = value_of(var);
  if (v == nullptr) return std::nullopt;
  std::string takes;
  for (const char* a : allowed) {
    if (std::strcmp(v, a) == 0) return std::string(v);
    takes += (takes.empty() ? "" : ", ") + std::string(a);
  }
  throw_error(ErrorCode::kInvalidArgument,
              std::string(var) + "='" + v + "': expected one of " + takes + " (or unset)");
}

bool env_switch(const char* var, bool otherwise) {
  const auto v = env_choice(var, {"0", "1"});
  return v.has_value() ? *v == "1" : otherwise;
}

std::optional<std::int64_t> env_mib(const char* var) {
  const char* v = value_of(var);
  if (v == nullptr) return std::nullopt;
  const auto mib = whole_number(v);
  // At most 2^43 MiB, so that the bytes fit an int64.
  if (!mib.has_value() || *mib < 0 || *mib > (std::int64_t{1} << 43))
    throw_error(ErrorCode::kInvalidArgument,
                std::string(var) + "='" + v + "': expected a whole number of MiB (0 or more, no unit)");
  return *mib << 20;
}

std::optional<std::int64_t> env_int(const char* var, std::int64_t lo, std::int64_t hi) {
  const char* v = value_of(var);
  if (v == nullptr) return std::nullopt;
  const auto n = whole_number(v);
  if (!n.has_value() || *n < lo || *n > hi)
    throw_error(ErrorCode::kInvalidArgument, std::string(var) + "='" + v + "': expected a whole number from " +
                                                 std::to_string(lo) + " to " + std::to_string(hi) + " (or unset)");
  return *n;
}

}  // namespace megatax
