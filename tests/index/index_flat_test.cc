// Tests of megatax/index_flat.h against an independent float64 brute-force reference.
//
// The reference sees the same values the index stores: for f16/bf16 the database and the
// queries are rounded (f32_to_f16 / f32_to_bf16 and back) before the float64 computation.
// The kernels use the norm expansion in float, so a returned distance must lie within
// tol = rel(dtype) * (|q|^2 + |x|^2) of the reference distance of the returned id, and the
// returned ids must form a valid top-k: each one's reference distance is at most the
// reference k-th distance + tol. Data is fresh per run (std::random_device; set
// MEGATAX_TEST_SEED to replay a seed printed by a failure).
// Sizes shrink on aarch64 (qemu) and under sanitizers.
#include "megatax/index_flat.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/simd_level.h"
#include "megatax/dtype.h"
#include "megatax/error.h"

namespace megatax {
namespace {

#if defined(__aarch64__) || defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSlow = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSlow = true;
#else
constexpr bool kSlow = false;
#endif
#else
constexpr bool kSlow = false;
#endif

// Fresh seed per run unless MEGATAX_TEST_SEED replays one.
std::uint64_t test_seed() {
  if (const char* env = std::getenv("MEGATAX_TEST_SEED"); env != nullptr && *env != '\0')
    return std::strtoull(env, nullptr, 10);
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

std::vector<float> normal_data(std::mt19937_64& rng, std::int64_t rows, std::int64_t dim) {
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(static_cast<std::size_t>(rows * dim));
  for (float& x : v) x = dist(rng);
  return v;
}

// The values the index stores for `dtype`.
float round_to(DType dtype, float v) {
  switch (dtype) {
    case DType::kF16: return f16_to_f32(f32_to_f16(v));
    case DType::kBF16: return bf16_to_f32(f32_to_bf16(v));
    default: return v;
  }
}
std::vector<float> rounded(const std::vector<float>& v, DType dtype) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = round_to(dtype, v[i]);
  return out;
}

double rel_tol(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 1e-5;
    case DType::kF16: return 1e-4;
    default: return 1e-3;
  }
}

// Float64 reference over already-rounded data: "smaller is nearer" scores (L2 distance, or
// minus the inner product), the metric's own values, and squared norms.
struct Reference {
  std::int64_t nq = 0, n = 0, dim = 0;
  Metric metric = Metric::kL2;
  std::vector<double> value;  // nq x n: L2 distance or inner product
  std::vector<double> qnorm, xnorm;

  Reference(const std::vector<float>& q, const std::vector<float>& x, std::int64_t nq_,
            std::int64_t n_, std::int64_t dim_, Metric m)
      : nq(nq_), n(n_), dim(dim_), metric(m) {
    value.resize(static_cast<std::size_t>(nq * n));
    qnorm.assign(static_cast<std::size_t>(nq), 0.0);
    xnorm.assign(static_cast<std::size_t>(n), 0.0);
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t t = 0; t < dim; ++t) xnorm[j] += double(x[j * dim + t]) * x[j * dim + t];
    for (std::int64_t i = 0; i < nq; ++i) {
      for (std::int64_t t = 0; t < dim; ++t) qnorm[i] += double(q[i * dim + t]) * q[i * dim + t];
      for (std::int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (std::int64_t t = 0; t < dim; ++t) {
          const double a = q[i * dim + t], b = x[j * dim + t];
          acc += metric == Metric::kL2 ? (a - b) * (a - b) : a * b;
        }
        value[i * n + j] = acc;
      }
    }
  }
  double score(std::int64_t i, std::int64_t j) const {
    const double v = value[static_cast<std::size_t>(i * n + j)];
    return metric == Metric::kL2 ? v : -v;
  }
};

// Checks one search result (nq x k) against the reference; see the file comment.
void expect_valid_topk(const Reference& ref, std::int64_t k, const std::vector<float>& dist,
                       const std::vector<std::int64_t>& ids, DType dtype) {
  const double rel = rel_tol(dtype);
  const double max_xnorm = ref.n > 0 ? *std::max_element(ref.xnorm.begin(), ref.xnorm.end()) : 0.0;
  const bool l2 = ref.metric == Metric::kL2;
  const std::int64_t found = std::min(k, ref.n);
  for (std::int64_t i = 0; i < ref.nq; ++i) {
    SCOPED_TRACE("query " + std::to_string(i) + ", k " + std::to_string(k));
    const float* d = dist.data() + i * k;
    const std::int64_t* id = ids.data() + i * k;
    std::vector<double> scores(static_cast<std::size_t>(ref.n));
    for (std::int64_t j = 0; j < ref.n; ++j) scores[j] = ref.score(i, j);
    double kth = 0;
    if (found > 0) {
      std::nth_element(scores.begin(), scores.begin() + (found - 1), scores.end());
      kth = scores[static_cast<std::size_t>(found - 1)];
    }
    const double row_tol = rel * (ref.qnorm[i] + max_xnorm) * 2 + 1e-12;
    std::vector<std::int64_t> seen;
    for (std::int64_t r = 0; r < found; ++r) {
      ASSERT_GE(id[r], 0) << "rank " << r;
      ASSERT_LT(id[r], ref.n) << "rank " << r;
      seen.push_back(id[r]);
      const double want = ref.value[static_cast<std::size_t>(i * ref.n + id[r])];
      const double tol = rel * (ref.qnorm[i] + ref.xnorm[id[r]]) + 1e-12;
      EXPECT_NEAR(d[r], want, tol) << "rank " << r << " id " << id[r];
      EXPECT_LE(ref.score(i, id[r]), kth + row_tol)
          << "rank " << r << " id " << id[r] << " is not among the k nearest";
      if (r > 0) {
        if (l2) {
          EXPECT_LE(d[r - 1], d[r]) << "rank " << r << ": not sorted";
        } else {
          EXPECT_GE(d[r - 1], d[r]) << "rank " << r << ": not sorted";
        }
        if (d[r - 1] == d[r]) {
          EXPECT_LT(id[r - 1], id[r]) << "rank " << r << ": tie order";
        }
      }
      if (l2) {
        EXPECT_GE(d[r], 0.f);
      }
    }
    std::sort(seen.begin(), seen.end());
    EXPECT_TRUE(std::adjacent_find(seen.begin(), seen.end()) == seen.end()) << "duplicate id";
    for (std::int64_t r = found; r < k; ++r) {
      EXPECT_EQ(id[r], -1) << "rank " << r;
      EXPECT_EQ(d[r], l2 ? std::numeric_limits<float>::infinity()
                         : -std::numeric_limits<float>::infinity())
          << "rank " << r;
    }
    if (::testing::Test::HasFailure()) return;  // one broken query is enough to read
  }
}

