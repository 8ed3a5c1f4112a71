// megatax/storage.h -- the one seam between Mega-Taxonomy and files or objects.
//
// A Storage reads byte ranges of whole objects ("files"), writes whole objects atomically,
// lists and removes them (in the spirit of LevelDB's Env). Everything above io/ reaches
// files only through it, so one engine runs on local disk, NFS/Lustre, an in-memory store
// (tests, fuzzers) and object stores through Apache Arrow's filesystems.
//
// Paths are '/'-separated strings in the storage's own namespace, without a URI scheme
// (open_storage_for_uri() strips it). Byte offsets and sizes are 64-bit.
//
// Errors: every method throws megatax::Error on failure; the message names the path (and
// the offset, for reads) and, for OS failures, the strerror text. Codes used:
//   kNotFound      the path (or a parent directory) does not exist
//   kDataLoss      fewer bytes than asked for were available ("short read")
//   kIoError       the OS/storage refused (permission, bad descriptor, hardware ...)
//   kResourceExhausted  disk full or quota exceeded
//   kInvalidArgument    a path of the wrong kind (a directory where a file was expected,
//                       a pattern with wildcards outside its last component ...)
//
// Thread-safety: every implementation is safe for concurrent access from several threads
// without external synchronisation. Concurrent writers of the same path race; the last
// rename wins, and readers see either the old or the new whole object, never a mix.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace megatax {

// One contiguous run of bytes to write (borrowed; must stay valid during the call).
struct ByteSpan {
  const void* data = nullptr;
  std::uint64_t size = 0;
};

class Storage {
 public:
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  virtual ~Storage() = default;

  // Short name of the implementation ("posix", "memory", "fault-injection(posix)").
  virtual std::string name() const = 0;

  // Copies exactly `length` bytes starting at byte `offset` of the object at `path` into
  // dst (caller-owned, at least `length` bytes; may be null when length == 0).
  // On success all `length` bytes are written. If the object ends before offset + length,
  // throws Error(kDataLoss) "short read" naming the path, offset and sizes; dst contents
  // are then unspecified. Missing path: kNotFound. Each call is independent (no open
  // handle is kept), so a file replaced between calls is read as the new file.
  virtual void read_range(const std::string& path, std::uint64_t offset, std::uint64_t length,
                          void* dst) const = 0;

  // Several read_range()s of one object as one call, in order, with read_range's errors
  // (the first failing request throws). The default calls read_range for each; POSIX opens
  // the file once for all of them (gathering scattered rows would otherwise open it per row).
  struct ReadRequest {
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    void* dst = nullptr;
  };
  virtual void read_ranges(const std::string& path, std::span<const ReadRequest> requests) const;
  // The whole object's bytes in place, read-only, where the storage can show them without
  // a copy (POSIX: a read-only shared mapping of the file, pages from the page cache, kept
  // between calls as read_ranges keeps them); null where it cannot (other storages, a file
  // that cannot be mapped, an empty one): the caller then reads. The bytes stay valid while
  // the returned pointer (or a copy of it) lives, also if the file is replaced meanwhile
  // (a later call maps the new file); the file must not be truncated meanwhile (a page past
  // its end raises SIGBUS). Missing path: kNotFound.
  struct MappedBytes {
    const unsigned char* data = nullptr;
    std::uint64_t size = 0;
  };
  virtual std::shared_ptr<const MappedBytes> map_read_only(const std::string& path) const;

  // Size in bytes of the object (regular file) at `path`. Missing: kNotFound; a directory:
  // kInvalidArgument.
  virtual std::uint64_t size(const std::string& path) const = 0;

  // True if a file or directory exists at `path`; false if not. Throws only when the
  // answer cannot be known (e.g. permission denied on a parent: kIoError).
  virtual bool exists(const std::string& path) const = 0;

  // Replaces (or creates) the object at `path` with the concatenation of `pieces`, as one
  // atomic step: afterwards a reader sees either the complete old object (or none) or the
  // complete new one, never a part -- also if the process dies during the call. Missing
  // parent directories are created. On success the new object is durable (POSIX: data and
  // the directory entry are fsync'ed). On failure the old object, if any, is intact and no
  // temporary object is left behind, except that a failure of the final directory sync is
  // reported after the rename (then the new object is in place but may not be durable).
  virtual void write_atomic_gather(const std::string& path, std::span<const ByteSpan> pieces) = 0;

