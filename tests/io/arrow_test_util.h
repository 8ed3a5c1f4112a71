// tests/io/arrow_test_util.h -- helpers of the Arrow-backed tests (Parquet, object stores):
// running the Python scripts beside the tests (fixture writers, independent readers, the
// moto S3 server). Header-only; test code only.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "io/io_test_util.h"

namespace megatax::testing_io {

// The tests/ folder of the source tree (set by tests/CMakeLists.txt).
inline std::string tests_dir() { return MEGATAX_TESTS_DIR; }

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// Runs `python3 <script> <args...>` (script relative to tests/), output to `log_path`.
// Returns true on exit status 0. Otherwise records a test FAILURE (never a skip) with the
// output: status 97 means a Python package of requirements.txt is missing, 127 no python3.
inline bool run_python_script(const std::string& script, const std::vector<std::string>& args,
                              const std::string& log_path, const std::string& env_prefix = "") {
  std::string cmd = env_prefix + "python3 " + shell_quote(tests_dir() + "/" + script);
  // (Appends: g++ 12 warns -Wrestrict, a known false positive, on `" " + std::string&&`.)
  for (const std::string& a : args) {
    cmd += ' ';
    cmd += shell_quote(a);
  }
  cmd += " > ";
  cmd += shell_quote(log_path);
  cmd += " 2>&1";
  const int rc = std::system(cmd.c_str());
  const int status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  if (status == 0) return true;
  const std::string log = read_file(log_path);
  if (status == 127) {
    ADD_FAILURE() << "python3 not found: the Parquet/S3 tests need python3 with the packages of "
                     "requirements.txt (pyarrow, duckdb, polars, moto, boto3)";
  } else if (status == 97) {
    ADD_FAILURE() << "tests/" << script << ": " << log;
  } else {
    ADD_FAILURE() << "tests/" << script << " failed (exit " << status << "):\n" << log;
  }
  return false;
}

// Splits `s` at `sep`.
inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

}  // namespace megatax::testing_io