struct Result {
  std::vector<float> dist;
  std::vector<std::int64_t> ids;
  bool operator==(const Result& o) const {
    return ids == o.ids &&
           std::memcmp(dist.data(), o.dist.data(), dist.size() * sizeof(float)) == 0;
  }
};

Result search(const IndexFlat& index, const std::vector<float>& q, std::int64_t nq, std::int64_t k,
              const SearchOptions& opts = {}) {
  Result r;
  r.dist.assign(static_cast<std::size_t>(nq * k), 12345.f);
  r.ids.assign(static_cast<std::size_t>(nq * k), 12345);
  index.search(nq, q.data(), k, r.dist.data(), r.ids.data(), opts);
  return r;
}

const char* simd_name(kernels::SimdLevel l) { return kernels::simd_level_name(l); }

std::string temp_dir() {
  std::string tmpl = ::testing::TempDir() + "index_flat_test.XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
  return tmpl;
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
        names.push_back(e->d_name);
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

template <typename Fn>
Error expect_error(ErrorCode code, Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e;
  }
  ADD_FAILURE() << "no megatax::Error thrown";
  return Error(ErrorCode::kOk, "");
}

// ---- the shape table ------------------------------------------------------------------

struct DtypeMetric {
  DType dtype;
  Metric metric;
};
std::string param_name(const ::testing::TestParamInfo<DtypeMetric>& info) {
  return std::string(dtype_name(info.param.dtype)) + "_" + metric_name(info.param.metric);
}

class IndexFlatShapes : public ::testing::TestWithParam<DtypeMetric> {};

