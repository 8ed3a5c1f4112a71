#include "taxonomy/hnsw_index.h"

#include <hnswlib/hnswlib.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "megatax/error.h"

namespace megatax::taxonomy {
namespace {

// Distance kernels in hnswlib's signature (param -> dim as size_t). Sequential sums in the
// scalar forms (no reassociation), fixed lane order in the AVX2 forms: the same bits on every
// CPU of a kind.
float l2_scalar(const void* a, const void* b, const void* param) {
  const std::size_t d = *static_cast<const std::size_t*>(param);
  const float* x = static_cast<const float*>(a);
  const float* y = static_cast<const float*>(b);
  float s = 0;
  for (std::size_t j = 0; j < d; ++j) {
    const float t = x[j] - y[j];
    s += t * t;
  }
  return s;
}
float ip_scalar(const void* a, const void* b, const void* param) {
  const std::size_t d = *static_cast<const std::size_t*>(param);
  const float* x = static_cast<const float*>(a);
  const float* y = static_cast<const float*>(b);
  float s = 0;
  for (std::size_t j = 0; j < d; ++j) s += x[j] * y[j];
  return 1.0f - s;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) float hsum256(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
__attribute__((target("avx2,fma"))) float l2_avx2(const void* a, const void* b, const void* param) {
  const std::size_t d = *static_cast<const std::size_t*>(param);
  const float* x = static_cast<const float*>(a);
  const float* y = static_cast<const float*>(b);
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  std::size_t j = 0;
  for (; j + 16 <= d; j += 16) {
    const __m256 t0 = _mm256_sub_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j));
    const __m256 t1 = _mm256_sub_ps(_mm256_loadu_ps(x + j + 8), _mm256_loadu_ps(y + j + 8));
    s0 = _mm256_fmadd_ps(t0, t0, s0);
    s1 = _mm256_fmadd_ps(t1, t1, s1);
  }
  for (; j + 8 <= d; j += 8) {
    const __m256 t0 = _mm256_sub_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j));
    s0 = _mm256_fmadd_ps(t0, t0, s0);
  }
  float s = hsum256(_mm256_add_ps(s0, s1));
  for (; j < d; ++j) {
    const float t = x[j] - y[j];
    s += t * t;
  }
  return s;
}
__attribute__((target("avx2,fma"))) float ip_avx2(const void* a, const void* b, const void* param) {
  const std::size_t d = *static_cast<const std::size_t*>(param);
  const float* x = static_cast<const float*>(a);
  const float* y = static_cast<const float*>(b);
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  std::size_t j = 0;
  for (; j + 16 <= d; j += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + j + 8), _mm256_loadu_ps(y + j + 8), s1);
  }
  for (; j + 8 <= d; j += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j), s0);
  float s = hsum256(_mm256_add_ps(s0, s1));
  for (; j < d; ++j) s += x[j] * y[j];
  return 1.0f - s;
}
bool have_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#endif

// hnswlib's space over our kernels.
class Space final : public hnswlib::SpaceInterface<float> {
 public:
  Space(Metric metric, std::int64_t dim, bool vectorised) : dim_(static_cast<std::size_t>(dim)) {
    fn_ = metric == Metric::kL2 ? l2_scalar : ip_scalar;
#if defined(__x86_64__)
    if (vectorised && have_avx2()) fn_ = metric == Metric::kL2 ? l2_avx2 : ip_avx2;
#else
    (void)vectorised;
#endif
  }
  std::size_t get_data_size() override { return dim_ * sizeof(float); }
  hnswlib::DISTFUNC<float> get_dist_func() override { return fn_; }
  void* get_dist_func_param() override { return &dim_; }

 private:
  std::size_t dim_;
  hnswlib::DISTFUNC<float> fn_;
};

