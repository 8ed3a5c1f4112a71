// ArrowStorage: our Storage over arrow::fs::FileSystem (S3 built here from AWS_* variables;
// gs/hdfs/abfs through arrow::fs::FileSystemFromUri). Built only with MEGATAX_HAVE_ARROW.
#include "io/arrow_storage.h"

#include <arrow/filesystem/filesystem.h>
#include <arrow/filesystem/s3fs.h>
#include <arrow/io/interfaces.h>
#include <arrow/result.h>
#include <arrow/status.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <random>
#include <unordered_map>
#include <utility>

#include "io/path.h"
#include "megatax/error.h"

namespace megatax::io {
namespace {

namespace afs = arrow::fs;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Retries made by S3 requests issued from this thread since the current ArrowStorage call
// began (the AWS SDK retries synchronous requests on the calling thread). Only for the
// "gave up after N retries" note of an error message.
std::int64_t& thread_retries() {
  static thread_local std::int64_t retries = 0;
  return retries;
}

// Retries S3 requests that the AWS SDK calls retryable, at most max_retries times, with
// exponential backoff; counts the retries made.
class BoundedRetryStrategy final : public afs::S3RetryStrategy {
 public:
  explicit BoundedRetryStrategy(const ObjectStoreOptions& options) : options_(options) {}

  bool ShouldRetry(const AWSErrorDetail& error, std::int64_t attempted_retries) override {
    if (!error.should_retry || attempted_retries >= options_.max_retries) return false;
    retries_.fetch_add(1, std::memory_order_relaxed);
    ++thread_retries();
    return true;
  }
  std::int64_t CalculateDelayBeforeNextRetry(const AWSErrorDetail& /*error*/,
                                             std::int64_t attempted_retries) override {
    std::int64_t delay = std::max(0, options_.initial_backoff_ms);
    for (std::int64_t i = 0; i < attempted_retries && delay < options_.max_backoff_ms; ++i) {
      delay *= 2;
    }
    return std::min<std::int64_t>(delay, std::max(0, options_.max_backoff_ms));
  }
  std::int64_t retries() const noexcept { return retries_.load(std::memory_order_relaxed); }

 private:
  const ObjectStoreOptions options_;
  std::atomic<std::int64_t> retries_{0};
};

// S3's process-wide state: initialised once, on first use.
void ensure_s3_initialized() {
  static std::once_flag once;
  static arrow::Status status;
  std::call_once(once, [] { status = afs::EnsureS3Initialized(); });
  if (!status.ok()) {
    throw_error(ErrorCode::kIoError, "cannot initialise Arrow's S3 support: " + status.ToString());
  }
}

// ... and finalised at exit: Arrow requires FinalizeS3 before the program ends (else the AWS
// SDK may crash in its static destructors). Registered after the first S3 filesystem exists,
// so that it runs before the destructors of the statics that Arrow creates with it (exit
// handlers and static destructors run in reverse order of registration).
void finalize_s3_at_exit() {
  static std::once_flag once;
  std::call_once(once, [] { std::atexit([] { (void)afs::EnsureS3Finalized(); }); });
}

// True for failures worth reporting as transient (kUnavailable): Arrow's S3 messages name
// the AWS error type; HDFS/GCS/Azure report network trouble in words.
bool looks_transient(const arrow::Status& st) {
  const std::string& m = st.message();
  static const char* const kMarkers[] = {
      "NETWORK_CONNECTION", "SERVICE_UNAVAILABLE", "SLOW_DOWN",   "THROTTLING",
      "INTERNAL_FAILURE",   "REQUEST_TIMEOUT",     "HTTP status 5", "HTTP status 429",
      "Could not connect",  "Couldn't connect",    "Connection reset", "timed out",
      "Timeout was reached"};
  for (const char* marker : kMarkers) {
    if (m.find(marker) != std::string::npos) return true;
  }
  return false;
}

bool looks_not_found(const arrow::Status& st) {
  const std::string& m = st.message();
  return m.find("Path does not exist") != std::string::npos ||
         m.find("NO_SUCH_KEY") != std::string::npos ||
         m.find("NO_SUCH_BUCKET") != std::string::npos ||
         m.find("NoSuchKey") != std::string::npos || m.find("NoSuchBucket") != std::string::npos ||
         m.find("RESOURCE_NOT_FOUND") != std::string::npos;
}

// "http://host:port" -> {scheme "http", endpoint "host:port"}.
void parse_endpoint_url(const std::string& url, afs::S3Options* options) {
  std::string rest = url;
  const std::size_t sep = url.find("://");
  if (sep != std::string::npos) {
    options->scheme = lower(url.substr(0, sep));
    rest = url.substr(sep + 3);
    if (options->scheme != "http" && options->scheme != "https") {
      throw_error(ErrorCode::kInvalidArgument,
                  "AWS_ENDPOINT_URL '" + url + "': scheme must be http or https");
    }
  }
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.empty() || rest.find('/') != std::string::npos) {
    throw_error(ErrorCode::kInvalidArgument,
                "AWS_ENDPOINT_URL '" + url + "': expected http(s)://host[:port] without a path");
  }
  options->endpoint_override = rest;
}

}  // namespace