// Every SIMD level x dims {1, 3, 17, 127, 1000, 1024} x n (below 16, not a multiple of 16)
// x Q {1, 5, 16, 130} x k {1, 100, ntotal, > ntotal}.
TEST_P(IndexFlatShapes, MatchesFloat64Reference) {
  const DType dtype = GetParam().dtype;
  const Metric metric = GetParam().metric;
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (MEGATAX_TEST_SEED to replay)");
  std::mt19937_64 rng(seed);
  const std::vector<kernels::SimdLevel> levels = kernels::supported_simd_levels();

  for (const std::int64_t dim : {1, 3, 17, 127, 1000, 1024}) {
    const bool big = dim >= 1000;
    std::vector<std::int64_t> ns = {1, 7, 15, 37, big ? 161 : 301};
    if (kSlow && big) ns = {7, 37};
    std::vector<std::int64_t> qs = dim <= 17 ? std::vector<std::int64_t>{1, 5, 16, 130}
                                   : big     ? std::vector<std::int64_t>{5}
                                             : std::vector<std::int64_t>{1, 16};
    for (const std::int64_t n : ns) {
      for (const std::int64_t nq : qs) {
        SCOPED_TRACE("dim " + std::to_string(dim) + " n " + std::to_string(n) + " nq " +
                     std::to_string(nq));
        const std::vector<float> x = normal_data(rng, n, dim);
        const std::vector<float> q = normal_data(rng, nq, dim);
        const Reference ref(rounded(q, dtype), rounded(x, dtype), nq, n, dim, metric);
        IndexFlat index(dim, metric, dtype);
        index.add(n, x.data());
        ASSERT_EQ(index.ntotal(), n);
        for (const kernels::SimdLevel level : levels) {
          SCOPED_TRACE(std::string("simd ") + simd_name(level));
          SearchOptions opts;
          opts.simd = simd_name(level);
          opts.threads = 2;
          for (const std::int64_t k : {std::int64_t{1}, std::int64_t{100}, n, n + 7}) {
            const Result r = search(index, q, nq, k, opts);
            expect_valid_topk(ref, k, r.dist, r.ids, dtype);
            if (HasFailure()) return;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, IndexFlatShapes,
                         ::testing::Values(DtypeMetric{DType::kF32, Metric::kL2},
                                           DtypeMetric{DType::kF32, Metric::kInnerProduct},
                                           DtypeMetric{DType::kF16, Metric::kL2},
                                           DtypeMetric{DType::kF16, Metric::kInnerProduct},
                                           DtypeMetric{DType::kBF16, Metric::kL2},
                                           DtypeMetric{DType::kBF16, Metric::kInnerProduct}),
                         param_name);

// ---- determinism ------------------------------------------------------------------------

// Threads 1, 2 and 3 give bit-identical results, also when the database is split in ranges
// (few queries, > 1024 panels) and when the queries span several blocks (Q = 130).
TEST(IndexFlat, ThreadCountDoesNotChangeResults) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // > 1024 panels of 16 rows, so that a few queries are split over 2+ database ranges.
  const std::int64_t dim = kSlow ? 4 : 16, n = kSlow ? 16411 : 40003;
  const std::vector<float> x = normal_data(rng, n, dim);
  const std::vector<DType> dtypes =
      kSlow ? std::vector<DType>{DType::kF32, DType::kBF16}
            : std::vector<DType>{DType::kF32, DType::kF16, DType::kBF16};
  const std::vector<std::int64_t> nqs =
      kSlow ? std::vector<std::int64_t>{1, 130} : std::vector<std::int64_t>{1, 5, 130};
  const std::vector<int> many = kSlow ? std::vector<int>{2} : std::vector<int>{2, 3};
  for (const DType dtype : dtypes) {
    for (const Metric metric : {Metric::kL2, Metric::kInnerProduct}) {
      IndexFlat index(dim, metric, dtype);
      index.add(n, x.data());
      for (const std::int64_t nq : nqs) {
        const std::vector<float> q = normal_data(rng, nq, dim);
        for (const std::int64_t k : {10, 300}) {
          SCOPED_TRACE(std::string(dtype_name(dtype)) + " " + metric_name(metric) + " nq " +
                       std::to_string(nq) + " k " + std::to_string(k));
          SearchOptions one;
          one.threads = 1;
          const Result r1 = search(index, q, nq, k, one);
          for (const int threads : many) {
            SearchOptions opts;
            opts.threads = threads;
            EXPECT_TRUE(search(index, q, nq, k, opts) == r1) << "threads " << threads;
          }
        }
      }
    }
  }
}

// The kernels' numerics contract: for f32 and f16 every SIMD level is bit-identical.
TEST(IndexFlat, SimdLevelsAgreeBitForBitOnF32AndF16) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const DType dtype : {DType::kF32, DType::kF16}) {
    for (const std::int64_t dim : {3, 17, 130}) {
      const std::int64_t n = 531, nq = 9, k = 20;
      const std::vector<float> x = normal_data(rng, n, dim), q = normal_data(rng, nq, dim);
      IndexFlat index(dim, Metric::kL2, dtype);
      index.add(n, x.data());
      SearchOptions scalar;
      scalar.simd = "scalar";
      const Result want = search(index, q, nq, k, scalar);
      for (const kernels::SimdLevel level : kernels::supported_simd_levels()) {
        SearchOptions opts;
        opts.simd = simd_name(level);
        EXPECT_TRUE(search(index, q, nq, k, opts) == want)
            << dtype_name(dtype) << " dim " << dim << " simd " << simd_name(level);
      }
    }
  }
}

// Many equal rows: equal distances come out ids ascending, and the smallest ids win.
// Rows are g[j % groups], so group c holds ids c, c + groups, c + 2 groups, ...
TEST(IndexFlat, TiesGoToTheSmallerId) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  struct Case {
    std::int64_t dim, groups, n;
  };
  const std::int64_t big_n = kSlow ? 16411 : 40003;  // > 1024 panels: split over threads
  for (const Case c : {Case{5, 5, 203}, Case{4, 3, big_n}}) {
    const std::vector<float> g = normal_data(rng, c.groups, c.dim);
    std::vector<float> x(static_cast<std::size_t>(c.n * c.dim));
    for (std::int64_t j = 0; j < c.n; ++j)
      std::copy_n(g.begin() + (j % c.groups) * c.dim, c.dim, x.begin() + j * c.dim);
    const std::int64_t nq = 4;
    const std::vector<float> q = normal_data(rng, nq, c.dim);
    for (const DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      for (const Metric metric : {Metric::kL2, Metric::kInnerProduct}) {
        IndexFlat index(c.dim, metric, dtype);
        index.add(c.n, x.data());
        const Reference ref(rounded(q, dtype), rounded(g, dtype), nq, c.groups, c.dim, metric);
        for (const kernels::SimdLevel level : kernels::supported_simd_levels()) {
          for (const int threads : {1, 2}) {
            for (const std::int64_t k :
                 {std::int64_t{1}, std::int64_t{50}, std::int64_t{120}, c.n + 5}) {
              SCOPED_TRACE(std::string(dtype_name(dtype)) + " " + metric_name(metric) + " simd " +
                           simd_name(level) + " threads " + std::to_string(threads) + " n " +
                           std::to_string(c.n) + " k " + std::to_string(k));
              SearchOptions opts;
              opts.simd = simd_name(level);
              opts.threads = threads;
              const Result r = search(index, q, nq, k, opts);
              for (std::int64_t i = 0; i < nq; ++i) {
                // Expected: groups by reference score, ids ascending inside each group.
                std::vector<std::int64_t> order(static_cast<std::size_t>(c.groups));
                std::iota(order.begin(), order.end(), 0);
                std::sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
                  return ref.score(i, a) < ref.score(i, b);
                });
                std::vector<std::int64_t> want;
                for (const std::int64_t grp : order)
                  for (std::int64_t j = grp; j < c.n; j += c.groups) want.push_back(j);
                want.resize(static_cast<std::size_t>(k), -1);
                const std::vector<std::int64_t> got(r.ids.begin() + i * k,
                                                    r.ids.begin() + (i + 1) * k);
                ASSERT_EQ(got, want) << "query " << i;
              }
            }
          }
        }
      }
    }
  }
}

