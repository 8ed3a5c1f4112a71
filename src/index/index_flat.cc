// index/index_flat.cc -- IndexFlat: a PackedMatrix + a metric, searched by kernels::knn_search.
//
// On-disk format (version 1), all integers little-endian, no padding:
//   offset  size  field
//        0     8  magic "MTXFLAT1"
//        8     4  uint32 version (= 1)
//       12     4  uint32 metric  (Metric: 0 = l2, 1 = ip)
//       16     4  uint32 dtype   (DType: 0 = f32, 1 = f16, 2 = bf16)
//       20     8  int64  dim     (>= 1)
//       28     8  int64  ntotal  (>= 0)
//       36     -  ntotal rows of dim elements of dtype, row-major, little-endian
// The file is exactly 36 + ntotal * dim * dtype_size(dtype) bytes.
#include "megatax/index_flat.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "index/index_flat_cuda.h"
#include "kernels/cpu/knn.h"
#include "kernels/cpu/packed_matrix.h"
#include "kernels/cpu/simd_level.h"
#include "megatax/error.h"

static_assert(std::endian::native == std::endian::little,
              "the index file format stores raw little-endian rows");

namespace megatax {
namespace {

constexpr std::array<char, 8> kMagic = {'M', 'T', 'X', 'F', 'L', 'A', 'T', '1'};
constexpr std::uint32_t kFormatVersion = 1;
constexpr std::int64_t kHeaderBytes = 8 + 4 + 4 + 4 + 8 + 8;  // 36
// Rows are moved to and from files in chunks of at most this many bytes (bounded memory).
constexpr std::int64_t kIoChunkBytes = std::int64_t{8} << 20;
// Largest dim accepted from a file (a sanity bound against corrupt headers).
constexpr std::int64_t kMaxFileDim = std::numeric_limits<std::int32_t>::max();

bool is_index_dtype(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }
bool is_metric(Metric m) { return m == Metric::kL2 || m == Metric::kInnerProduct; }

std::string value_text(float v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
  return buf;
}

// The first element of `x` that is NaN or Inf, or that becomes infinite when rounded to
// `target` (e.g. 70000 into f16); row < 0 when every element is usable.
struct BadValue {
  std::int64_t row = -1;
  std::int64_t dim = 0;
  float value = 0;
  bool overflow = false;  // finite, but infinite once rounded to the index dtype
};

BadValue find_bad_value(const MatrixView& x, DType target) {
  // Values must be finite, and fit the index dtype when they are narrowed to it.
  const DType fits = target != DType::kF32 && x.dtype != target ? target : DType::kF32;
  const kernels::UnstorableValue u = kernels::find_unstorable(x, fits);
  if (u.row < 0) return {};
  return {u.row, u.dim, u.value, std::isfinite(u.value)};
}

// "<what> 3 holds a non-finite value (nan at dim 2)" or
// "<what> 3: value 70000 at dim 2 overflows the index dtype f16".
std::string bad_value_text(const BadValue& b, std::int64_t row, const char* what, DType target) {
  if (b.overflow)
    return std::string(what) + " " + std::to_string(row) + ": value " + value_text(b.value) +
           " at dim " + std::to_string(b.dim) + " overflows the index dtype " + dtype_name(target);
  return std::string(what) + " " + std::to_string(row) + " holds a non-finite value (" +
         value_text(b.value) + " at dim " + std::to_string(b.dim) + ")";
}

void check_finite_rows(const MatrixView& x, DType target, const char* what) {
  const BadValue b = find_bad_value(x, target);
  if (b.row >= 0) throw_error(ErrorCode::kInvalidArgument, bad_value_text(b, b.row, what, target));
}

// ---- little file helpers: errno becomes an Error in one place ----------------------------

[[noreturn]] void throw_io(const std::string& path, const char* action, int err) {
  throw_error(ErrorCode::kIoError,
              "index file " + path + ": " + action + " failed: " + std::strerror(err));
}

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
  int close() {
    const int fd = fd_;
    fd_ = -1;
    return ::close(fd) == 0 ? 0 : errno;
  }

