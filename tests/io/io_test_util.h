// tests/io/io_test_util.h -- helpers shared by the io tests: a scratch directory, fresh
// random seeds, raw little-endian file writing, and running python3 + numpy as an
// independent reference. Header-only; test code only.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "megatax/error.h"

namespace megatax::testing_io {

// A fresh directory under the test temp dir, removed (recursively) on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "megatax-io-XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp failed: " << std::strerror(errno);
    }
    path_ = buf.data();
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A seed from std::random_device; tests print it through SCOPED_TRACE so that a failure
// can be replayed (set MEGATAX_TEST_SEED to force one).
inline std::uint64_t fresh_seed() {
  if (const char* forced = std::getenv("MEGATAX_TEST_SEED"))
    return std::strtoull(forced, nullptr, 10);
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}
#define MEGATAX_SEEDED_RNG(rng)                                                       \
  const std::uint64_t rng##_seed = ::megatax::testing_io::fresh_seed();               \
  SCOPED_TRACE("random seed " + std::to_string(rng##_seed) +                          \
               " (rerun with MEGATAX_TEST_SEED=" + std::to_string(rng##_seed) + ")"); \
  std::mt19937_64 rng(rng##_seed)

inline void write_file(const std::string& path, const void* data, std::size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}
inline void write_file(const std::string& path, const std::string& bytes) {
  write_file(path, bytes.data(), bytes.size());
}
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Little-endian byte builder for hand-made files.
class Bytes {
 public:
  Bytes& u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) s_.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
    return *this;
  }
  Bytes& i32(std::int32_t v) { return u32(static_cast<std::uint32_t>(v)); }
  Bytes& u16(std::uint16_t v) {
    s_.push_back(static_cast<char>(v & 0xFF));
    s_.push_back(static_cast<char>(v >> 8));
    return *this;
  }
  Bytes& f32(float v) {
    std::uint32_t u;
    std::memcpy(&u, &v, 4);
    return u32(u);
  }
  Bytes& u8(std::uint8_t v) {
    s_.push_back(static_cast<char>(v));
    return *this;
  }
  Bytes& raw(const std::string& s) {
    s_ += s;
    return *this;
  }
  const std::string& str() const { return s_; }

 private:
  std::string s_;
};

// Runs `script` with python3 (numpy imported as np beforehand) in directory `dir`.
// Returns true on exit status 0; otherwise records a test failure with the script's
// output. A missing python3 or numpy is a FAILURE (never a skip): these tests use numpy
// as the independent reference.
inline bool run_python(const std::string& dir, const std::string& script) {
  const std::string script_path = dir + "/_script.py";
  const std::string log_path = dir + "/_script.log";
  {
    std::ofstream out(script_path);
    out << "import sys\n"
           "try:\n"
           "    import numpy as np\n"
           "except ImportError as e:\n"
           "    print('numpy is not importable:', e); sys.exit(97)\n"
        << script << "\n";
  }
  const std::string cmd =
      "cd '" + dir + "' && python3 '" + script_path + "' > '" + log_path + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  const int status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  if (status == 0) return true;
  const std::string log = read_file(log_path);
  if (status == 127) {
    ADD_FAILURE() << "python3 not found: these tests need python3 with numpy as the "
                     "independent reference (apt-get install python3-numpy)";
  } else if (status == 97) {
    ADD_FAILURE() << "python3 cannot import numpy: these tests need it as the independent "
                     "reference (apt-get install python3-numpy or pip install numpy): "
                  << log;
  } else {
    ADD_FAILURE() << "python script failed (exit " << status << "):\n"
                  << script << "\n--- output ---\n"
                  << log;
  }
  return false;
}

// Expects fn() to throw megatax::Error with `code` and a message containing every one of
// `parts`.
inline void expect_error(const std::function<void()>& fn, ErrorCode code,
                         const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected Error(" << error_code_name(code) << ") but nothing was thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << "message: " << e.what() << "\n  got code "
                              << error_code_name(e.code()) << ", expected "
                              << error_code_name(code);
    for (const std::string& part : parts) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "message \"" << e.what() << "\" lacks \"" << part << "\"";
    }
  }
}

}  // namespace megatax::testing_io