// ---- building the index -----------------------------------------------------------------

TEST(IndexFlat, SeveralAddsEqualOneAdd) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::int64_t dim = 33, n = 301, nq = 7, k = 25;
  const std::vector<float> x = normal_data(rng, n, dim), q = normal_data(rng, nq, dim);
  for (const DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    IndexFlat whole(dim, Metric::kL2, dtype), parts(dim, Metric::kL2, dtype);
    whole.add(n, x.data());
    std::int64_t done = 0;
    for (const std::int64_t chunk : {1, 15, 17, 0, 16, 100}) {
      parts.add(chunk, x.data() + done * dim);
      done += chunk;
    }
    parts.add(n - done, x.data() + done * dim);
    ASSERT_EQ(parts.ntotal(), n);
    EXPECT_TRUE(search(whole, q, nq, k) == search(parts, q, nq, k)) << dtype_name(dtype);
    std::vector<float> a(dim), b(dim);
    for (std::int64_t i = 0; i < n; ++i) {
      whole.reconstruct(i, a.data());
      parts.reconstruct(i, b.data());
      ASSERT_EQ(a, b) << "row " << i;
      for (std::int64_t t = 0; t < dim; ++t)
        ASSERT_EQ(a[t], round_to(dtype, x[i * dim + t])) << "row " << i << " dim " << t;
    }
  }
}

TEST(IndexFlat, TypedAddsAndQueriesAreRoundedLikeF32) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::int64_t dim = 19, n = 50, nq = 3, k = 10;
  const std::vector<float> x = rounded(normal_data(rng, n, dim), DType::kF16);
  const std::vector<float> q = rounded(normal_data(rng, nq, dim), DType::kF16);
  std::vector<std::uint16_t> xh(x.size()), qh(q.size());
  for (std::size_t i = 0; i < x.size(); ++i) xh[i] = f32_to_f16(x[i]);
  for (std::size_t i = 0; i < q.size(); ++i) qh[i] = f32_to_f16(q[i]);
  IndexFlat from_f32(dim, Metric::kL2, DType::kF16), from_f16(dim, Metric::kL2, DType::kF16);
  from_f32.add(n, x.data());
  from_f16.add(MatrixView(xh.data(), n, dim, DType::kF16));
  const Result want = search(from_f32, q, nq, k);
  Result got;
  got.dist.resize(nq * k);
  got.ids.resize(nq * k);
  from_f16.search(MatrixView(qh.data(), nq, dim, DType::kF16), k, got.dist.data(), got.ids.data());
  EXPECT_TRUE(got == want);
}

TEST(IndexFlat, EmptyIndexAndEmptyQueries) {
  for (const Metric metric : {Metric::kL2, Metric::kInnerProduct}) {
    IndexFlat index(4, metric);
    const std::vector<float> q(8, 0.5f);
    const Result r = search(index, q, 2, 3);
    for (std::size_t i = 0; i < r.ids.size(); ++i) {
      EXPECT_EQ(r.ids[i], -1);
      EXPECT_EQ(r.dist[i], metric == Metric::kL2 ? std::numeric_limits<float>::infinity()
                                                 : -std::numeric_limits<float>::infinity());
    }
    index.search(0, nullptr, 5, nullptr, nullptr);  // no queries: nothing to do
    index.add(0, nullptr);
    EXPECT_EQ(index.ntotal(), 0);
  }
}

TEST(IndexFlat, ResetEmptiesAndKeepsShape) {
  IndexFlat index(3, Metric::kInnerProduct, DType::kBF16);
  const std::vector<float> x = {1, 2, 3, 4, 5, 6};
  index.add(2, x.data());
  index.reset();
  EXPECT_EQ(index.ntotal(), 0);
  EXPECT_EQ(index.dim(), 3);
  EXPECT_EQ(index.dtype(), DType::kBF16);
  EXPECT_EQ(index.metric(), Metric::kInnerProduct);
  index.add(1, x.data() + 3);
  const Result r = search(index, std::vector<float>{1, 0, 0}, 1, 2);
  EXPECT_EQ(r.ids, (std::vector<std::int64_t>{0, -1}));
  EXPECT_EQ(r.dist[0], 4.f);
}

