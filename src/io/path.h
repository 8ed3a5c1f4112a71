// io/path.h -- small '/'-path helpers shared by the Storage implementations (internal).
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace megatax::io {

// Last component of a '/'-separated path ("a/b.npy" -> "b.npy"; "b.npy" -> "b.npy").
std::string_view base_name(std::string_view path) noexcept;

// Everything before the last '/' ("a/b.npy" -> "a"; "/b" -> "/"; "b" -> "").
std::string parent_dir(std::string_view path);

// A glob pattern split for listing: list `dir`, match names against `name_pattern`, and
// prefix matches with `prefix` (the pattern's directory text, kept as the caller wrote it).
struct GlobPattern {
  std::string dir;           // directory to list ("." when the pattern has no '/')
  std::string prefix;        // text put before each matching name ("" or "dir/")
  std::string name_pattern;  // last component, possibly with wildcards
  bool literal = false;      // no wildcard and no escape: just check that the file exists
};

// Splits `pattern`; throws Error(kInvalidArgument) if a directory component holds a
// wildcard or the last component is empty ("dir/").
GlobPattern parse_glob_pattern(const std::string& pattern);

}  // namespace megatax::io