struct ArrowStorage::Impl {
  // shared_ptr: Arrow's factories return one, and the files it opens keep it alive.
  std::shared_ptr<afs::FileSystem> fs;
  std::string kind;             // "s3", "gcs", "hdfs", "abfs"
  std::string uri_prefix;       // put before a path in messages ("s3://", "hdfs://nn:8020")
  bool object_store = true;     // whole-object writes; directories are prefixes
  std::shared_ptr<BoundedRetryStrategy> retry;  // S3 only; shared with Arrow's S3 client

  std::string describe(const std::string& path) const {
    if (kind == "s3" || kind == "gcs") return uri_prefix + path;
    return uri_prefix + (path.empty() || path[0] == '/' ? "" : "/") + path;
  }

  [[noreturn]] void fail(const arrow::Status& st, const std::string& what,
                         const std::string& path) const {
    ErrorCode code = ErrorCode::kIoError;
    std::string note;
    if (looks_transient(st)) {
      code = ErrorCode::kUnavailable;
      const std::int64_t retried = thread_retries();
      note = retried > 0 ? " (transient error; gave up after " + std::to_string(retried) +
                               " retries with backoff)"
                         : std::string(" (transient error)");
    } else if (looks_not_found(st)) {
      code = ErrorCode::kNotFound;
    } else if (st.IsInvalid()) {
      code = ErrorCode::kInvalidArgument;
    } else if (st.IsNotImplemented()) {
      code = ErrorCode::kUnimplemented;
    } else if (st.IsOutOfMemory()) {
      code = ErrorCode::kResourceExhausted;
    }
    throw_error(code, what + " " + describe(path) + ": " + st.message() + note);
  }

  // The FileInfo of `path`, or a thrown Error.
  afs::FileInfo info(const std::string& path, const char* what) const {
    arrow::Result<afs::FileInfo> r = fs->GetFileInfo(path);
    if (!r.ok()) fail(r.status(), what, path);
    return *r;
  }

  // The object's size from a fresh HEAD (also remembered for read_range).
  std::int64_t fresh_size(const std::string& path, const std::string& what) const {
    const afs::FileInfo i = info(path, what.c_str());
    if (i.type() == afs::FileType::NotFound) {
      forget_size(path);
      throw_error(ErrorCode::kNotFound, what + " " + describe(path) + ": no such object");
    }
    if (i.type() != afs::FileType::File) {
      throw_error(ErrorCode::kInvalidArgument,
                  what + " " + describe(path) + ": is a directory (a prefix), expected an object");
    }
    remember_size(path, i.size());
    return i.size();
  }
  std::int64_t cached_size(const std::string& path) const {
    std::lock_guard<std::mutex> lock(sizes_mu);
    const auto it = sizes.find(path);
    return it == sizes.end() ? -1 : it->second;
  }
  void remember_size(const std::string& path, std::int64_t size) const {
    std::lock_guard<std::mutex> lock(sizes_mu);
    if (sizes.size() >= kMaxCachedSizes) sizes.clear();
    sizes[path] = size;
  }
  void forget_size(const std::string& path) const {
    std::lock_guard<std::mutex> lock(sizes_mu);
    sizes.erase(path);
  }