TEST(IndexFlat, FaissStyleNames) {
  IndexFlatL2 l2(8);
  IndexFlatIP ip(8, DType::kF16);
  EXPECT_EQ(l2.metric(), Metric::kL2);
  EXPECT_EQ(l2.dtype(), DType::kF32);
  EXPECT_EQ(ip.metric(), Metric::kInnerProduct);
  EXPECT_EQ(ip.dtype(), DType::kF16);
  EXPECT_STREQ(metric_name(Metric::kL2), "l2");
  EXPECT_STREQ(metric_name(Metric::kInnerProduct), "ip");
  EXPECT_STREQ(backend_name(Backend::kCuda), "cuda");
  EXPECT_EQ(parse_backend("cpu"), Backend::kCpu);
  EXPECT_EQ(parse_backend("auto"), Backend::kAuto);
  const Error e = expect_error(ErrorCode::kInvalidArgument, [] { parse_backend("gpu"); });
  EXPECT_NE(std::string(e.what()).find("'gpu'"), std::string::npos) << e.what();
}

// ---- errors -----------------------------------------------------------------------------

bool contains(const Error& e, const std::string& text) {
  return std::string(e.what()).find(text) != std::string::npos;
}

TEST(IndexFlatErrors, BadConstruction) {
  Error e = expect_error(ErrorCode::kInvalidArgument, [] { IndexFlat(0, Metric::kL2); });
  EXPECT_TRUE(contains(e, "dim must be >= 1, got 0")) << e.what();
  e = expect_error(ErrorCode::kInvalidArgument, [] { IndexFlat(4, Metric::kL2, DType::kU8); });
  EXPECT_TRUE(contains(e, "u8")) << e.what();
  e = expect_error(ErrorCode::kInvalidArgument, [] { IndexFlat(4, static_cast<Metric>(7)); });
  EXPECT_TRUE(contains(e, "metric")) << e.what();
}

TEST(IndexFlatErrors, DimMismatch) {
  IndexFlat index(128, Metric::kL2);
  const std::vector<float> x(64 * 2, 1.f);
  Error e = expect_error(ErrorCode::kInvalidArgument,
                         [&] { index.add(MatrixView(x.data(), 2, 64, DType::kF32)); });
  EXPECT_TRUE(contains(e, "add: vectors have dim 64, index has dim 128")) << e.what();
  EXPECT_EQ(index.ntotal(), 0);
  std::vector<float> d(2), ids_f(2);
  std::vector<std::int64_t> ids(2);
  e = expect_error(ErrorCode::kInvalidArgument, [&] {
    index.search(MatrixView(x.data(), 2, 64, DType::kF32), 1, d.data(), ids.data());
  });
  EXPECT_TRUE(contains(e, "queries have dim 64, index has dim 128")) << e.what();
}

TEST(IndexFlatErrors, BadKAndOptions) {
  IndexFlat index(2, Metric::kL2);
  const std::vector<float> x = {1, 2, 3, 4};
  index.add(2, x.data());
  std::vector<float> d(4);
  std::vector<std::int64_t> ids(4);
  Error e = expect_error(ErrorCode::kInvalidArgument,
                         [&] { index.search(1, x.data(), 0, d.data(), ids.data()); });
  EXPECT_TRUE(contains(e, "k must be >= 1, got 0")) << e.what();
  e = expect_error(ErrorCode::kInvalidArgument,
                   [&] { index.search(1, x.data(), -3, d.data(), ids.data()); });
  EXPECT_TRUE(contains(e, "got -3")) << e.what();
  e = expect_error(ErrorCode::kInvalidArgument,
                   [&] { index.search(1, x.data(), 1, nullptr, ids.data()); });
  EXPECT_TRUE(contains(e, "distances")) << e.what();

  // Backend cuda where it cannot run (no CUDA build: kUnimplemented; no GPU:
  // kFailedPrecondition); on a GPU machine tests/cuda/cuda_index_test checks the searches.
  SearchOptions cuda;
  cuda.backend = Backend::kCuda;
  try {
    index.search(1, x.data(), 1, d.data(), ids.data(), cuda);
    std::printf("note: a CUDA device is visible: the cuda backend searched\n");
  } catch (const Error& err) {
    EXPECT_TRUE(err.code() == ErrorCode::kUnimplemented || err.code() == ErrorCode::kFailedPrecondition)
        << err.what();
    EXPECT_TRUE(contains(err, "backend cuda")) << err.what();
  }

  SearchOptions bad_simd;
  bad_simd.simd = "sse9";
  e = expect_error(ErrorCode::kInvalidArgument,
                   [&] { index.search(1, x.data(), 1, d.data(), ids.data(), bad_simd); });
  EXPECT_TRUE(contains(e, "sse9")) << e.what();

  for (const char* level : {"scalar", "avx2", "avx512", "neon"}) {
    if (kernels::simd_level_supported(kernels::parse_simd_level(level))) continue;
    SearchOptions unsupported;
    unsupported.simd = level;
    e = expect_error(ErrorCode::kUnimplemented,
                     [&] { index.search(1, x.data(), 1, d.data(), ids.data(), unsupported); });
    EXPECT_TRUE(contains(e, level)) << e.what();
  }

  SearchOptions negative;
  negative.threads = -1;
  e = expect_error(ErrorCode::kInvalidArgument,
                   [&] { index.search(1, x.data(), 1, d.data(), ids.data(), negative); });
  EXPECT_TRUE(contains(e, "threads")) << e.what();

  std::vector<float> out(2);
  e = expect_error(ErrorCode::kOutOfRange, [&] { index.reconstruct(2, out.data()); });
  EXPECT_TRUE(contains(e, "id 2 is out of range [0, 2)")) << e.what();
}

