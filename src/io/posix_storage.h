// io/posix_storage.h -- Storage over the local POSIX file system (local disk, NFS, Lustre).
//
// Reads use open + pread (no handle is kept between calls), except that a read_ranges() of
// many small ranges copies them out of a read-only mapping of the file kept between calls
// (io/mapped_files.h: checked against the file's identity on each call; the file must not
// shrink while it is read). Writes use a temporary file in
// the target's directory (".<name>.tmp.<pid>.<random>", created with O_EXCL), fsync, rename
// over the target and fsync of the directory. A streamed write (write_atomic_stream) asks the
// kernel to start writing each piece back as soon as it is written (Linux: sync_file_range),
// so that its disk time overlaps the production of the next pieces. Paths are passed to the OS unchanged
// (relative paths are relative to the current working directory).
//
// Thread-safety: safe for concurrent access (the mappings' cache locks itself).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/mapped_files.h"
#include "megatax/storage.h"

namespace megatax::io {

class PosixStorage final : public Storage {
 public:
  PosixStorage() = default;

  std::string name() const override { return "posix"; }
  void read_range(const std::string& path, std::uint64_t offset, std::uint64_t length,
                  void* dst) const override;
  void read_ranges(const std::string& path, std::span<const ReadRequest> requests) const override;
  std::shared_ptr<const MappedBytes> map_read_only(const std::string& path) const override;
  std::uint64_t size(const std::string& path) const override;
  bool exists(const std::string& path) const override;
  void write_atomic_gather(const std::string& path, std::span<const ByteSpan> pieces) override;
  void write_atomic_stream(const std::string& path, const PieceSource& next) override;
  std::vector<std::string> list(const std::string& dir) const override;
  std::vector<std::string> glob(const std::string& pattern) const override;
  bool remove(const std::string& path) override;
  void make_dirs(const std::string& path) override;

 private:
  // The write of both forms: pieces from `next`, each write's write-back started at once
  // when `early_writeback` (Linux).
  void write_pieces(const std::string& path, const PieceSource& next, bool early_writeback);

  std::unique_ptr<MappedFiles> mapped_ = std::make_unique<MappedFiles>();
};

// The one place where errno becomes an Error: throws Error(code from errno) with message
// "<what> <path>: <strerror text> (errno <n>)". ENOENT/ENOTDIR -> kNotFound, EEXIST ->
// kAlreadyExists, ENOSPC/EDQUOT/ENOMEM/EFBIG -> kResourceExhausted, EISDIR/ENAMETOOLONG/
// EINVAL -> kInvalidArgument, EAGAIN/EINTR -> kUnavailable, anything else -> kIoError.
[[noreturn]] void throw_errno(int err, const std::string& what, const std::string& path);

}  // namespace megatax::io