  // Object sizes seen by size(), read_range() and our own writes. Arrow's ranged read needs
  // the object's size up front (else it sends a HEAD first) and cannot tell a short answer
  // from a full one, so read_range bounds its reads by this size. size() always asks the
  // server, so "size() then read_range()" (what every reader does on open) is never stale.
  static constexpr std::size_t kMaxCachedSizes = 1 << 16;
  mutable std::mutex sizes_mu;
  mutable std::unordered_map<std::string, std::int64_t> sizes;  // guarded by sizes_mu
};

std::unique_ptr<ArrowStorage> ArrowStorage::open(std::string_view uri, std::string* path,
                                                 const ObjectStoreOptions& options) {
  const std::size_t sep = uri.find("://");
  if (sep == std::string_view::npos) {
    throw_error(ErrorCode::kInvalidArgument,
                "URI '" + std::string(uri) + "': expected scheme://...");
  }
  const std::string scheme = lower(uri.substr(0, sep));
  const std::string rest(uri.substr(sep + 3));
  auto impl = std::make_unique<Impl>();
  std::string inner;
  if (scheme == "s3") {
    // Parsed here rather than by Arrow: '?' and '[' are glob characters in our URIs, not a
    // query string, and Arrow's URI-based factory may look the bucket's region up online.
    const std::size_t slash = rest.find('/');
    const std::string bucket = rest.substr(0, slash);
    if (bucket.empty() || has_glob_wildcard(bucket)) {
      throw_error(ErrorCode::kInvalidArgument,
                  "URI '" + std::string(uri) + "': expected s3://bucket/key (a bucket name " +
                      "without wildcards)");
    }
    inner = rest;
    while (inner.size() > bucket.size() + 1 && inner.back() == '/') inner.pop_back();
    ensure_s3_initialized();
    afs::S3Options s3 = afs::S3Options::Defaults();
    const std::string key_id = env("AWS_ACCESS_KEY_ID");
    const std::string secret = env("AWS_SECRET_ACCESS_KEY");
    if (key_id.empty() != secret.empty()) {
      throw_error(ErrorCode::kInvalidArgument,
                  std::string("S3 credentials: ") +
                      (key_id.empty() ? "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"
                                      : "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"));
    }
    if (!key_id.empty()) s3.ConfigureAccessKey(key_id, secret, env("AWS_SESSION_TOKEN"));
    s3.region = env("AWS_REGION");
    if (s3.region.empty()) s3.region = env("AWS_DEFAULT_REGION");
    if (s3.region.empty()) s3.region = "us-east-1";
    std::string endpoint = env("AWS_ENDPOINT_URL_S3");
    if (endpoint.empty()) endpoint = env("AWS_ENDPOINT_URL");
    if (!endpoint.empty()) parse_endpoint_url(endpoint, &s3);
    if (options.connect_timeout_s > 0) s3.connect_timeout = options.connect_timeout_s;
    if (options.request_timeout_s > 0) s3.request_timeout = options.request_timeout_s;
    // Objects up to one part (5 MiB) go up as one PutObject at Close (errors of the open then
    // surface at Close, where write_atomic_gather looks anyway); larger ones as a multipart
    // upload that is completed at Close.
    s3.allow_delayed_open = true;
    s3.allow_bucket_creation = false;
    s3.allow_bucket_deletion = false;
    impl->retry = std::make_shared<BoundedRetryStrategy>(options);
    s3.retry_strategy = impl->retry;
    arrow::Result<std::shared_ptr<afs::S3FileSystem>> fs = afs::S3FileSystem::Make(s3);
    if (!fs.ok()) {
      throw_error(ErrorCode::kIoError, "URI '" + std::string(uri) +
                                           "': cannot create the S3 filesystem: " +
                                           fs.status().ToString());
    }
    impl->fs = *fs;
    finalize_s3_at_exit();
    impl->kind = "s3";
    impl->uri_prefix = "s3://";
  } else if (scheme == "gs" || scheme == "gcs" || scheme == "hdfs" || scheme == "viewfs" ||
             scheme == "abfs" || scheme == "abfss" || scheme == "az") {
    // Arrow parses the URI (authority, options); a wildcard last component is kept out of
    // its parser and appended to the path it returns.
    std::string base(uri);
    std::string tail;
    const std::size_t last = base.rfind('/');
    if (last != std::string::npos && last > sep + 2 && has_glob_wildcard(base.substr(last + 1))) {
      tail = base.substr(last + 1);
      base = base.substr(0, last);
    }
    std::string fs_path;
    arrow::Result<std::shared_ptr<afs::FileSystem>> fs = afs::FileSystemFromUri(base, &fs_path);
    if (!fs.ok()) {
      const ErrorCode code =
          fs.status().IsNotImplemented() ? ErrorCode::kUnimplemented : ErrorCode::kInvalidArgument;
      throw_error(code, "URI '" + std::string(uri) + "': Arrow cannot open its filesystem: " +
                            fs.status().ToString());
    }
    inner = tail.empty() ? fs_path : fs_path + "/" + tail;
    impl->fs = *fs;
    impl->kind = (scheme == "gs" || scheme == "gcs")
                     ? "gcs"
                     : (scheme == "hdfs" || scheme == "viewfs" ? "hdfs" : "abfs");
    impl->object_store = impl->kind != "hdfs";
    if (impl->kind == "gcs") {
      impl->uri_prefix = scheme + "://";
    } else {
      const std::size_t slash = rest.find('/');
      impl->uri_prefix = scheme + "://" + rest.substr(0, slash);
    }
  } else {
    throw_error(ErrorCode::kInvalidArgument,
                "URI '" + std::string(uri) + "': scheme '" + scheme +
                    "' is not an Arrow filesystem (expected s3, gs, hdfs or abfs)");
  }
  if (path != nullptr) *path = inner;
  return std::unique_ptr<ArrowStorage>(new ArrowStorage(std::move(impl)));
}