TEST(IndexFlatErrors, NonFiniteQueryNamesTheRow) {
  for (const DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    IndexFlat index(3, Metric::kL2, dtype);
    const std::vector<float> x = {1, 2, 3, 4, 5, 6};
    index.add(2, x.data());
    for (const float bad :
         {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
          -std::numeric_limits<float>::infinity()}) {
      std::vector<float> q(5 * 3, 0.25f);
      q[3 * 3 + 1] = bad;
      std::vector<float> d(5);
      std::vector<std::int64_t> ids(5);
      const Error e = expect_error(ErrorCode::kInvalidArgument,
                                   [&] { index.search(5, q.data(), 1, d.data(), ids.data()); });
      EXPECT_TRUE(contains(e, "query row 3")) << e.what();
      EXPECT_TRUE(contains(e, "dim 1")) << e.what();
    }
    // Typed queries are checked too.
    std::vector<std::uint16_t> qh(2 * 3, f32_to_f16(0.5f));
    qh[4] = 0x7E00;  // f16 NaN
    std::vector<float> d(2);
    std::vector<std::int64_t> ids(2);
    const Error e = expect_error(ErrorCode::kInvalidArgument, [&] {
      index.search(MatrixView(qh.data(), 2, 3, DType::kF16), 1, d.data(), ids.data());
    });
    EXPECT_TRUE(contains(e, "query row 1")) << e.what();
  }
  // Finite in f32 but infinite in f16: refused as well.
  IndexFlat half(2, Metric::kL2, DType::kF16);
  const std::vector<float> q = {1.f, 1e6f};
  std::vector<float> d(1);
  std::vector<std::int64_t> ids(1);
  const Error e = expect_error(ErrorCode::kInvalidArgument,
                               [&] { half.search(1, q.data(), 1, d.data(), ids.data()); });
  EXPECT_TRUE(contains(e, "query row 0")) << e.what();
  EXPECT_TRUE(contains(e, "overflows")) << e.what();
}

// The search's (and add's) check of query values against the index dtype, at the edges: a
// value is refused exactly when it is NaN or Inf or rounds to infinity in the index dtype
// (the reference: the public f32 -> f16/bf16 -> f32 round trip), for every f32 bit pattern
// within 3000 ulps of the edges, both signs, and random patterns over the whole range.
TEST(IndexFlatErrors, OverflowCheckMatchesTheRoundTripAtTheEdges) {
  std::mt19937 rng(std::random_device{}());
  for (const DType dtype : {DType::kF16, DType::kBF16}) {
    IndexFlat index(4, Metric::kL2, dtype);
    const std::vector<float> x(4, 1.f);
    index.add(1, x.data());
    const std::uint32_t edge = dtype == DType::kF16 ? 0x477ff000u : 0x7f7f8000u;
    std::vector<std::uint32_t> patterns;
    for (std::uint32_t b = edge - 3000; b <= edge + 3000; ++b) patterns.push_back(b);
    for (std::uint32_t b = 0x7f7ff000u; b <= 0x7f800010u; ++b) patterns.push_back(b);  // to Inf, NaN
    std::uniform_int_distribution<std::uint32_t> any(0, 0x7fffffffu);
    for (int i = 0; i < 20000; ++i) patterns.push_back(any(rng));
    std::int64_t refused = 0, mismatched = 0;
    for (std::size_t i = 0; i < patterns.size(); ++i) {
      for (const std::uint32_t sign : {0u, 0x80000000u}) {
        const std::uint32_t bits = patterns[i] | sign;
        float v;
        std::memcpy(&v, &bits, sizeof v);
        const float back = dtype == DType::kF16 ? f16_to_f32(f32_to_f16(v)) : bf16_to_f32(f32_to_bf16(v));
        const bool want_refused = !std::isfinite(v) || !std::isfinite(back);
        std::vector<float> q(4, 0.5f);
        q[i % 4] = v;
        float d;
        std::int64_t id;
        bool got_refused = false;
        try {
          index.search(1, q.data(), 1, &d, &id);
        } catch (const Error& e) {
          got_refused = e.code() == ErrorCode::kInvalidArgument &&
                        contains(e, "dim " + std::to_string(i % 4)) &&
                        contains(e, "overflows") == std::isfinite(v);
        }
        refused += got_refused;
        if (got_refused != want_refused && ++mismatched <= 5)
          ADD_FAILURE() << dtype_name(dtype) << ": value bits 0x" << std::hex << bits << std::dec
                        << " refused " << got_refused << ", expected " << want_refused;
      }
    }
    EXPECT_EQ(mismatched, 0);
    EXPECT_GT(refused, 3000) << "the edge cases include refused values";
  }
}

