// io/mapped_files.h -- read-only mappings of local files, kept between reads, for many small
// reads of the same files (a training sample's rows scattered over every shard).
//
// A pread of one 2 KB row from the page cache costs ~1.5 us, most of it the system call;
// a copy out of a mapping ~0.35 us, once the page is mapped. Mapping a file for each call
// of a few rows costs more than it saves (the fresh mapping faults on every page it
// touches), so mappings are kept, keyed by path and checked against the open file's
// identity (device, inode, size, modification time) on every use: a file replaced or
// rewritten between calls gets a new mapping, as Storage's "each call is independent" asks.
//
// A mapped file must not shrink while it is read: a page past its end raises SIGBUS (a
// pread would report a short read). The fit's input shards are not written while it runs.
//
// Thread-safety: copy() may be called from any number of threads at once; a file's mapping
// found is shared (a reader lock), one made or dropped takes the cache's lock alone.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>
#include <unordered_map>

#include "megatax/storage.h"

namespace megatax::io {

class MappedFiles {
 public:
  // Keeps up to `max_files` mappings covering up to `max_bytes` of address space (the least
  // recently used dropped first; a mapping in use lives until its copies end).
  explicit MappedFiles(std::size_t max_files = 4096, std::uint64_t max_bytes = std::uint64_t{1} << 40)
      : max_files_(max_files), max_bytes_(max_bytes) {}
  MappedFiles(const MappedFiles&) = delete;
  MappedFiles& operator=(const MappedFiles&) = delete;

  // Copies each request's bytes of the regular file open as `fd` (named `path`, described
  // by `st`) out of its mapping: true when done, false (nothing copied) when a request
  // reaches past the file's end or the file cannot be mapped: the caller then reads.
  bool copy(const std::string& path, int fd, const struct stat& st,
            std::span<const Storage::ReadRequest> requests);
  // The whole mapping of that file (made if need be), alive while the pointer lives; null
  // when it cannot be mapped (not a regular file, empty, mmap refused).
  std::shared_ptr<const Storage::MappedBytes> whole(const std::string& path, int fd, const struct stat& st);

 private:
  struct Mapping;
  std::shared_ptr<const Mapping> find(const std::string& path, const struct stat& st);
  std::shared_ptr<const Mapping> map(const std::string& path, int fd, const struct stat& st);

  std::size_t max_files_;
  std::uint64_t max_bytes_;
  std::shared_mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<Mapping>> by_path_;
  std::uint64_t mapped_bytes_ = 0;
  std::atomic<std::uint64_t> uses_{0};  // a clock for "least recently used"
};

}  // namespace megatax::io