ArrowStorage::ArrowStorage(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ArrowStorage::~ArrowStorage() = default;

std::string ArrowStorage::name() const { return "arrow(" + impl_->kind + ")"; }

std::int64_t ArrowStorage::retries() const noexcept {
  return impl_->retry ? impl_->retry->retries() : 0;
}

void ArrowStorage::read_range(const std::string& path, std::uint64_t offset, std::uint64_t length,
                              void* dst) const {
  const Impl& m = *impl_;
  thread_retries() = 0;
  const std::string where =
      std::string("[") + std::to_string(offset) + ", +" + std::to_string(length) + ")";
  if (offset > static_cast<std::uint64_t>(INT64_MAX) ||
      length > static_cast<std::uint64_t>(INT64_MAX) - offset) {
    throw_error(ErrorCode::kOutOfRange,
                "read " + m.describe(path) + " " + where + ": offset + length overflows");
  }
  const auto end = static_cast<std::int64_t>(offset + length);
  std::int64_t object_size = m.cached_size(path);
  if (object_size < end || length == 0) object_size = m.fresh_size(path, "read");
  if (object_size < end) {
    throw_error(ErrorCode::kDataLoss, "read " + m.describe(path) + " " + where +
                                          ": short read, the object has " +
                                          std::to_string(object_size) + " bytes");
  }
  if (length == 0) return;
  // A FileInfo with the size lets Arrow skip its HEAD: one ranged GET straight into dst.
  afs::FileInfo info(path, afs::FileType::File);
  info.set_size(object_size);
  arrow::Result<std::shared_ptr<arrow::io::RandomAccessFile>> file = m.fs->OpenInputFile(info);
  arrow::Status failure = file.status();
  if (failure.ok()) {
    arrow::Result<std::int64_t> n = (*file)->ReadAt(static_cast<std::int64_t>(offset),
                                                    static_cast<std::int64_t>(length), dst);
    if (n.ok() && *n == static_cast<std::int64_t>(length)) return;
    failure = n.ok() ? arrow::Status::IOError("got ", *n, " bytes") : n.status();
  }
  m.forget_size(path);
  if (looks_not_found(failure)) {
    throw_error(ErrorCode::kNotFound, "read " + m.describe(path) + ": no such object (" +
                                          failure.message() + ")");
  }
  m.fail(failure, "read", path + " " + where);
}

std::uint64_t ArrowStorage::size(const std::string& path) const {
  thread_retries() = 0;
  return static_cast<std::uint64_t>(impl_->fresh_size(path, "size of"));
}

bool ArrowStorage::exists(const std::string& path) const {
  thread_retries() = 0;
  return impl_->info(path, "exists").type() != afs::FileType::NotFound;
}

void ArrowStorage::write_atomic_gather(const std::string& path,
                                       std::span<const ByteSpan> pieces) {
  std::size_t i = 0;
  write_atomic_stream(path, [&](ByteSpan* piece) {
    if (i == pieces.size()) return false;
    *piece = pieces[i++];
    return true;
  });
}

void ArrowStorage::write_atomic_stream(const std::string& path, const PieceSource& next) {
  thread_retries() = 0;
  const Impl& m = *impl_;
  const std::string_view base = base_name(path);
  if (base.empty() || path.find('/') == std::string::npos) {
    throw_error(ErrorCode::kInvalidArgument,
                "write " + m.describe(path) + ": expected a path below a bucket or directory");
  }
  // Object stores: the object appears whole when the stream closes (PUT, or the completion
  // of a multipart upload). Elsewhere (HDFS): a temporary beside it, renamed over it.
  std::string target = path;
  if (!m.object_store) {
    const std::string dir = parent_dir(path);
    if (!dir.empty()) {
      const arrow::Status st = m.fs->CreateDir(dir, /*recursive=*/true);
      if (!st.ok()) m.fail(st, "create directory", dir);
    }
    std::random_device rd;
    target = (dir.empty() ? std::string() : dir + "/") + "." + std::string(base) + ".tmp." +
             std::to_string(::getpid()) + "." + std::to_string(rd());
  }
  arrow::Result<std::shared_ptr<arrow::io::OutputStream>> out = m.fs->OpenOutputStream(target);
  if (!out.ok()) m.fail(out.status(), "write", path);
  m.forget_size(path);
  arrow::Status st;
  std::int64_t total = 0;
  try {
    ByteSpan piece;
    while (next(&piece)) {
      if (piece.size == 0) continue;
      total += static_cast<std::int64_t>(piece.size);
      st = (*out)->Write(piece.data, static_cast<std::int64_t>(piece.size));
      if (!st.ok()) break;
    }
  } catch (...) {  // the source failed: nothing replaced, no temporary left
    (void)(*out)->Abort();
    if (!m.object_store) (void)m.fs->DeleteFile(target);
    throw;
  }
  if (st.ok()) st = (*out)->Close();
  if (!st.ok()) {
    (void)(*out)->Abort();  // drops a multipart upload; the old object stays
    if (!m.object_store) (void)m.fs->DeleteFile(target);
    m.fail(st, "write", path);
  }
  if (!m.object_store) {
    arrow::Status moved = m.fs->Move(target, path);
    if (!moved.ok()) {
      // Some HDFS versions refuse to rename over an existing file.
      (void)m.fs->DeleteFile(path);
      moved = m.fs->Move(target, path);
    }
    if (!moved.ok()) {
      (void)m.fs->DeleteFile(target);
      m.fail(moved, "rename into", path);
    }
  }
  m.remember_size(path, total);
}

std::vector<std::string> ArrowStorage::list(const std::string& dir) const {
  thread_retries() = 0;
  const Impl& m = *impl_;
  afs::FileSelector selector;
  selector.base_dir = dir;
  selector.recursive = false;
  selector.allow_not_found = true;
  arrow::Result<std::vector<afs::FileInfo>> infos = m.fs->GetFileInfo(selector);
  if (!infos.ok()) m.fail(infos.status(), "list", dir);
  if (infos->empty()) {
    const afs::FileInfo self = m.info(dir, "list");
    if (self.type() == afs::FileType::NotFound) {
      throw_error(ErrorCode::kNotFound, "list " + m.describe(dir) + ": no such directory");
    }
    if (self.type() == afs::FileType::File) {
      throw_error(ErrorCode::kInvalidArgument,
                  "list " + m.describe(dir) + ": is an object, expected a directory (prefix)");
    }
  }
  std::vector<std::string> names;
  names.reserve(infos->size());
  for (const afs::FileInfo& info : *infos) names.push_back(info.base_name());
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

std::vector<std::string> ArrowStorage::glob(const std::string& pattern) const {
  thread_retries() = 0;
  const Impl& m = *impl_;
  const GlobPattern g = parse_glob_pattern(pattern);
  if (g.literal) {
    const afs::FileInfo info = m.info(pattern, "glob");
    if (info.type() == afs::FileType::File) return {pattern};
    return {};
  }
  if (g.prefix.empty() && m.kind != "hdfs") {
    throw_error(ErrorCode::kInvalidArgument,
                "glob " + m.describe(pattern) + ": expected a bucket before the pattern");
  }
  afs::FileSelector selector;
  selector.base_dir = g.dir;
  selector.recursive = false;
  selector.allow_not_found = true;
  arrow::Result<std::vector<afs::FileInfo>> infos = m.fs->GetFileInfo(selector);
  if (!infos.ok()) m.fail(infos.status(), "glob", pattern);
  std::vector<std::string> out;
  for (const afs::FileInfo& info : *infos) {
    if (info.type() != afs::FileType::File) continue;
    const std::string name = info.base_name();
    if (glob_match(g.name_pattern, name)) out.push_back(g.prefix + name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool ArrowStorage::remove(const std::string& path) {
  thread_retries() = 0;
  const Impl& m = *impl_;
  const afs::FileInfo info = m.info(path, "remove");
  if (info.type() == afs::FileType::NotFound) return false;
  if (info.type() == afs::FileType::File) {
    m.forget_size(path);
    const arrow::Status st = m.fs->DeleteFile(path);
    if (!st.ok()) m.fail(st, "remove", path);
    return true;
  }
  afs::FileSelector selector;
  selector.base_dir = path;
  selector.allow_not_found = true;
  arrow::Result<std::vector<afs::FileInfo>> children = m.fs->GetFileInfo(selector);
  if (!children.ok()) m.fail(children.status(), "remove", path);
  if (!children->empty()) {
    throw_error(ErrorCode::kIoError, "remove " + m.describe(path) + ": directory not empty (" +
                                         std::to_string(children->size()) + " entries)");
  }
  const arrow::Status st = m.fs->DeleteDir(path);
  if (!st.ok()) m.fail(st, "remove", path);
  return true;
}

void ArrowStorage::make_dirs(const std::string& path) {
  thread_retries() = 0;
  const Impl& m = *impl_;
  const afs::FileInfo info = m.info(path, "make_dirs");
  if (info.type() == afs::FileType::Directory) return;
  if (info.type() == afs::FileType::File) {
    throw_error(ErrorCode::kInvalidArgument,
                "make_dirs " + m.describe(path) + ": an object is in the way");
  }
  const arrow::Status st = m.fs->CreateDir(path, /*recursive=*/true);
  if (!st.ok()) m.fail(st, "make_dirs", path);
}

std::unique_ptr<Storage> open_arrow_storage(std::string_view uri, std::string* path) {
  ObjectStoreOptions options;
  // AWS_MAX_ATTEMPTS, as the AWS CLI and SDKs read it: tries per request, the first included.
  if (const std::string attempts = env("AWS_MAX_ATTEMPTS"); !attempts.empty()) {
    char* end = nullptr;
    const long n = std::strtol(attempts.c_str(), &end, 10);
    if (end == attempts.c_str() || *end != '\0' || n < 1 || n > 100) {
      throw_error(ErrorCode::kInvalidArgument,
                  "AWS_MAX_ATTEMPTS '" + attempts + "': expected an integer in 1..100");
    }
    options.max_retries = static_cast<int>(n) - 1;
  }
  return ArrowStorage::open(uri, path, options);
}

bool arrow_backend_available() noexcept { return true; }

}  // namespace megatax::io