// A large add is checked on several threads: the first bad row is still the one named.
TEST(IndexFlatErrors, LargeAddNamesTheFirstBadRow) {
  const std::int64_t n = 300, d = 4096;  // ~1.2M values: several check tasks
  std::vector<float> x(static_cast<std::size_t>(n * d), 0.25f);
  x[static_cast<std::size_t>(250 * d + 7)] = std::numeric_limits<float>::quiet_NaN();
  x[static_cast<std::size_t>(70 * d + 4000)] = 1e6f;  // too large for f16
  x[static_cast<std::size_t>(290 * d)] = 1e6f;
  IndexFlat half(d, Metric::kL2, DType::kF16);
  Error e = expect_error(ErrorCode::kInvalidArgument, [&] { half.add(n, x.data()); });
  EXPECT_TRUE(contains(e, "row 70")) << e.what();
  EXPECT_TRUE(contains(e, "dim 4000")) << e.what();
  EXPECT_EQ(half.ntotal(), 0);
  IndexFlat full(d, Metric::kL2, DType::kF32);  // 1e6 fits f32: the NaN is the first
  e = expect_error(ErrorCode::kInvalidArgument, [&] { full.add(n, x.data()); });
  EXPECT_TRUE(contains(e, "row 250")) << e.what();
  EXPECT_EQ(full.ntotal(), 0);
}

TEST(IndexFlatErrors, NonFiniteAddIsRefusedWhole) {
  for (const DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    IndexFlat index(4, Metric::kL2, dtype);
    const std::vector<float> good(8, 1.f);
    index.add(2, good.data());
    std::vector<float> x(5 * 4, 0.5f);
    x[2 * 4 + 3] = std::numeric_limits<float>::quiet_NaN();
    Error e = expect_error(ErrorCode::kInvalidArgument, [&] { index.add(5, x.data()); });
    EXPECT_TRUE(contains(e, "row 2")) << e.what();
    EXPECT_EQ(index.ntotal(), 2) << "nothing of a refused add is kept";
    x[2 * 4 + 3] = 0.5f;
    x[4 * 4] = -std::numeric_limits<float>::infinity();
    e = expect_error(ErrorCode::kInvalidArgument, [&] { index.add(5, x.data()); });
    EXPECT_TRUE(contains(e, "row 4")) << e.what();
    EXPECT_EQ(index.ntotal(), 2);
    if (dtype == DType::kF16) {
      x[4 * 4] = 70000.f;  // finite, but infinite once rounded to f16
      e = expect_error(ErrorCode::kInvalidArgument, [&] { index.add(5, x.data()); });
      EXPECT_TRUE(contains(e, "row 4")) << e.what();
      EXPECT_TRUE(contains(e, "overflows")) << e.what();
      EXPECT_EQ(index.ntotal(), 2);
    }
    x[4 * 4] = 0.f;
    index.add(5, x.data());
    EXPECT_EQ(index.ntotal(), 7);
  }
}

// ---- files ------------------------------------------------------------------------------

TEST(IndexFlatFiles, SaveLoadRoundTrip) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::string dir = temp_dir();
  const std::int64_t dim = 37, n = 1000, nq = 6, k = 12;
  const std::vector<float> x = normal_data(rng, n, dim), q = normal_data(rng, nq, dim);
  for (const DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (const Metric metric : {Metric::kL2, Metric::kInnerProduct}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " " + metric_name(metric));
      IndexFlat index(dim, metric, dtype);
      index.add(n, x.data());
      const std::string path = dir + "/a.mtx", again = dir + "/b.mtx";
      index.save(path);
      EXPECT_EQ(read_bytes(path).size(), 36 + n * dim * dtype_size(dtype));
      const IndexFlat loaded = IndexFlat::load(path);
      EXPECT_EQ(loaded.ntotal(), n);
      EXPECT_EQ(loaded.dim(), dim);
      EXPECT_EQ(loaded.dtype(), dtype);
      EXPECT_EQ(loaded.metric(), metric);
      EXPECT_TRUE(search(index, q, nq, k) == search(loaded, q, nq, k));
      loaded.save(again);
      EXPECT_EQ(read_bytes(path), read_bytes(again)) << "re-save is not byte-identical";
      index.save(path);  // overwrite an existing file
      EXPECT_EQ(read_bytes(path), read_bytes(again));
    }
  }
  IndexFlat empty(5, Metric::kInnerProduct, DType::kF16);
  empty.save(dir + "/empty.mtx");
  const IndexFlat e = IndexFlat::load(dir + "/empty.mtx");
  EXPECT_EQ(e.ntotal(), 0);
  EXPECT_EQ(e.dim(), 5);
  EXPECT_EQ(list_dir(dir), (std::vector<std::string>{"a.mtx", "b.mtx", "empty.mtx"}))
      << "temporary files left behind";
}

