#include "io/posix_storage.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "io/path.h"
#include "megatax/error.h"

namespace megatax::io {

void throw_errno(int err, const std::string& what, const std::string& path) {
  ErrorCode code = ErrorCode::kIoError;
  switch (err) {
    case ENOENT:
    case ENOTDIR: code = ErrorCode::kNotFound; break;
    case EEXIST: code = ErrorCode::kAlreadyExists; break;
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EFBIG: code = ErrorCode::kResourceExhausted; break;
    case EISDIR:
    case ENAMETOOLONG:
    case EINVAL: code = ErrorCode::kInvalidArgument; break;
    case EAGAIN:
    case EINTR: code = ErrorCode::kUnavailable; break;
    default: break;
  }
  // std::system_category().message is the thread-safe strerror text.
  throw_error(code, what + " " + path + ": " + std::system_category().message(err) + " (errno " +
                        std::to_string(err) + ")");
}

namespace {

// Owns a file descriptor; closes it (ignoring errors) unless released.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now and reports close()'s errno (0 on success).
  int close_now() {
    const int fd = fd_;
    fd_ = -1;
    return ::close(fd) == 0 ? 0 : errno;
  }

 private:
  int fd_;
};

int open_retry(const char* path, int flags, mode_t mode = 0) {
  int fd;
  do {
    fd = ::open(path, flags, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// Writes all `size` bytes; returns 0 or the errno of the failing write.
int write_fully(int fd, const char* data, std::uint64_t size) {
  while (size > 0) {
    const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(size, 1u << 30));
    const ssize_t n = ::write(fd, data, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    data += n;
    size -= static_cast<std::uint64_t>(n);
  }
  return 0;
}

int fsync_retry(int fd) {
  int rc;
  do {
    rc = ::fsync(fd);
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? 0 : errno;
}

bool stat_path(const std::string& path, struct stat* st, int* err) {
  if (::stat(path.c_str(), st) == 0) return true;
  *err = errno;
  return false;
}

// Deletes the temporary file on scope exit unless disarmed.
class TempFileGuard {
 public:
  explicit TempFileGuard(std::string path) : path_(std::move(path)) {}
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  ~TempFileGuard() {
    if (armed_) ::unlink(path_.c_str());
  }
  void disarm() { armed_ = false; }

 private:
  std::string path_;
  bool armed_ = true;
};

std::string random_suffix() {
  std::random_device rd;
  const std::uint64_t r = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(r));
  return buf;
}

}  // namespace

namespace {

// Reads exactly `length` bytes at `offset` of the open file `fd` (named `path` in errors).
void pread_all(int fd, const std::string& path, std::uint64_t offset, std::uint64_t length, void* dst) {
  if (length == 0) return;
  if (offset > static_cast<std::uint64_t>(INT64_MAX) ||
      length > static_cast<std::uint64_t>(INT64_MAX) - offset) {
    throw_error(ErrorCode::kOutOfRange, "read of " + path + ": offset " + std::to_string(offset) +
                                            " + length " + std::to_string(length) + " overflows");
  }
  char* out = static_cast<char*>(dst);
  std::uint64_t done = 0;
  while (done < length) {
    const std::size_t chunk =
        static_cast<std::size_t>(std::min<std::uint64_t>(length - done, 1u << 30));
    const ssize_t n = ::pread(fd, out + done, chunk, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "cannot read", path);
    }
    if (n == 0) {
      struct stat st {};
      const std::uint64_t file_size =
          ::fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
      throw_error(ErrorCode::kDataLoss,
                  "short read: file " + path + ": wanted " + std::to_string(length) +
                      " bytes at offset " + std::to_string(offset) + ", got " +
                      std::to_string(done) + " (file is " + std::to_string(file_size) + " bytes)");
    }
    done += static_cast<std::uint64_t>(n);
  }
}

}  // namespace

void PosixStorage::read_range(const std::string& path, std::uint64_t offset, std::uint64_t length,
                              void* dst) const {
  Fd fd(open_retry(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw_errno(errno, "cannot open", path);
  pread_all(fd.get(), path, offset, length, dst);
}

void PosixStorage::read_ranges(const std::string& path, std::span<const ReadRequest> requests) const {
  if (requests.empty()) return;
  Fd fd(open_retry(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw_errno(errno, "cannot open", path);
  // Many small reads (a sample's rows) are copies out of the file's kept mapping.
  constexpr std::size_t kMapFrom = 8;
  struct stat st {};
  if (requests.size() >= kMapFrom && ::fstat(fd.get(), &st) == 0 && mapped_->copy(path, fd.get(), st, requests))
    return;
  for (const ReadRequest& r : requests) pread_all(fd.get(), path, r.offset, r.length, r.dst);
}

std::shared_ptr<const Storage::MappedBytes> PosixStorage::map_read_only(const std::string& path) const {
  Fd fd(open_retry(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw_errno(errno, "cannot open", path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno(errno, "cannot stat", path);
  if (S_ISDIR(st.st_mode)) throw_error(ErrorCode::kInvalidArgument, "map of " + path + ": is a directory, not a file");
  return mapped_->whole(path, fd.get(), st);
}

std::uint64_t PosixStorage::size(const std::string& path) const {
  struct stat st {};
  int err = 0;
  if (!stat_path(path, &st, &err)) throw_errno(err, "cannot stat", path);
  if (S_ISDIR(st.st_mode)) {
    throw_error(ErrorCode::kInvalidArgument, "size of " + path + ": is a directory, not a file");
  }
  return static_cast<std::uint64_t>(st.st_size);
}

bool PosixStorage::exists(const std::string& path) const {
  struct stat st {};
  int err = 0;
  if (stat_path(path, &st, &err)) return true;
  if (err == ENOENT || err == ENOTDIR) return false;
  throw_errno(err, "cannot stat", path);
}

void PosixStorage::write_atomic_gather(const std::string& path, std::span<const ByteSpan> pieces) {
  std::size_t i = 0;
  write_pieces(path, [&](ByteSpan* piece) {
    if (i == pieces.size()) return false;
    *piece = pieces[i++];
    return true;
  }, false);
}

void PosixStorage::write_atomic_stream(const std::string& path, const PieceSource& next) {
  write_pieces(path, next, true);
}

void PosixStorage::write_pieces(const std::string& path, const PieceSource& next, bool early_writeback) {
  const std::string_view name = base_name(path);
  if (name.empty() || name == "." || name == "..") {
    throw_error(ErrorCode::kInvalidArgument,
                "write of '" + path + "': expected a file path, not a directory");
  }
  const std::string dir = parent_dir(path);
  if (!dir.empty()) make_dirs(dir);

  // Create a fresh temporary file next to the target (same file system, so rename is atomic).
  const std::string dir_prefix = dir.empty() ? "" : (dir == "/" ? "/" : dir + "/");
  std::string tmp;
  int fd_raw = -1;
  for (int attempt = 0; attempt < 16 && fd_raw < 0; ++attempt) {
    tmp = dir_prefix + "." + std::string(name) + ".tmp." + std::to_string(::getpid()) + "." +
          random_suffix();
    fd_raw = open_retry(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_raw < 0 && errno != EEXIST) throw_errno(errno, "cannot create temporary file", tmp);
  }
  if (fd_raw < 0) throw_errno(EEXIST, "cannot create temporary file", tmp);
  Fd fd(fd_raw);
  TempFileGuard guard(tmp);

  // Small pieces are coalesced into a buffer so that many tiny rows cost few syscalls (a
  // stream's last 1 MiB at most waits in it for the next pieces).
  constexpr std::size_t kCoalesceBytes = std::size_t{1} << 20;
  std::vector<char> buffer;
  std::uint64_t written = 0, handed_back = 0;  // bytes in the file; of which write-back started
  auto write_out = [&](const char* data, std::uint64_t size) {
    const int err = write_fully(fd.get(), data, size);
    if (err != 0) throw_errno(err, "cannot write", tmp);
    written += size;
#if defined(__linux__)
    // A hint (errors ignored: the fsync below is what makes the data durable).
    constexpr std::uint64_t kWritebackBytes = std::uint64_t{8} << 20;
    if (early_writeback && written - handed_back >= kWritebackBytes) {
      (void)::sync_file_range(fd.get(), static_cast<off_t>(handed_back), static_cast<off_t>(written - handed_back),
                              SYNC_FILE_RANGE_WRITE);
      handed_back = written;
    }
#endif
  };
  auto flush = [&]() {
    if (buffer.empty()) return;
    write_out(buffer.data(), buffer.size());
    buffer.clear();
  };
  ByteSpan piece;
  while (next(&piece)) {
    if (piece.size == 0) continue;
    if (piece.data == nullptr) {
      throw_error(ErrorCode::kInvalidArgument, "write of " + path + ": null data for a piece of " +
                                                   std::to_string(piece.size) + " bytes");
    }
    if (piece.size >= kCoalesceBytes) {
      flush();
      write_out(static_cast<const char*>(piece.data), piece.size);
      continue;
    }
    if (buffer.size() + piece.size > kCoalesceBytes) flush();
    if (buffer.capacity() < kCoalesceBytes) buffer.reserve(kCoalesceBytes);
    const char* p = static_cast<const char*>(piece.data);
    buffer.insert(buffer.end(), p, p + piece.size);
  }
  flush();
  if (const int err = fsync_retry(fd.get()); err != 0) throw_errno(err, "cannot fsync", tmp);
  if (const int err = fd.close_now(); err != 0) throw_errno(err, "cannot close", tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    throw_errno(errno, "cannot rename " + tmp + " to", path);
  }
  guard.disarm();

  // Make the new directory entry durable.
  const std::string sync_dir = dir.empty() ? "." : dir;
  Fd dir_fd(open_retry(sync_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0) throw_errno(errno, "cannot open directory for fsync", sync_dir);
  if (const int err = fsync_retry(dir_fd.get()); err != 0 && err != EINVAL) {
    throw_errno(err, "cannot fsync directory", sync_dir);
  }
}

std::vector<std::string> PosixStorage::list(const std::string& dir) const {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    const int err = errno;
    if (err == ENOTDIR) {
      throw_error(ErrorCode::kInvalidArgument, "cannot list " + dir + ": not a directory");
    }
    throw_errno(err, "cannot list", dir);
  }
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* entry = ::readdir(d)) {
    const std::string_view n = entry->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
    errno = 0;
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) throw_errno(err, "cannot list", dir);
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> PosixStorage::glob(const std::string& pattern) const {
  const GlobPattern g = parse_glob_pattern(pattern);
  std::vector<std::string> out;
  auto is_file = [](const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);  // follows symlinks
  };
  if (g.literal) {
    if (is_file(pattern)) out.push_back(pattern);
    return out;
  }
  DIR* d = ::opendir(g.dir.c_str());
  if (d == nullptr) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) return out;
    throw_errno(err, "cannot list", g.dir);
  }
  errno = 0;
  while (const dirent* entry = ::readdir(d)) {
    const std::string_view n = entry->d_name;
    if (n != "." && n != ".." && glob_match(g.name_pattern, n)) {
      std::string full = g.prefix + std::string(n);
      const bool regular =
          entry->d_type == DT_REG ||
          ((entry->d_type == DT_UNKNOWN || entry->d_type == DT_LNK) && is_file(full));
      if (regular) out.push_back(std::move(full));
    }
    errno = 0;
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) throw_errno(err, "cannot list", g.dir);
  std::sort(out.begin(), out.end());
  return out;
}

bool PosixStorage::remove(const std::string& path) {
  if (::unlink(path.c_str()) == 0) return true;
  int err = errno;
  if (err == ENOENT) return false;
  if (err == EISDIR || err == EPERM) {  // Linux reports EISDIR, POSIX allows EPERM
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      if (::rmdir(path.c_str()) == 0) return true;
      err = errno;
      if (err == ENOTEMPTY || err == EEXIST) {
        throw_error(ErrorCode::kIoError,
                    "cannot remove " + path + ": directory not empty (ENOTEMPTY)");
      }
    }
  }
  throw_errno(err, "cannot remove", path);
}

void PosixStorage::make_dirs(const std::string& path) {
  if (path.empty()) return;
  // Create each prefix ending before a '/', then the whole path.
  std::size_t pos = 0;
  while (true) {
    pos = path.find('/', pos + 1);
    const std::string prefix = pos == std::string::npos ? path : path.substr(0, pos);
    if (!prefix.empty() && ::mkdir(prefix.c_str(), 0777) != 0) {
      const int err = errno;
      struct stat st {};
      if (err == EEXIST || err == EACCES || err == EROFS || err == EPERM) {
        // Fine if it is a directory already (EACCES/EROFS: an existing parent we may not
        // write, e.g. "/" itself).
        if (::stat(prefix.c_str(), &st) == 0) {
          if (!S_ISDIR(st.st_mode)) {
            std::string msg = "cannot create directory " + path;
            msg += ": " + prefix + " exists and is not a directory";
            throw_error(ErrorCode::kInvalidArgument, msg);
          }
        } else {
          throw_errno(err, "cannot create directory", prefix);
        }
      } else {
        throw_errno(err, "cannot create directory", prefix);
      }
    }
    if (pos == std::string::npos) break;
  }
}

}  // namespace megatax::io