// hnswlib 0.6 reads and writes indexes through file paths only; bytes go through a private
// temporary file (removed on every path out).
class TempFile {
 public:
  TempFile() {
    static std::atomic<std::uint64_t> counter{0};
    path_ = (std::filesystem::temp_directory_path() /
             ("megatax-hnsw-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1)) + ".bin"))
                .string();
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

struct CentroidGraph::Impl {
  std::unique_ptr<hnswlib::SpaceInterface<float>> space;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> index;
  Metric metric = Metric::kL2;
};

CentroidGraph::CentroidGraph(std::unique_ptr<Impl> impl, std::int64_t rows) : impl_(std::move(impl)), rows_(rows) {}
CentroidGraph::~CentroidGraph() = default;

namespace {
std::unique_ptr<hnswlib::SpaceInterface<float>> make_space(Metric metric, std::int64_t dim, bool vectorised) {
  return std::make_unique<Space>(metric, dim, vectorised);
}
}  // namespace

std::unique_ptr<CentroidGraph> CentroidGraph::build(const float* centroids, std::int64_t rows, std::int64_t dim,
                                                    Metric metric, const HnswParams& params) {
  if (rows < 1 || dim < 1) throw_error(ErrorCode::kInvalidArgument, "hnsw: need at least one centroid");
  auto impl = std::make_unique<Impl>();
  impl->metric = metric;
  impl->space = make_space(metric, dim, params.vectorised);
  impl->index = std::make_unique<hnswlib::HierarchicalNSW<float>>(
      impl->space.get(), static_cast<std::size_t>(rows), static_cast<std::size_t>(params.m),
      static_cast<std::size_t>(params.ef_construction), static_cast<std::size_t>(params.seed));
  // One thread, insertion in row order: the graph is a function of the centroids alone.
  for (std::int64_t i = 0; i < rows; ++i)
    impl->index->addPoint(centroids + i * dim, static_cast<hnswlib::labeltype>(i));
  impl->index->setEf(static_cast<std::size_t>(std::max<std::int64_t>(1, params.ef)));
  return std::unique_ptr<CentroidGraph>(new CentroidGraph(std::move(impl), rows));
}

std::unique_ptr<CentroidGraph> CentroidGraph::load(const std::string& bytes, std::int64_t rows, std::int64_t dim,
                                                   Metric metric, const HnswParams& params,
                                                   const std::string& what) {
  TempFile tmp;
  {
    std::ofstream out(tmp.path(), std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw_error(ErrorCode::kInternal, what + ": cannot stage the graph in " + tmp.path());
  }
  auto impl = std::make_unique<Impl>();
  impl->metric = metric;
  impl->space = make_space(metric, dim, params.vectorised);
  try {
    impl->index = std::make_unique<hnswlib::HierarchicalNSW<float>>(impl->space.get(), tmp.path());
  } catch (const std::exception& e) {
    throw_error(ErrorCode::kDataLoss, what + ": not a readable HNSW graph (" + e.what() + ")");
  }
  if (static_cast<std::int64_t>(impl->index->cur_element_count) != rows ||
      impl->index->data_size_ != static_cast<std::size_t>(dim) * sizeof(float))
    throw_error(ErrorCode::kDataLoss, what + ": graph of " + std::to_string(impl->index->cur_element_count) +
                                          " points, expected " + std::to_string(rows) + " of dim " +
                                          std::to_string(dim));
  impl->index->setEf(static_cast<std::size_t>(std::max<std::int64_t>(1, params.ef)));
  return std::unique_ptr<CentroidGraph>(new CentroidGraph(std::move(impl), rows));
}

std::string CentroidGraph::serialize() const {
  TempFile tmp;
  impl_->index->saveIndex(tmp.path());
  std::ifstream in(tmp.path(), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty()) throw_error(ErrorCode::kInternal, "hnsw: cannot serialise the graph through " + tmp.path());
  return bytes;
}

void CentroidGraph::set_ef(std::int64_t ef) {
  impl_->index->setEf(static_cast<std::size_t>(std::max<std::int64_t>(1, ef)));
}

void CentroidGraph::search(const float* x, std::int64_t* label, float* distance) const {
  auto top = impl_->index->searchKnn(x, 1);
  // top holds one (distance, label); an empty result cannot happen on a non-empty graph.
  const auto& best = top.top();
  *label = static_cast<std::int64_t>(best.second);
  *distance = impl_->metric == Metric::kL2 ? best.first : 1.0f - best.first;
}

}  // namespace megatax::taxonomy
