// capi/c_api_guard.h -- how every C API function turns C++ outcomes into status codes.
//
// guarded(name, body) runs body, returns MEGATAX_OK, or catches every exception and returns
// its code with the message (prefixed by the function name) in the thread's last error.
// No exception leaves guarded(). Internal to src/capi.
#pragma once

#include <exception>
#include <new>
#include <string>
#include <utility>

#include "megatax/error.h"
#include "megatax/megatax_c.h"

namespace megatax::capi {

// The message of the last call on this thread ("" after a success).
std::string& last_error() noexcept;

inline int fail(int code, std::string message) noexcept {
  try {
    last_error() = std::move(message);
  } catch (...) {
    last_error().clear();  // no memory for the message: keep the code
  }
  return code;
}

// Runs `body` (which returns nothing and throws on failure) and translates the outcome.
template <typename Body>
int guarded(const char* function, Body&& body) noexcept {
  try {
    last_error().clear();
    body();
    return MEGATAX_OK;
  } catch (const megatax::Error& e) {
    return fail(static_cast<int>(e.code()), std::string(function) + ": " + e.what());
  } catch (const std::bad_alloc&) {
    return fail(MEGATAX_RESOURCE_EXHAUSTED, std::string(function) + ": out of memory");
  } catch (const std::exception& e) {
    return fail(MEGATAX_INTERNAL,
                std::string(function) + ": internal error (please report): " + e.what());
  } catch (...) {
    return fail(MEGATAX_INTERNAL,
                std::string(function) + ": internal error (please report): unknown exception");
  }
}

inline void require(const void* p, const char* argument) {
  if (p == nullptr)
    megatax::throw_error(megatax::ErrorCode::kInvalidArgument,
                         std::string("argument '") + argument + "' is null");
}

}  // namespace megatax::capi
