// io/memory_storage.h -- Storage kept in process memory (tests, fuzzers, mem:// URIs).
//
// Files are byte strings keyed by normalised path: repeated '/' are collapsed, a trailing
// '/' and leading "./" are dropped ("a//b/" == "a/b"; "." is the root of relative keys).
// Directories exist implicitly as parents of files, or explicitly through make_dirs().
// write_atomic_gather replaces the whole value under a lock, so readers never see a part.
// Nothing is ever written to disk; everything is lost with the object.
//
// Thread-safety: safe for concurrent access (one internal mutex).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "megatax/storage.h"

namespace megatax::io {

class MemoryStorage final : public Storage {
 public:
  MemoryStorage() = default;

  std::string name() const override { return "memory"; }
  void read_range(const std::string& path, std::uint64_t offset, std::uint64_t length,
                  void* dst) const override;
  std::uint64_t size(const std::string& path) const override;
  bool exists(const std::string& path) const override;
  void write_atomic_gather(const std::string& path, std::span<const ByteSpan> pieces) override;
  std::vector<std::string> list(const std::string& dir) const override;
  std::vector<std::string> glob(const std::string& pattern) const override;
  bool remove(const std::string& path) override;
  void make_dirs(const std::string& path) override;

  // Number of files held (for tests: e.g. "no temporary object was left").
  std::size_t file_count() const;

 private:
  // Both called with mu_ held.
  bool is_dir_locked(const std::string& key) const;
  const std::string* find_file_locked(const std::string& key) const;

  mutable std::mutex mu_;
  // Values are shared_ptr<const> so that a reader can copy out without holding the lock
  // across a large memcpy while a writer swaps in a new value.
  std::map<std::string, std::shared_ptr<const std::string>> files_;  // guarded by mu_
  std::set<std::string> dirs_;                                       // guarded by mu_
};

}  // namespace megatax::io
