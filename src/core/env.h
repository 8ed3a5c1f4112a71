// Settings read from environment variables, strictly: a value the variable does not take is
// an Error(kInvalidArgument) naming the variable, the value and what it takes, so that a typo
// (MEGATAX_CUDA_RESIDENT=hots, a budget of "16G") fails the run at its start instead of
// quietly changing how it runs. Unset and empty variables are "not given".
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>

namespace megatax {

// The value of `var` when it is one of `allowed`; nullopt when unset or empty.
std::optional<std::string> env_choice(const char* var, std::initializer_list<const char*> allowed);

// A switch: "1" true, "0" false, unset or empty `otherwise`.
bool env_switch(const char* var, bool otherwise);

// A size in MiB (a whole number >= 0, no unit), returned in bytes; nullopt when unset or empty.
std::optional<std::int64_t> env_mib(const char* var);

// A whole number in [lo, hi]; nullopt when unset or empty.
std::optional<std::int64_t> env_int(const char* var, std::int64_t lo, std::int64_t hi);

}  // namespace megatax