TEST(IndexFlatFiles, HeaderLayout) {
  const std::string dir = temp_dir();
  IndexFlat index(2, Metric::kInnerProduct, DType::kBF16);
  const std::vector<float> x = {1.f, -2.f, 0.5f, 3.f, 0.f, 1.f};
  index.add(3, x.data());
  index.save(dir + "/h.mtx");
  const std::string b = read_bytes(dir + "/h.mtx");
  ASSERT_EQ(b.size(), 36u + 3 * 2 * 2);
  EXPECT_EQ(b.substr(0, 8), "MTXFLAT1");
  auto u32 = [&](std::size_t off) {
    std::uint32_t v;
    std::memcpy(&v, b.data() + off, 4);
    return v;
  };
  auto i64 = [&](std::size_t off) {
    std::int64_t v;
    std::memcpy(&v, b.data() + off, 8);
    return v;
  };
  EXPECT_EQ(u32(8), 1u);   // version
  EXPECT_EQ(u32(12), 1u);  // metric ip
  EXPECT_EQ(u32(16), 2u);  // dtype bf16
  EXPECT_EQ(i64(20), 2);   // dim
  EXPECT_EQ(i64(28), 3);   // ntotal
  for (int i = 0; i < 6; ++i) {
    std::uint16_t h;
    std::memcpy(&h, b.data() + 36 + 2 * i, 2);
    EXPECT_EQ(h, f32_to_bf16(x[i])) << "element " << i;
  }
}

TEST(IndexFlatFiles, LoadErrors) {
  const std::string dir = temp_dir();
  Error e = expect_error(ErrorCode::kNotFound, [&] { IndexFlat::load(dir + "/missing.mtx"); });
  EXPECT_TRUE(contains(e, dir + "/missing.mtx")) << e.what();

  IndexFlat index(4, Metric::kL2, DType::kF16);
  const std::vector<float> x(4 * 10, 0.25f);
  index.add(10, x.data());
  const std::string good_path = dir + "/good.mtx";
  index.save(good_path);
  const std::string good = read_bytes(good_path);
  ASSERT_EQ(good.size(), 36u + 10 * 4 * 2);
  const std::string path = dir + "/bad.mtx";

  auto load_bytes = [&](const std::string& bytes, ErrorCode code) {
    write_bytes(path, bytes);
    return expect_error(code, [&] { IndexFlat::load(path); });
  };

  std::string bad = good;
  bad[0] = 'X';
  e = load_bytes(bad, ErrorCode::kDataLoss);
  EXPECT_TRUE(contains(e, "bad magic")) << e.what();
  EXPECT_TRUE(contains(e, path)) << e.what();

  e = load_bytes(good.substr(0, good.size() - 3), ErrorCode::kDataLoss);
  EXPECT_TRUE(contains(e, "index file " + path + ": truncated: expected 116 bytes, found 113"))
      << e.what();

  e = load_bytes(good.substr(0, 10), ErrorCode::kDataLoss);
  EXPECT_TRUE(contains(e, "truncated")) << e.what();

  e = load_bytes(good + "xyz", ErrorCode::kDataLoss);
  EXPECT_TRUE(contains(e, "expected 116 bytes, found 119")) << e.what();

  auto patched = [&](std::size_t off, const void* v, std::size_t n) {
    std::string s = good;
    std::memcpy(s.data() + off, v, n);
    return s;
  };
  const std::uint32_t two = 2, nine = 9;
  e = load_bytes(patched(8, &two, 4), ErrorCode::kDataLoss);
  EXPECT_TRUE(contains(e, "unsupported version 2")) << e.what();
  e = load_bytes(patched(12, &nine, 4), ErrorCode::kDataLoss);
  EXPECT_TRUE(contains(e, "bad metric 9")) << e.what();
  e = load_bytes(patched(16, &nine, 4), ErrorCode::kDataLoss);
  EXPECT_TRUE(contains(e, "bad dtype 9")) << e.what();
  const std::int64_t zero = 0, minus = -1, huge = std::numeric_limits<std::int64_t>::max() / 2;
  e = load_bytes(patched(20, &zero, 8), ErrorCode::kDataLoss);
  EXPECT_TRUE(contains(e, "bad dim 0")) << e.what();
  e = load_bytes(patched(28, &minus, 8), ErrorCode::kDataLoss);
  EXPECT_TRUE(contains(e, "bad ntotal -1")) << e.what();
  e = load_bytes(patched(28, &huge, 8), ErrorCode::kDataLoss);
  EXPECT_TRUE(contains(e, "ntotal")) << e.what();

  const std::uint16_t nan_bits = 0x7E00;
  e = load_bytes(patched(36 + (7 * 4 + 2) * 2, &nan_bits, 2), ErrorCode::kDataLoss);
  EXPECT_TRUE(contains(e, "row 7")) << e.what();

  e = expect_error(ErrorCode::kInvalidArgument, [&] { IndexFlat::load(dir); });
  EXPECT_TRUE(contains(e, "not a regular file")) << e.what();
}

TEST(IndexFlatFiles, SaveErrorsNameThePathAndLeaveNoTempFile) {
  const std::string dir = temp_dir();
  IndexFlat index(3, Metric::kL2);
  const std::vector<float> x = {1, 2, 3};
  index.add(1, x.data());
  Error e = expect_error(ErrorCode::kIoError, [&] { index.save(dir + "/no/such/dir/x.mtx"); });
  EXPECT_TRUE(contains(e, dir + "/no/such/dir/x.mtx")) << e.what();

  // The target is a directory: rename fails after the data was written; no temp remains.
  ASSERT_EQ(::mkdir((dir + "/taken").c_str(), 0755), 0);
  e = expect_error(ErrorCode::kIoError, [&] { index.save(dir + "/taken"); });
  EXPECT_TRUE(contains(e, dir + "/taken")) << e.what();
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"taken"});
}

}  // namespace
}  // namespace megatax