  // The pieces of a streamed write, in order (write_atomic_stream): sets *piece and returns
  // true, or returns false after the last piece. It may block until the next piece is ready
  // and may throw: the write then fails as write_atomic_gather fails (the old object intact,
  // no temporary left) and rethrows. Every piece must stay valid until the write returns.
  using PieceSource = std::function<bool(ByteSpan* piece)>;
  // write_atomic_gather's contract for pieces that arrive over time (a file produced while
  // other work runs). POSIX writes each piece as it arrives and starts its write-back to the
  // disk at once, so that the final fsync waits for the last pieces only; the default takes
  // every piece, then calls write_atomic_gather.
  virtual void write_atomic_stream(const std::string& path, const PieceSource& next);

  // Convenience forms of write_atomic_gather with one piece.
  void write_atomic(const std::string& path, const void* data, std::uint64_t size);
  void write_atomic(const std::string& path, std::string_view bytes) {
    write_atomic(path, bytes.data(), bytes.size());
  }

  // Names (last path component only) of the entries -- files and directories -- directly
  // inside directory `dir`, sorted byte-wise ascending. Missing dir: kNotFound; a file:
  // kInvalidArgument.
  virtual std::vector<std::string> list(const std::string& dir) const = 0;

  // Full paths of the regular files matching `pattern`, sorted byte-wise ascending (so
  // "part-10" sorts before "part-2": zero-pad shard numbers). Wildcards (see glob_match)
  // are allowed in the last path component only; a pattern with wildcards in a directory
  // component throws Error(kInvalidArgument). The directory part is kept as written:
  // glob("/d/x-*.npy") returns "/d/x-0.npy", ... A pattern without wildcards returns
  // {pattern} if that file exists. No match, or a missing directory, returns an empty
  // vector (not an error).
  virtual std::vector<std::string> glob(const std::string& pattern) const = 0;

  // Removes the file (or empty directory) at `path`. Returns true if it was removed,
  // false if nothing was there. A non-empty directory: kIoError (ENOTEMPTY).
  virtual bool remove(const std::string& path) = 0;

  // Creates directory `path` and any missing parents (mkdir -p). Succeeds if it already
  // exists as a directory; a file in the way: kInvalidArgument or kIoError.
  virtual void make_dirs(const std::string& path) = 0;
};

// Reads the whole object at `path` into a string (for small files: manifests, headers).
std::string read_all(const Storage& storage, const std::string& path);

// True if `name` (one path component) matches the shell-style `pattern`:
//   *      any run of characters (also empty)     ?  exactly one character
//   [abc]  one of the listed characters; ranges [a-z]; negation [!abc] or [^abc];
//          ']' first in the set is literal ([]a]); an unterminated '[' is a literal '['
//   \c     the character c literally
// Like a shell, a leading '.' of `name` is matched only by a literal '.' in the pattern
// (so "*.npy" never picks up hidden temporary files such as ".a.npy.tmp.123"). '/' is
// never matched by a wildcard. Pure function; safe from any thread.
bool glob_match(std::string_view pattern, std::string_view name) noexcept;

// True if `text` holds an unescaped glob wildcard ('*', '?' or '[').
bool has_glob_wildcard(std::string_view text) noexcept;

// Opens the storage for a URI and, if `path` is non-null, stores in it the path within
// that storage:
//   "/a/b", "a/b" (plain paths)            -> POSIX storage, path as given
//   "file:///a/b", "file://localhost/a/b"  -> POSIX storage, path "/a/b" (%XX decoded)
//   "mem://a/b"                            -> a NEW, EMPTY in-memory storage, path "a/b"
//                                             (to share one, construct io::MemoryStorage)
//   "s3://bucket/key", "gs://bucket/key", "gcs://", "hdfs://host[:port]/path",
//   "viewfs://", "abfs://", "abfss://", "az://"
//                                          -> Arrow's filesystem (io/arrow_storage.h:
//                                             AWS_* configuration, retries, path
//                                             "bucket/key" or "/path"); when built without
//                                             Arrow, Error(kUnimplemented) "needs the Arrow
//                                             filesystem backend (not built)"
//   any other "scheme://"                  -> Error(kInvalidArgument) naming the scheme
// The result is owned by the caller. Thread-safe.
std::unique_ptr<Storage> open_storage_for_uri(std::string_view uri, std::string* path = nullptr);

}  // namespace megatax