 private:
  int fd_;
};

void write_all(int fd, const void* data, std::size_t n, const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_io(path, "write", errno);
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// Reads exactly n bytes; returns the number read (< n only at end of file).
std::size_t read_full(int fd, void* data, std::size_t n, const std::string& path) {
  auto* p = static_cast<char*>(data);
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, p + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_io(path, "read", errno);
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

template <typename T>
void put_le(std::vector<unsigned char>& out, T v) {
  using U = std::make_unsigned_t<T>;
  const U u = static_cast<U>(v);
  for (std::size_t b = 0; b < sizeof(T); ++b)
    out.push_back(static_cast<unsigned char>(u >> (8 * b)));
}

template <typename T>
T get_le(const unsigned char* p) {
  using U = std::make_unsigned_t<T>;
  U u = 0;
  for (std::size_t b = 0; b < sizeof(T); ++b) u |= static_cast<U>(static_cast<U>(p[b]) << (8 * b));
  return static_cast<T>(u);
}

std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// A moved-from IndexFlat has no Impl: accessors report an empty index, operations throw.
template <typename ImplPtr>
void require_impl(const ImplPtr& impl, const char* op) {
  if (!impl)
    throw_error(ErrorCode::kFailedPrecondition, std::string(op) + ": the index was moved from");
}

}  // namespace

// ---- names ------------------------------------------------------------------------------

const char* backend_name(Backend b) noexcept {
  switch (b) {
    case Backend::kAuto: return "auto";
    case Backend::kCpu: return "cpu";
    case Backend::kCuda: return "cuda";
  }
  return "unknown";
}

Backend parse_backend(const std::string& name) {
  if (name == "auto") return Backend::kAuto;
  if (name == "cpu") return Backend::kCpu;
  if (name == "cuda") return Backend::kCuda;
  throw_error(ErrorCode::kInvalidArgument,
              "backend must be one of auto|cpu|cuda, got '" + name + "'");
}

// ---- IndexFlat --------------------------------------------------------------------------

struct IndexFlat::Impl {
  Impl(std::int64_t dim, Metric metric_, DType dtype) : db(dim, dtype), metric(metric_) {}
  kernels::PackedMatrix db;
  Metric metric;
  // The device copy for Backend::kCuda searches, made by the first one (searches are const
  // and may run concurrently: they share it under the mutex).
  mutable std::mutex gpu_mutex;
  mutable std::unique_ptr<index::CudaFlatMirror> gpu;
  std::uint64_t generation = 0;  // bumped by reset(): the device copy must start over
};

constexpr std::int64_t kMaxCudaK = 4096;  // cuda::topk's limit

IndexFlat::IndexFlat(std::int64_t dim, Metric metric, DType dtype) {
  if (dim < 1)
    throw_error(ErrorCode::kInvalidArgument,
                "IndexFlat: dim must be >= 1, got " + std::to_string(dim));
  if (!is_metric(metric))
    throw_error(ErrorCode::kInvalidArgument, "IndexFlat: metric must be l2 (0) or ip (1), got " +
                                                 std::to_string(static_cast<int>(metric)));
  if (!is_index_dtype(dtype))
    throw_error(ErrorCode::kInvalidArgument,
                std::string("IndexFlat: dtype must be f32, f16 or bf16, got ") + dtype_name(dtype));
  impl_ = std::make_unique<Impl>(dim, metric, dtype);
}

IndexFlat::~IndexFlat() = default;
IndexFlat::IndexFlat(IndexFlat&&) noexcept = default;
IndexFlat& IndexFlat::operator=(IndexFlat&&) noexcept = default;

void IndexFlat::add(const MatrixView& x) {
  require_impl(impl_, "add");
  validate_view(x, "add: vectors");
  if (x.dim != dim())
    throw_error(ErrorCode::kInvalidArgument, "add: vectors have dim " + std::to_string(x.dim) +
                                                 ", index has dim " + std::to_string(dim()));
  if (x.rows == 0) return;
  // Every row checked (NaN, Inf, values that overflow the index dtype) before anything is
  // appended; the packing then need not scan the values again.
  check_finite_rows(x, dtype(), "add: row");
  try {
    impl_->db.append_valid(x);
  } catch (const Error& e) {
    throw Error(e.code(), std::string("add: ") + e.what());
  }
}

void IndexFlat::search(const MatrixView& queries, std::int64_t k, float* distances,
                       std::int64_t* ids, const SearchOptions& options) const {
  require_impl(impl_, "search");
  validate_view(queries, "search: queries");
  if (queries.dim != dim())
    throw_error(ErrorCode::kInvalidArgument, "search: queries have dim " +
                                                 std::to_string(queries.dim) + ", index has dim " +
                                                 std::to_string(dim()));
  if (k < 1)
    throw_error(ErrorCode::kInvalidArgument, "search: k must be >= 1, got " + std::to_string(k));
  if (queries.rows > 0 && k > std::numeric_limits<std::int64_t>::max() / queries.rows)
    throw_error(ErrorCode::kInvalidArgument, "search: k = " + std::to_string(k) + " times " +
                                                 std::to_string(queries.rows) +
                                                 " queries overflows 64 bits");
  if (queries.rows > 0 && (distances == nullptr || ids == nullptr))
    throw_error(
        ErrorCode::kInvalidArgument,
        std::string("search: ") + (distances == nullptr ? "distances" : "ids") + " output is null");
  if (options.threads < 0)
    throw_error(ErrorCode::kInvalidArgument,
                "search: threads must be >= 0 (0 = all hardware threads), got " +
                    std::to_string(options.threads));
  switch (options.backend) {
    case Backend::kAuto:
    case Backend::kCpu: break;
    case Backend::kCuda: break;
    default:
      throw_error(ErrorCode::kInvalidArgument,
                  "search: backend must be auto, cpu or cuda, got " +
                      std::to_string(static_cast<int>(options.backend)));
  }
  kernels::KnnOptions knn;
  knn.threads = options.threads;
  try {
    knn.simd = kernels::resolve_simd_level(kernels::parse_simd_level(options.simd));
  } catch (const Error& e) {
    throw Error(e.code(), std::string("search: simd: ") + e.what());
  }
  if (options.backend == Backend::kCuda) {
    std::lock_guard<std::mutex> lock(impl_->gpu_mutex);
    const std::vector<int> devices = options.devices.empty() ? std::vector<int>{0} : options.devices;
    if (!impl_->gpu || impl_->gpu->devices() != devices) {
      impl_->gpu.reset();  // the old device copy goes first (GPU memory)
      impl_->gpu = index::make_cuda_flat_mirror(devices);
    }
    if (k > kMaxCudaK)
      throw_error(ErrorCode::kInvalidArgument, "search: backend cuda: k = " + std::to_string(k) +
                                                   " is above its maximum " + std::to_string(kMaxCudaK));
    if (queries.rows == 0) return;
    check_finite_rows(queries, dtype(), "search: query row");
    impl_->gpu->sync(impl_->db, impl_->generation);
    impl_->gpu->search(queries, k, impl_->metric, distances, ids);
    return;
  }
  if (queries.rows == 0) return;
  check_finite_rows(queries, dtype(), "search: query row");
  kernels::knn_search(queries, impl_->db, k, impl_->metric, distances, ids, knn);
}

void IndexFlat::reconstruct(std::int64_t i, float* out) const {
  require_impl(impl_, "reconstruct");
  if (i < 0 || i >= ntotal())
    throw_error(ErrorCode::kOutOfRange, "reconstruct: id " + std::to_string(i) +
                                            " is out of range [0, " + std::to_string(ntotal()) +
                                            ")");
  if (out == nullptr) throw_error(ErrorCode::kInvalidArgument, "reconstruct: out is null");
  impl_->db.get_row_f32(i, out);
}

void IndexFlat::reset() noexcept {
  if (impl_) {
    impl_->db.clear();
    ++impl_->generation;  // the device copy starts over at the next CUDA search
  }
}
std::int64_t IndexFlat::ntotal() const noexcept { return impl_ ? impl_->db.rows() : 0; }
std::int64_t IndexFlat::dim() const noexcept { return impl_ ? impl_->db.dim() : 0; }
DType IndexFlat::dtype() const noexcept { return impl_ ? impl_->db.dtype() : DType::kF32; }
Metric IndexFlat::metric() const noexcept { return impl_ ? impl_->metric : Metric::kL2; }

void IndexFlat::save(const std::string& path) const {
  require_impl(impl_, "save");
  if (path.empty()) throw_error(ErrorCode::kInvalidArgument, "save: path is empty");
  const kernels::PackedMatrix& db = impl_->db;

  std::vector<unsigned char> header;
  header.insert(header.end(), kMagic.begin(), kMagic.end());
  put_le<std::uint32_t>(header, kFormatVersion);
  put_le<std::uint32_t>(header, static_cast<std::uint32_t>(impl_->metric));
  put_le<std::uint32_t>(header, static_cast<std::uint32_t>(db.dtype()));
  put_le<std::int64_t>(header, db.dim());
  put_le<std::int64_t>(header, db.rows());

  // A unique temp file beside the target (same file system, so rename is atomic).
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + ".XXXXXX";
  const int raw_fd = ::mkstemp(tmp.data());
  if (raw_fd < 0) throw_io(path, "creating a temporary file", errno);
  Fd fd(raw_fd);
  bool done = false;
  struct Unlinker {
    const std::string& name;
    const bool& done;
    ~Unlinker() {
      if (!done) ::unlink(name.c_str());
    }
  } unlinker{tmp, done};

  if (::fchmod(fd.get(), 0644) != 0) throw_io(path, "chmod of the temporary file", errno);
  write_all(fd.get(), header.data(), header.size(), path);

  const std::size_t row_bytes = static_cast<std::size_t>(db.dim()) * dtype_size(db.dtype());
  const std::int64_t chunk_rows =
      std::max<std::int64_t>(1, kIoChunkBytes / static_cast<std::int64_t>(row_bytes));
  std::vector<unsigned char> chunk(static_cast<std::size_t>(std::min<std::int64_t>(
                                       chunk_rows, std::max<std::int64_t>(db.rows(), 1))) *
                                   row_bytes);
  for (std::int64_t begin = 0; begin < db.rows(); begin += chunk_rows) {
    const std::int64_t count = std::min(chunk_rows, db.rows() - begin);
    db.get_rows_raw(begin, count, chunk.data());
    write_all(fd.get(), chunk.data(), static_cast<std::size_t>(count) * row_bytes, path);
  }
  if (::fsync(fd.get()) != 0) throw_io(path, "fsync", errno);
  if (const int err = fd.close(); err != 0) throw_io(path, "close", err);
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw_io(path, "rename into place", errno);
  done = true;
  // Make the rename durable; best effort (some file systems refuse fsync on directories).
  const int dir_fd = ::open(parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    (void)::fsync(dir_fd);
    ::close(dir_fd);
  }
}

IndexFlat IndexFlat::load(const std::string& path) {
  const std::string where = "index file " + path + ": ";
  const int raw_fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw_fd < 0) {
    const int err = errno;
    if (err == ENOENT) throw_error(ErrorCode::kNotFound, where + "not found");
    throw_io(path, "open", err);
  }
  Fd fd(raw_fd);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_io(path, "stat", errno);
  if (!S_ISREG(st.st_mode)) throw_error(ErrorCode::kInvalidArgument, where + "not a regular file");
  const std::int64_t file_size = st.st_size;

  std::array<unsigned char, kHeaderBytes> h{};
  const std::size_t got = read_full(fd.get(), h.data(), h.size(), path);
  if (got < h.size())
    throw_error(ErrorCode::kDataLoss, where + "truncated: expected a " +
                                          std::to_string(kHeaderBytes) + "-byte header, found " +
                                          std::to_string(got) + " bytes");
  if (std::memcmp(h.data(), kMagic.data(), kMagic.size()) != 0)
    throw_error(ErrorCode::kDataLoss, where + "bad magic (not a MTXFLAT1 index file)");
  const auto version = get_le<std::uint32_t>(h.data() + 8);
  const auto metric_raw = get_le<std::uint32_t>(h.data() + 12);
  const auto dtype_raw = get_le<std::uint32_t>(h.data() + 16);
  const auto dim = get_le<std::int64_t>(h.data() + 20);
  const auto ntotal = get_le<std::int64_t>(h.data() + 28);
  if (version != kFormatVersion)
    throw_error(ErrorCode::kDataLoss, where + "unsupported version " + std::to_string(version) +
                                          " (this build reads version " +
                                          std::to_string(kFormatVersion) + ")");
  if (metric_raw > 1)
    throw_error(ErrorCode::kDataLoss, where + "bad metric " + std::to_string(metric_raw) +
                                          " (expected 0 = l2 or 1 = ip)");
  if (dtype_raw > 2)
    throw_error(ErrorCode::kDataLoss, where + "bad dtype " + std::to_string(dtype_raw) +
                                          " (expected 0 = f32, 1 = f16 or 2 = bf16)");
  if (dim < 1 || dim > kMaxFileDim)
    throw_error(ErrorCode::kDataLoss, where + "bad dim " + std::to_string(dim) + " (expected 1.." +
                                          std::to_string(kMaxFileDim) + ")");
  if (ntotal < 0)
    throw_error(ErrorCode::kDataLoss,
                where + "bad ntotal " + std::to_string(ntotal) + " (expected >= 0)");
  const auto metric = static_cast<Metric>(metric_raw);
  const auto dtype = static_cast<DType>(dtype_raw);
  const std::int64_t row_bytes = dim * static_cast<std::int64_t>(dtype_size(dtype));
  if (ntotal > (std::numeric_limits<std::int64_t>::max() - kHeaderBytes) / row_bytes)
    throw_error(ErrorCode::kDataLoss, where + "bad ntotal " + std::to_string(ntotal) +
                                          " (the data size overflows 64 bits)");
  const std::int64_t expected = kHeaderBytes + ntotal * row_bytes;
  if (file_size < expected)
    throw_error(ErrorCode::kDataLoss, where + "truncated: expected " + std::to_string(expected) +
                                          " bytes, found " + std::to_string(file_size));
  if (file_size > expected)
    throw_error(ErrorCode::kDataLoss, where + "expected " + std::to_string(expected) +
                                          " bytes, found " + std::to_string(file_size) +
                                          " (trailing data)");

  IndexFlat index(dim, metric, dtype);
  kernels::PackedMatrix& db = index.impl_->db;
  db.reserve(ntotal);
  const std::int64_t chunk_rows = std::max<std::int64_t>(1, kIoChunkBytes / row_bytes);
  std::vector<unsigned char> chunk(static_cast<std::size_t>(
      std::min(chunk_rows, std::max<std::int64_t>(ntotal, 1)) * row_bytes));
  for (std::int64_t begin = 0; begin < ntotal; begin += chunk_rows) {
    const std::int64_t count = std::min(chunk_rows, ntotal - begin);
    const std::size_t want = static_cast<std::size_t>(count * row_bytes);
    const std::size_t n = read_full(fd.get(), chunk.data(), want, path);
    if (n < want)  // the file shrank after fstat
      throw_error(
          ErrorCode::kDataLoss,
          where + "truncated: expected " + std::to_string(expected) + " bytes, found " +
              std::to_string(kHeaderBytes + begin * row_bytes + static_cast<std::int64_t>(n)));
    // A corrupt file must not plant NaN/Inf rows that search() would trip over.
    const BadValue bad = find_bad_value(MatrixView(chunk.data(), count, dim, dtype), dtype);
    if (bad.row >= 0)
      throw_error(ErrorCode::kDataLoss, where + bad_value_text(bad, begin + bad.row, "row", dtype));
    db.append_raw(chunk.data(), count);
  }
  return index;
}

}  // namespace megatax
