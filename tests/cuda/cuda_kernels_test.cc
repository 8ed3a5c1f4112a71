// The CUDA kernels (assign, top-k, accumulate, row norms) against a CPU float64 reference on
// fresh random data, over shape tables that include sizes that are not tile multiples, one-row
// cases, d = 1 .. 2048, strided views and duplicate (tied) centroids.
//
// A plain executable (no GoogleTest, so it builds where GoogleTest is missing): every check
// prints what it compared; the exit code is the number of failed cases (capped at 100), 0 if
// all passed. Needs a CUDA device.
//
//   cuda_kernels_test [--seed S] [--small]
//     --seed S   reproduce a run (the seed is printed; default: std::random_device)
//     --small    one small case per kernel (for compute-sanitizer)
//
// Reference and tolerances. Inputs are rounded to the kernel's dtype first and the reference
// is computed in float64 on the rounded values, so the only differences left are the
// kernel's float32 arithmetic: ||x||^2 + ||c||^2 - 2<x,c> accumulated in f32 over d terms.
// Its error is bounded by about d * 2^-24 * (||x||^2 + ||c||^2) and is typically
// sqrt(d) * 2^-24 times that; we allow
//     tol = rel * (||x||^2 + ||c||^2),   rel = 1e-4 (f32: 3xTF32 or FFMA), 1e-3 (f16/bf16)
// (3xTF32 adds at most ~2^-21 |x_j c_j| a product: ~2^-22 (||x||^2 + ||c||^2) in all).
// A label (or a top-k member) is accepted when its reference distance is within tol of the
// best (the k-th best); everything else must match exactly, and reported distances must be
// within tol of the reference distance of the returned id. "exact" in the output counts the
// rows whose label equals the reference argmin outright (expected ~100%); "tie-ok" the rows
// accepted by the tolerance only. Top-k "recall" is the plain |GPU ∩ reference| / k; the
// check is the tie-aware recall (members within tol of the k-th distance count), which must
// be 1.0 -- on the f32 path the plain recall is 1.0 except for such ties.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime_api.h>
#include <sys/mman.h>
#include <unistd.h>

#include "megatax/cuda.h"
#include "megatax/dtype.h"
#include "megatax/error.h"

namespace mc = megatax::cuda;
using megatax::DType;
using megatax::MatrixView;
using megatax::Metric;

namespace {

int g_failures = 0;
int g_cases = 0;

#define CHECK_OR_FAIL(cond, ...)              \
  do {                                        \
    if (!(cond)) {                            \
      std::printf("    FAILED: " __VA_ARGS__); \
      std::printf("\n");                      \
      ok = false;                             \
    }                                         \
  } while (0)

void report(const std::string& name, bool ok, const std::string& detail) {
  ++g_cases;
  if (!ok) ++g_failures;
  std::printf("  [%s] %s  %s\n", ok ? " ok " : "FAIL", name.c_str(), detail.c_str());
  std::fflush(stdout);
}

void parallel_for(std::int64_t n, const std::function<void(std::int64_t)>& f) {
  const int threads = std::max(1u, std::min(64u, std::thread::hardware_concurrency()));
  std::atomic<std::int64_t> next{0};
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (std::int64_t i = next++; i < n; i = next++) f(i);
    });
  }
  for (auto& th : pool) th.join();
}

// A host matrix in a kernel dtype (with row stride) plus its rounded values in double.
struct HostMatrix {
  std::int64_t rows = 0, d = 0, stride = 0;
  DType dtype = DType::kF32;
  std::vector<unsigned char> bytes;  // rows * stride elements; padding holds NaN
  std::vector<double> v;             // rows * d rounded values
  double at(std::int64_t i, std::int64_t j) const { return v[i * d + j]; }
  double norm(std::int64_t i) const {
    double s = 0;
    for (std::int64_t j = 0; j < d; ++j) s += at(i, j) * at(i, j);
    return s;
  }
};

HostMatrix make_matrix(std::int64_t rows, std::int64_t d, std::int64_t stride, DType dtype,
                       const std::vector<float>& values) {
  HostMatrix m;
  m.rows = rows;
  m.d = d;
  m.stride = stride;
  m.dtype = dtype;
  const std::size_t es = megatax::dtype_size(dtype);
  m.bytes.assign(static_cast<std::size_t>(rows * stride) * es, 0);
  // Padding = NaN, so a kernel that reads past d shows it.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> row(static_cast<std::size_t>(stride), nan);
  m.v.resize(static_cast<std::size_t>(rows * d));
  std::vector<float> back(static_cast<std::size_t>(d));
  for (std::int64_t i = 0; i < rows; ++i) {
    std::copy(values.begin() + i * d, values.begin() + (i + 1) * d, row.begin());
    megatax::convert_from_f32(row.data(), static_cast<std::size_t>(stride), dtype,
                              m.bytes.data() + static_cast<std::size_t>(i * stride) * es);
    megatax::convert_to_f32(dtype, m.bytes.data() + static_cast<std::size_t>(i * stride) * es,
                            static_cast<std::size_t>(d), back.data());
    for (std::int64_t j = 0; j < d; ++j) m.v[i * d + j] = back[j];
  }
  return m;
}

struct DeviceMatrix {
  mc::DeviceBuffer buf;
  MatrixView view;
};

DeviceMatrix upload(mc::Resources& res, const HostMatrix& m) {
  DeviceMatrix dm;
  dm.buf = mc::DeviceBuffer(std::max<std::size_t>(m.bytes.size(), 16));
  mc::copy_to_device(res, dm.buf.data(), m.bytes.data(), m.bytes.size());
  dm.view = MatrixView(dm.buf.data(), m.rows, m.d, m.dtype, m.stride);
  return dm;
}

template <class T>
std::vector<T> download(mc::Resources& res, const mc::DeviceBuffer& b, std::size_t count) {
  std::vector<T> out(count);
  mc::copy_to_host(res, out.data(), b.data(), count * sizeof(T));
  return out;
}

// Data: "blobs" (points around random centres) or "uniform" (no structure: many near-ties).
std::vector<float> random_values(std::mt19937_64& rng, std::int64_t rows, std::int64_t d,
                                 float scale) {
  std::normal_distribution<float> g(0.f, scale);
  std::vector<float> v(static_cast<std::size_t>(rows * d));
  for (auto& x : v) x = g(rng);
  return v;
}

std::vector<float> blob_values(std::mt19937_64& rng, const std::vector<float>& centres,
                               std::int64_t ncentres, std::int64_t rows, std::int64_t d,
                               float noise) {
  std::uniform_int_distribution<std::int64_t> pick(0, ncentres - 1);
  std::normal_distribution<float> g(0.f, noise);
  std::vector<float> v(static_cast<std::size_t>(rows * d));
  for (std::int64_t i = 0; i < rows; ++i) {
    const std::int64_t c = pick(rng);
    for (std::int64_t j = 0; j < d; ++j) v[i * d + j] = centres[c * d + j] + g(rng);
  }
  return v;
}

double dtype_rel_tol(DType t) { return t == DType::kF32 ? 1e-4 : 1e-3; }

// "Distance" for ranking: L2 = squared distance; IP = -similarity (smaller is nearer).
double ref_score(const HostMatrix& x, std::int64_t i, const HostMatrix& c, std::int64_t j,
                 Metric metric) {
  double s = 0;
  if (metric == Metric::kL2) {
    for (std::int64_t e = 0; e < x.d; ++e) {
      const double t = x.at(i, e) - c.at(j, e);
      s += t * t;
    }
    return s;
  }
  for (std::int64_t e = 0; e < x.d; ++e) s += x.at(i, e) * c.at(j, e);
  return -s;
}

const char* metric_str(Metric m) { return m == Metric::kL2 ? "L2" : "IP"; }

// ---- assign -------------------------------------------------------------------------------

struct AssignCase {
  std::int64_t n, k, d;
  DType dtype;
  Metric metric = Metric::kL2;
  bool uniform = false;     // uniform data (near-ties) instead of blobs
  std::int64_t pad = 0;     // stride = d + pad
  bool dup = false;         // duplicate centroids (exact ties)
  bool label32 = false;
  bool given_norms = false; // pass x / c norms computed by row_norms
};

void test_assign(mc::Resources& res, std::mt19937_64& rng, const AssignCase& tc) {
  const std::int64_t n = tc.n, k = tc.k, d = tc.d;
  std::vector<float> cv = random_values(rng, k, d, 1.f);
  if (tc.dup && k >= 4) {
    // c[k-1] = c[1] and c[k-2] = c[0]: points near them must get the smaller index.
    std::copy(cv.begin() + 1 * d, cv.begin() + 2 * d, cv.begin() + (k - 1) * d);
    std::copy(cv.begin(), cv.begin() + d, cv.begin() + (k - 2) * d);
  }
  std::vector<float> xv = tc.uniform ? random_values(rng, n, d, 1.f)
                                     : blob_values(rng, cv, k, n, d, 0.3f);
  const HostMatrix x = make_matrix(n, d, d + tc.pad, tc.dtype, xv);
  const HostMatrix c = make_matrix(k, d, d + tc.pad, tc.dtype, cv);
  DeviceMatrix dx = upload(res, x), dc = upload(res, c);

  mc::DeviceBuffer labels(static_cast<std::size_t>(n) * 8), dist(static_cast<std::size_t>(n) * 4);
  mc::DeviceBuffer xn(static_cast<std::size_t>(n) * 4 + 4), cn(static_cast<std::size_t>(k) * 4);
  mc::AssignArgs a;
  a.metric = tc.metric;
  a.x = dx.view;
  a.centroids = dc.view;
  a.label_type = tc.label32 ? mc::IndexType::kI32 : mc::IndexType::kI64;
  a.labels = labels.data();
  a.distances = dist.as<float>();
  if (tc.given_norms) {
    mc::row_norms(res, dx.view, xn.as<float>());
    mc::row_norms(res, dc.view, cn.as<float>());
    a.x_norms = xn.as<float>();
    a.c_norms = cn.as<float>();
  }
  mc::assign(res, a);
  res.synchronize();

  std::vector<std::int64_t> lab(static_cast<std::size_t>(n));
  if (tc.label32) {
    auto l32 = download<std::int32_t>(res, labels, static_cast<std::size_t>(n));
    std::copy(l32.begin(), l32.end(), lab.begin());
  } else {
    lab = download<std::int64_t>(res, labels, static_cast<std::size_t>(n));
  }
  const auto gd = download<float>(res, dist, static_cast<std::size_t>(n));

  std::vector<double> cnorm(static_cast<std::size_t>(k));
  for (std::int64_t j = 0; j < k; ++j) cnorm[j] = c.norm(j);
  const double rel = dtype_rel_tol(tc.dtype);
  std::atomic<std::int64_t> exact{0}, tie_ok{0}, bad{0}, bad_dist{0}, bad_dup{0};
  std::atomic<std::int64_t> first_bad{-1};
  std::vector<double> max_err_t(static_cast<std::size_t>(n), 0.0);
  parallel_for(n, [&](std::int64_t i) {
    const double xn_i = x.norm(i);
    double best = std::numeric_limits<double>::infinity();
    std::int64_t arg = -1;
    for (std::int64_t j = 0; j < k; ++j) {
      const double s = ref_score(x, i, c, j, tc.metric);
      if (s < best) {
        best = s;
        arg = j;
      }
    }
    const std::int64_t g = lab[i];
    if (g < 0 || g >= k) {
      ++bad;
      first_bad = i;
      return;
    }
    const double sg = ref_score(x, i, c, g, tc.metric);
    const double tol = rel * (xn_i + std::max(cnorm[g], cnorm[arg]));
    if (g == arg) {
      ++exact;
    } else if (sg - best <= tol) {
      ++tie_ok;
    } else {
      ++bad;
      first_bad = i;
    }
    // Exact duplicates tie exactly: the smaller index must win.
    if (tc.dup && k >= 4 && (g == k - 1 || g == k - 2)) ++bad_dup;
    const double want = tc.metric == Metric::kL2 ? sg : -sg;
    const double err = std::fabs(static_cast<double>(gd[i]) - want);
    max_err_t[i] = err / (xn_i + cnorm[g]);
    if (!(err <= tol)) ++bad_dist;
  });
  const double max_err = *std::max_element(max_err_t.begin(), max_err_t.end());
  bool ok = true;
  CHECK_OR_FAIL(bad == 0, "%lld rows with a wrong label (e.g. row %lld)", (long long)bad.load(),
                (long long)first_bad.load());
  CHECK_OR_FAIL(bad_dist == 0, "%lld rows with a distance off by more than tol",
                (long long)bad_dist.load());
  CHECK_OR_FAIL(bad_dup == 0, "%lld rows took the larger index of two equal centroids",
                (long long)bad_dup.load());
  char name[256], detail[256];
  std::snprintf(name, sizeof(name), "assign %-4s %s n=%lld k=%lld d=%lld%s%s%s%s%s",
                megatax::dtype_name(tc.dtype), metric_str(tc.metric), (long long)n,
                (long long)k, (long long)d, tc.pad ? " strided" : "",
                tc.uniform ? " uniform" : "", tc.dup ? " dup" : "", tc.label32 ? " i32" : "",
                tc.given_norms ? " norms-given" : "");
  std::snprintf(detail, sizeof(detail), "exact %.2f%% tie-ok %lld, max dist err %.1e (rel)",
                100.0 * exact.load() / n, (long long)tie_ok.load(), max_err);
  report(name, ok, detail);
}

// A row's distance must not depend on where the row sits in the matrix (its batch and, in
// a fit, its group): assign of X and of X behind `shift` other rows give the same bits per
// row (the fused norms once summed a row's pieces in the swizzled order of its tile slot).
void test_assign_position_free(mc::Resources& res, std::mt19937_64& rng, DType dtype) {
  const std::int64_t n = 3000, k = 200, d = 320;
  const std::vector<float> cv = random_values(rng, k, d, 1.f);
  const std::vector<float> xv = blob_values(rng, cv, k, n, d, 0.3f);
  const HostMatrix c = make_matrix(k, d, d, dtype, cv);
  DeviceMatrix dc = upload(res, c);
  auto run = [&](std::int64_t shift) {
    std::vector<float> rows = random_values(rng, shift, d, 1.f);
    rows.insert(rows.end(), xv.begin(), xv.end());
    const HostMatrix x = make_matrix(n + shift, d, d, dtype, rows);
    DeviceMatrix dx = upload(res, x);
    mc::DeviceBuffer labels(static_cast<std::size_t>(n + shift) * 8), dist(static_cast<std::size_t>(n + shift) * 4);
    mc::AssignArgs a;
    a.metric = Metric::kL2;
    a.x = dx.view;
    a.centroids = dc.view;
    a.labels = labels.data();
    a.distances = dist.as<float>();
    mc::assign(res, a);
    res.synchronize();
    auto all = download<float>(res, dist, static_cast<std::size_t>(n + shift));
    return std::vector<float>(all.begin() + shift, all.end());
  };
  const std::vector<float> base = run(0);
  std::int64_t differ = 0;
  for (const std::int64_t shift : {1, 3, 5, 7}) {
    const std::vector<float> moved = run(shift);
    for (std::int64_t i = 0; i < n; ++i) differ += std::memcmp(&base[i], &moved[i], sizeof(float)) != 0;
  }
  bool ok = true;
  CHECK_OR_FAIL(differ == 0, "%lld distances changed with the rows' position", (long long)differ);
  char name[128];
  std::snprintf(name, sizeof(name), "assign %-4s l2 n=%lld k=%lld d=%lld: a row's distance bits do not depend on its position",
                megatax::dtype_name(dtype), (long long)n, (long long)k, (long long)d);
  report(name, ok, "shifts 1, 3, 5, 7 rows");
}

// ---- grouped assign ---------------------------------------------------------------------------

struct GroupedCase {
  std::int64_t groups, max_rows, max_children, d;  // group sizes drawn in [0, max_rows]
  DType dtype;
  Metric metric = Metric::kL2;
  std::int64_t pad = 0;
  bool skip_some = false;  // about a third of the groups skipped (their rows left as they were)
};

void test_assign_grouped(mc::Resources& res, std::mt19937_64& rng, const GroupedCase& tc) {
  const std::int64_t G = tc.groups, d = tc.d;
  std::uniform_int_distribution<std::int64_t> rows_of(0, tc.max_rows), kids_of(1, tc.max_children);
  // Centroid ranges are disjoint, in order, with gaps (unused centroids) between some.
  std::vector<std::int64_t> rb{0}, cb, ce;
  std::int64_t next_c = 0;
  for (std::int64_t g = 0; g < G; ++g) {
    rb.push_back(rb.back() + rows_of(rng));
    next_c += g % 3 == 1 ? 5 : 0;
    cb.push_back(next_c);
    next_c += kids_of(rng);
    ce.push_back(next_c);
  }
  const std::int64_t n = rb.back(), K = next_c;
  std::vector<float> cv = random_values(rng, K, d, 1.f);
  // Each group's rows lie near its own centroids (blobs per group).
  std::vector<float> xv(static_cast<std::size_t>(n * d));
  for (std::int64_t g = 0; g < G; ++g) {
    const std::int64_t kg = ce[g] - cb[g];
    std::vector<float> own(cv.begin() + cb[g] * d, cv.begin() + ce[g] * d);
    const auto part = blob_values(rng, own, kg, rb[g + 1] - rb[g], d, 0.3f);
    std::copy(part.begin(), part.end(), xv.begin() + rb[g] * d);
  }
  const HostMatrix x = make_matrix(n, d, d + tc.pad, tc.dtype, xv);
  const HostMatrix c = make_matrix(K, d, d + tc.pad, tc.dtype, cv);
  DeviceMatrix dx = upload(res, x), dc = upload(res, c);
  mc::DeviceBuffer labels(static_cast<std::size_t>(n) * 4 + 4), dist(static_cast<std::size_t>(n) * 4 + 4);
  mc::GroupedAssignArgs a;
  a.metric = tc.metric;
  a.x = dx.view;
  a.centroids = dc.view;
  a.row_begin = rb;
  a.centroid_begin = cb;
  a.centroid_end = ce;
  a.labels = labels.as<std::int32_t>();
  a.distances = dist.as<float>();
  // Every row starts as a sentinel: skipped groups' rows must keep it.
  constexpr std::int32_t kSentinel = 0x5eed5eed;
  const float sentinel_dist = -3.25f;
  std::int64_t skipped_rows = 0;
  if (tc.skip_some) {
    std::bernoulli_distribution third(1.0 / 3);
    a.skip.resize(static_cast<std::size_t>(G));
    for (std::int64_t g = 0; g < G; ++g) {
      a.skip[g] = third(rng) ? 1 : 0;
      if (a.skip[g]) skipped_rows += rb[g + 1] - rb[g];
    }
    const std::vector<std::int32_t> fill_l(static_cast<std::size_t>(n), kSentinel);
    const std::vector<float> fill_d(static_cast<std::size_t>(n), sentinel_dist);
    mc::copy_to_device(res, labels.data(), fill_l.data(), fill_l.size() * 4);
    mc::copy_to_device(res, dist.data(), fill_d.data(), fill_d.size() * 4);
    res.synchronize();
  }
  mc::assign_grouped(res, a);
  res.synchronize();
  const auto lab = download<std::int32_t>(res, labels, static_cast<std::size_t>(n));
  const auto gd = download<float>(res, dist, static_cast<std::size_t>(n));
  std::atomic<std::int64_t> touched{0};  // skipped rows whose label or distance changed
  const double rel = dtype_rel_tol(tc.dtype);
  std::atomic<std::int64_t> exact{0}, bad{0}, bad_dist{0};
  std::atomic<std::int64_t> first_bad{-1};
  parallel_for(G, [&](std::int64_t g) {
    if (!a.skip.empty() && a.skip[g] != 0) {
      for (std::int64_t i = rb[g]; i < rb[g + 1]; ++i)
        if (lab[i] != kSentinel || gd[i] != sentinel_dist) ++touched;
      return;
    }
    for (std::int64_t i = rb[g]; i < rb[g + 1]; ++i) {
      double best = std::numeric_limits<double>::infinity();
      std::int64_t arg = -1;
      for (std::int64_t j = cb[g]; j < ce[g]; ++j) {
        const double s = ref_score(x, i, c, j, tc.metric);
        if (s < best) {
          best = s;
          arg = j - cb[g];
        }
      }
      const std::int64_t got = lab[i];
      if (got < 0 || got >= ce[g] - cb[g]) {
        ++bad;
        first_bad = i;
        continue;
      }
      const double sg = ref_score(x, i, c, cb[g] + got, tc.metric);
      const double tol = rel * (x.norm(i) + std::max(c.norm(cb[g] + got), c.norm(cb[g] + arg)));
      if (got == arg) {
        ++exact;
      } else if (sg - best > tol) {
        ++bad;
        first_bad = i;
      }
      const double want = tc.metric == Metric::kL2 ? sg : -sg;
      if (!(std::fabs(static_cast<double>(gd[i]) - want) <= tol)) ++bad_dist;
    }
  });
  bool ok = true;
  CHECK_OR_FAIL(bad == 0, "%lld rows with a wrong label (e.g. row %lld)", (long long)bad.load(),
                (long long)first_bad.load());
  CHECK_OR_FAIL(bad_dist == 0, "%lld rows with a distance off by more than tol",
                (long long)bad_dist.load());
  CHECK_OR_FAIL(touched == 0, "%lld rows of skipped groups were written", (long long)touched.load());
  char name[256], detail[128];
  std::snprintf(name, sizeof(name), "assign_grouped %-4s %s groups=%lld n=%lld K=%lld d=%lld%s%s",
                megatax::dtype_name(tc.dtype), metric_str(tc.metric), (long long)G, (long long)n,
                (long long)K, (long long)d, tc.pad ? " strided" : "", tc.skip_some ? " skip" : "");
  const std::int64_t assigned = n - skipped_rows;
  std::snprintf(detail, sizeof(detail), "exact %.2f%%, %lld rows skipped",
                assigned > 0 ? 100.0 * exact.load() / assigned : 100.0, (long long)skipped_rows);
  report(name, ok, detail);
}

// ---- top-k ----------------------------------------------------------------------------------

struct TopkCase {
  std::int64_t q, n, d, k;
  DType dtype;
  Metric metric = Metric::kL2;
  bool given_norms = true;
  std::int64_t pad = 0;
  std::size_t workspace = std::size_t{1} << 30;
  // The database nears query 0 in bursts: periods of three 256-row tiles (far rows; 100 near
  // rows among farther ones; 256 nearer rows), each period nearer than the one before, so
  // that a tile passes more candidates than a stale threshold expects (the few-query Hopper
  // kernel's full-area path, with the 3-tile chunks a 1 MiB workspace gives at k = 128).
  bool bursts = false;
  // The given norms 4 bytes past an 8-byte boundary (a caller's device pointer need only be
  // float-aligned: no kernel may read them in pairs from global memory).
  bool odd_norms = false;
  // Database row j a copy of row j % (n / repeats): ties of equal scores in different chunks
  // (the union bound counts each list's words; a word counted twice would drop a true
  // neighbour).
  int repeats = 1;
};

// Rows of `bursts` (see TopkCase): query 0 plus Gaussian noise of a scale set by the row.
std::vector<float> burst_values(std::mt19937_64& rng, const std::vector<float>& query0,
                                std::int64_t rows, std::int64_t d) {
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> v(static_cast<std::size_t>(rows * d));
  for (std::int64_t i = 0; i < rows; ++i) {
    const std::int64_t tile = i / 256, within = i % 256, period = tile / 3;
    const float nearer = std::ldexp(1.f, -static_cast<int>(period));
    float scale = 8.f;
    if (tile % 3 == 1) scale = within < 100 ? 2.2f * nearer : 16.f;
    if (tile % 3 == 2) scale = 1.5f * nearer;
    for (std::int64_t j = 0; j < d; ++j) v[i * d + j] = query0[j] + scale * g(rng);
  }
  return v;
}

void test_topk(mc::Resources& res, std::mt19937_64& rng, const TopkCase& tc) {
  const std::int64_t q = tc.q, n = tc.n, d = tc.d, k = tc.k;
  const std::int64_t centres = std::max<std::int64_t>(1, n / 50);
  std::vector<float> cen = random_values(rng, centres, d, 1.f);
  const std::vector<float> qv = blob_values(rng, cen, centres, q, d, 0.5f);
  std::vector<float> db_values = tc.bursts ? burst_values(rng, qv, n, d)
                                           : blob_values(rng, cen, centres, n, d, 0.5f);
  if (tc.repeats > 1) {
    const std::int64_t distinct = std::max<std::int64_t>(1, n / tc.repeats);
    for (std::int64_t j = distinct; j < n; ++j) {
      std::copy_n(db_values.begin() + (j % distinct) * d, d, db_values.begin() + j * d);
    }
  }
  const HostMatrix db = make_matrix(n, d, d + tc.pad, tc.dtype, db_values);
  const HostMatrix qm = make_matrix(q, d, d + tc.pad, tc.dtype, qv);
  DeviceMatrix ddb = upload(res, db), dq = upload(res, qm);
  mc::DeviceBuffer dist(static_cast<std::size_t>(q * k) * 4), ids(static_cast<std::size_t>(q * k) * 8);
  mc::DeviceBuffer dbn(static_cast<std::size_t>(n) * 4 + 4);
  mc::TopkArgs a;
  a.metric = tc.metric;
  a.queries = dq.view;
  a.database = ddb.view;
  a.k = k;
  a.distances = dist.as<float>();
  a.ids = ids.as<std::int64_t>();
  a.max_workspace_bytes = tc.workspace;
  if (tc.given_norms && n > 0) {
    float* norms = dbn.as<float>() + (tc.odd_norms ? 1 : 0);
    mc::row_norms(res, ddb.view, norms);
    a.database_norms = norms;
  }
  mc::topk(res, a);
  res.synchronize();
  const auto gd = download<float>(res, dist, static_cast<std::size_t>(q * k));
  const auto gi = download<std::int64_t>(res, ids, static_cast<std::size_t>(q * k));
  // Below 128 queries a block a query selects the k best of its chunks' lists
  // (list_select.cuh), first dropping the entries above phase 1's shared bound; the warp merge
  // (MEGATAX_TOPK_MERGE=warp) implements the same contract apart, and so does the block select
  // from every entry (MEGATAX_TOPK_PHASE2_BOUND=0): all must give the same bits (phase 1's
  // scores do not depend on the run).
  auto diffs_with = [&](const char* var, const char* value) {
    const char* before = std::getenv(var);
    const std::string saved = before != nullptr ? before : "";
    setenv(var, value, 1);
    mc::topk(res, a);
    res.synchronize();
    if (before != nullptr) {
      setenv(var, saved.c_str(), 1);
    } else {
      unsetenv(var);
    }
    const auto wd = download<float>(res, dist, static_cast<std::size_t>(q * k));
    const auto wi = download<std::int64_t>(res, ids, static_cast<std::size_t>(q * k));
    std::int64_t diffs = 0;
    for (std::size_t j = 0; j < wd.size(); ++j) {
      diffs += std::memcmp(&wd[j], &gd[j], sizeof(float)) != 0 || wi[j] != gi[j];
    }
    return diffs;
  };
  std::int64_t merge_diffs = -1, unbound_diffs = -1;
  if (q < 128) {
    merge_diffs = diffs_with("MEGATAX_TOPK_MERGE", "warp");
    unbound_diffs = diffs_with("MEGATAX_TOPK_PHASE2_BOUND", "0");
  }

  std::vector<double> dbnorm(static_cast<std::size_t>(n));
  for (std::int64_t j = 0; j < n; ++j) dbnorm[j] = db.norm(j);
  const double max_dbn = n > 0 ? *std::max_element(dbnorm.begin(), dbnorm.end()) : 0.0;
  const double rel = dtype_rel_tol(tc.dtype);
  const std::int64_t kv = std::min(k, n);
  std::atomic<std::int64_t> hits{0}, bad_rows{0}, first_bad{-1};
  std::vector<std::string> why(static_cast<std::size_t>(q));
  parallel_for(q, [&](std::int64_t i) {
    const double qn = qm.norm(i);
    const double tol = rel * (qn + max_dbn);
    std::vector<std::pair<double, std::int64_t>> all(static_cast<std::size_t>(n));
    for (std::int64_t j = 0; j < n; ++j) all[j] = {ref_score(qm, i, db, j, tc.metric), j};
    std::sort(all.begin(), all.end());
    const double kth = kv > 0 ? all[kv - 1].first : 0.0;
    std::vector<char> in_ref(static_cast<std::size_t>(n), 0);
    for (std::int64_t j = 0; j < kv; ++j) in_ref[all[j].second] = 1;
    std::vector<char> seen(static_cast<std::size_t>(n), 0);
    std::string w;
    std::int64_t h = 0;
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t id = gi[i * k + j];
      const float dd = gd[i * k + j];
      if (j >= kv) {
        const bool tail_ok = id == -1 && std::isinf(dd) &&
                             (tc.metric == Metric::kL2 ? dd > 0 : dd < 0);
        if (!tail_ok && w.empty()) w = "bad tail entry at " + std::to_string(j);
        continue;
      }
      if (id < 0 || id >= n || seen[id]) {
        if (w.empty()) w = "bad or repeated id " + std::to_string(id) + " at " + std::to_string(j);
        continue;
      }
      seen[id] = 1;
      h += in_ref[id];
      const double s = ref_score(qm, i, db, id, tc.metric);
      if (s > kth + tol && w.empty()) {
        w = "id " + std::to_string(id) + " at " + std::to_string(j) + " is not in the top-k (" +
            std::to_string(s) + " > " + std::to_string(kth) + ")";
      }
      const double want = tc.metric == Metric::kL2 ? s : -s;
      if (!(std::fabs(dd - want) <= tol) && w.empty()) {
        w = "distance " + std::to_string(dd) + " of id " + std::to_string(id) + ", expected " +
            std::to_string(want);
      }
      if (j > 0) {
        const float prev = gd[i * k + j - 1];
        const bool order = tc.metric == Metric::kL2 ? prev <= dd : prev >= dd;
        if (!order && w.empty()) w = "not sorted at " + std::to_string(j);
      }
    }
    // Copies of a row score alike to the bit (the same data, norms and arithmetic), so
    // among them the smaller ids come first: a copy in the list needs the row it copies.
    if (tc.repeats > 1 && w.empty()) {
      const std::int64_t distinct = std::max<std::int64_t>(1, n / tc.repeats);
      for (std::int64_t j = 0; j < kv && w.empty(); ++j) {
        const std::int64_t id = gi[i * k + j];
        if (id >= distinct && id < n && !seen[id - distinct]) {
          w = "id " + std::to_string(id) + " listed without its equal-scoring copy " +
              std::to_string(id - distinct) + " (ties go to the smaller id)";
        }
      }
    }
    hits += h;
    if (!w.empty()) {
      why[i] = w;
      ++bad_rows;
      first_bad = i;
    }
  });
  bool ok = true;
  if (bad_rows > 0) {
    const std::int64_t fb = first_bad.load();
    CHECK_OR_FAIL(false, "%lld queries wrong, e.g. query %lld: %s", (long long)bad_rows.load(),
                  (long long)fb, why[fb].c_str());
  }
  CHECK_OR_FAIL(merge_diffs <= 0, "%lld of %lld entries differ from the warp merge's",
                (long long)merge_diffs, (long long)(q * k));
  CHECK_OR_FAIL(unbound_diffs <= 0,
                "%lld of %lld entries differ from the block select's without the bound",
                (long long)unbound_diffs, (long long)(q * k));
  char name[256], detail[128];
  std::snprintf(name, sizeof(name), "topk %-4s %s q=%lld n=%lld d=%lld k=%lld%s%s%s%s%s%s",
                megatax::dtype_name(tc.dtype), metric_str(tc.metric), (long long)q, (long long)n,
                (long long)d, (long long)k, tc.given_norms ? "" : " norms-computed",
                tc.pad ? " strided" : "", tc.workspace < (std::size_t{1} << 30) ? " small-ws" : "",
                tc.bursts ? " bursts" : "", tc.odd_norms ? " odd-norms" : "",
                tc.repeats > 1 ? " repeated-rows" : "");
  const double recall = kv > 0 ? static_cast<double>(hits.load()) / (q * kv) : 1.0;
  std::snprintf(detail, sizeof(detail), "recall %.5f (tie-aware 1.0 required)%s", recall,
                merge_diffs == 0 ? ", = warp merge" : "");
  report(name, ok, detail);
}

// ---- accumulate ---------------------------------------------------------------------------

struct AccCase {
  std::int64_t n, k, d;
  DType dtype;
  mc::SumType sum = mc::SumType::kF64;
  bool label32 = false;
  double hot = 0.4;  // share of rows in cluster 0 (a hot spot)
  double skipped = 0;  // share of rows labelled -1 (skip_negative: summed nowhere)
};

void test_accumulate(mc::Resources& res, std::mt19937_64& rng, const AccCase& tc) {
  const std::int64_t n = tc.n, k = tc.k, d = tc.d;
  const HostMatrix x = make_matrix(n, d, d, tc.dtype, random_values(rng, n, d, 1.f));
  DeviceMatrix dx = upload(res, x);
  std::vector<std::int64_t> lab(static_cast<std::size_t>(n));
  std::uniform_real_distribution<double> u(0, 1);
  // Clusters >= k/2 stay empty (except by the hot spot), to test empty clusters.
  std::uniform_int_distribution<std::int64_t> pick(0, std::max<std::int64_t>(0, k / 2 - 1));
  for (auto& l : lab) l = u(rng) < tc.skipped ? -1 : u(rng) < tc.hot ? 0 : pick(rng);
  mc::DeviceBuffer dl(static_cast<std::size_t>(n) * 8);
  if (tc.label32) {
    std::vector<std::int32_t> l32(lab.begin(), lab.end());
    mc::copy_to_device(res, dl.data(), l32.data(), l32.size() * 4);
    res.synchronize();
  } else {
    mc::copy_to_device(res, dl.data(), lab.data(), lab.size() * 8);
    res.synchronize();
  }
  const std::size_t es = tc.sum == mc::SumType::kF64 ? 8 : 4;
  mc::DeviceBuffer sums(static_cast<std::size_t>(k * d) * es), counts(static_cast<std::size_t>(k) * 8);
  // Start from 1.0 everywhere (sums are added) and counts from 5.
  std::vector<double> init_d(static_cast<std::size_t>(k * d), 1.0);
  std::vector<float> init_f(static_cast<std::size_t>(k * d), 1.f);
  std::vector<std::int64_t> init_c(static_cast<std::size_t>(k), 5);
  auto reset = [&] {
    if (es == 8) {
      mc::copy_to_device(res, sums.data(), init_d.data(), init_d.size() * 8);
    } else {
      mc::copy_to_device(res, sums.data(), init_f.data(), init_f.size() * 4);
    }
    mc::copy_to_device(res, counts.data(), init_c.data(), init_c.size() * 8);
    res.synchronize();
  };
  mc::AccumulateArgs a;
  a.x = dx.view;
  a.label_type = tc.label32 ? mc::IndexType::kI32 : mc::IndexType::kI64;
  a.labels = dl.data();
  a.k = k;
  a.sum_type = tc.sum;
  a.sums = sums.data();
  a.counts = counts.as<std::int64_t>();
  a.skip_negative = tc.skipped > 0;
  auto run = [&] {
    reset();
    mc::accumulate(res, a);
    res.synchronize();
    std::vector<double> out(static_cast<std::size_t>(k * d));
    if (es == 8) {
      out = download<double>(res, sums, static_cast<std::size_t>(k * d));
    } else {
      auto f = download<float>(res, sums, static_cast<std::size_t>(k * d));
      std::copy(f.begin(), f.end(), out.begin());
    }
    return out;
  };
  const std::vector<double> g1 = run();
  const auto gc = download<std::int64_t>(res, counts, static_cast<std::size_t>(k));
  const std::vector<double> g2 = run();
  a.check_labels = false;  // the same work without the label check's wait
  const std::vector<double> g3 = run();
  a.check_labels = true;

  std::vector<double> ref(static_cast<std::size_t>(k * d), 1.0), mag(static_cast<std::size_t>(k * d), 1.0);
  std::vector<std::int64_t> rc(static_cast<std::size_t>(k), 5);
  for (std::int64_t i = 0; i < n; ++i) {
    if (lab[i] < 0) continue;  // skipped
    ++rc[lab[i]];
    for (std::int64_t j = 0; j < d; ++j) {
      ref[lab[i] * d + j] += x.at(i, j);
      mag[lab[i] * d + j] += std::fabs(x.at(i, j));
    }
  }
  const double rel = tc.sum == mc::SumType::kF64 ? 1e-12 : 1e-4;
  std::int64_t bad = 0, bad_counts = 0, first = -1;
  double max_err = 0;
  for (std::int64_t e = 0; e < k * d; ++e) {
    const double err = std::fabs(g1[e] - ref[e]) / mag[e];
    max_err = std::max(max_err, err);
    if (!(err <= rel)) {
      ++bad;
      if (first < 0) first = e;
    }
  }
  for (std::int64_t c = 0; c < k; ++c) bad_counts += gc[c] != rc[c];
  const bool same = std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(double)) == 0 &&
                    std::memcmp(g1.data(), g3.data(), g1.size() * sizeof(double)) == 0;
  bool ok = true;
  CHECK_OR_FAIL(bad == 0, "%lld sums off (first at cluster %lld col %lld: %.9g vs %.9g)",
                (long long)bad, (long long)(first / d), (long long)(first % d),
                first >= 0 ? g1[first] : 0.0, first >= 0 ? ref[first] : 0.0);
  CHECK_OR_FAIL(bad_counts == 0, "%lld counts off", (long long)bad_counts);
  CHECK_OR_FAIL(same, "three runs (two checked, one unchecked) gave different sums");
  char name[256], detail[128];
  std::snprintf(name, sizeof(name), "accumulate %-4s -> %s n=%lld k=%lld d=%lld%s%s",
                megatax::dtype_name(tc.dtype), tc.sum == mc::SumType::kF64 ? "f64" : "f32",
                (long long)n, (long long)k, (long long)d, tc.label32 ? " i32" : "",
                tc.skipped > 0 ? " some -1 (skipped)" : "");
  std::snprintf(detail, sizeof(detail), "max rel err %.1e, deterministic %s", max_err,
                same ? "yes" : "NO");
  report(name, ok, detail);
}

// accumulate's means (AccumulateArgs::means: Lloyd's update in the sums' pass) against the
// two-step path it replaces (accumulate into zeroed float64 sums, then means() without
// normalise): the same bits in the centroids and their converted copy; clusters kept, empty,
// of one piece and of many (more than 1024 rows), columns over several slabs (d > 1024).
void test_accumulate_means(mc::Resources& res, std::mt19937_64& rng, std::int64_t n, std::int64_t k, std::int64_t d,
                           DType dtype, DType conv) {
  const HostMatrix x = make_matrix(n, d, d, dtype, random_values(rng, n, d, 1.f));
  DeviceMatrix dx = upload(res, x);
  std::uniform_real_distribution<double> u(0, 1);
  std::uniform_int_distribution<std::int64_t> pick(0, std::max<std::int64_t>(0, k - 3));  // the last two empty
  std::vector<std::int32_t> lab(static_cast<std::size_t>(n));
  for (auto& l : lab) l = u(rng) < 0.05 ? -1 : u(rng) < 0.3 ? 0 : static_cast<std::int32_t>(pick(rng));
  std::vector<std::uint8_t> keep(static_cast<std::size_t>(k));
  for (auto& f : keep) f = u(rng) < 0.15 ? 1 : 0;
  keep[0] = 0;  // the big cluster (many pieces when n > ~3500) is updated
  std::vector<float> start(static_cast<std::size_t>(k * d));
  for (auto& v : start) v = static_cast<float>(u(rng) * 4 - 2);
  const std::size_t es = megatax::dtype_size(conv);
  std::vector<unsigned char> start_conv(start.size() * es);
  megatax::convert_from_f32(start.data(), start.size(), conv, start_conv.data());
  mc::DeviceBuffer dl(lab.size() * 4), dk(keep.size()), sums(start.size() * 8), counts(static_cast<std::size_t>(k) * 8),
      cen_a(start.size() * 4), cen_b(start.size() * 4), conv_a(start_conv.size()), conv_b(start_conv.size());
  mc::copy_to_device(res, dl.data(), lab.data(), lab.size() * 4);
  mc::copy_to_device(res, dk.data(), keep.data(), keep.size());
  for (auto* b : {&cen_a, &cen_b}) mc::copy_to_device(res, b->data(), start.data(), start.size() * 4);
  for (auto* b : {&conv_a, &conv_b}) mc::copy_to_device(res, b->data(), start_conv.data(), start_conv.size());
  mc::fill_zero(res, sums.data(), sums.size());
  mc::fill_zero(res, counts.data(), counts.size());
  mc::AccumulateArgs a;
  a.x = dx.view;
  a.label_type = mc::IndexType::kI32;
  a.labels = dl.data();
  a.k = k;
  a.sum_type = mc::SumType::kF64;
  a.sums = sums.data();
  a.counts = counts.as<std::int64_t>();
  a.skip_negative = true;
  mc::accumulate(res, a);
  mc::MeansArgs m;
  m.sums = sums.as<double>();
  m.counts = counts.as<std::int64_t>();
  m.k = k;
  m.d = d;
  m.keep = dk.as<std::uint8_t>();
  m.centroids = cen_a.as<float>();
  m.converted = conv_a.data();
  m.converted_dtype = conv;
  mc::means(res, m);
  const auto counts_a = download<std::int64_t>(res, counts, static_cast<std::size_t>(k));
  mc::fill_zero(res, counts.data(), counts.size());
  a.sums = nullptr;
  a.means = cen_b.as<float>();
  a.keep = dk.as<std::uint8_t>();
  a.converted = conv_b.data();
  a.converted_dtype = conv;
  mc::accumulate(res, a);
  const auto counts_b = download<std::int64_t>(res, counts, static_cast<std::size_t>(k));
  const auto ga = download<float>(res, cen_a, start.size()), gb = download<float>(res, cen_b, start.size());
  const auto ca = download<unsigned char>(res, conv_a, start_conv.size()),
             cb = download<unsigned char>(res, conv_b, start_conv.size());
  std::int64_t moved = 0, bad = 0, multi = 0;
  for (std::int64_t c = 0; c < k; ++c) {
    moved += counts_a[c] > 0 && !keep[c] ? 1 : 0;
    multi += counts_a[c] > 1024 ? 1 : 0;
  }
  for (std::size_t e = 0; e < ga.size(); ++e) bad += std::memcmp(&ga[e], &gb[e], 4) != 0;
  bool ok = true;
  CHECK_OR_FAIL(bad == 0 && ca == cb, "%lld centroid values differ from sums + means(); converted copies %s",
                (long long)bad, ca == cb ? "equal" : "differ");
  CHECK_OR_FAIL(counts_a == counts_b, "counts differ");
  CHECK_OR_FAIL(ga != start && moved > 0, "no centroid moved (the test tests nothing)");
  char name[160], detail[120];
  std::snprintf(name, sizeof(name), "accumulate's means %s n=%lld k=%lld d=%lld -> f32 + %s", megatax::dtype_name(dtype),
                (long long)n, (long long)k, (long long)d, megatax::dtype_name(conv));
  std::snprintf(detail, sizeof(detail), "%lld clusters moved (%lld of many pieces), bit-identical to sums + means()",
                (long long)moved, (long long)multi);
  report(name, ok, detail);
}

// ---- row distances (k-means++ seeding) ------------------------------------------------------

struct RowDistCase {
  std::int64_t n, n_a, n_b, d;
  DType dtype;
  std::int64_t stride_pad = 0;
  bool pool = true;  // b = a random ascending subset of rows (else rows 0..n_b-1)
};

void test_row_distances(mc::Resources& res, std::mt19937_64& rng, const RowDistCase& tc) {
  const std::int64_t n = tc.n, d = tc.d, stride = d + tc.stride_pad;
  const HostMatrix x = make_matrix(n, d, stride, tc.dtype, random_values(rng, n, d, 1.f));
  DeviceMatrix dx = upload(res, x);
  std::uniform_int_distribution<std::int64_t> row(0, n - 1);
  std::vector<std::int64_t> a(static_cast<std::size_t>(tc.n_a)), b;
  for (auto& v : a) v = row(rng);
  if (tc.pool) {
    std::vector<std::int64_t> all(static_cast<std::size_t>(n));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    b.assign(all.begin(), all.begin() + tc.n_b);
    std::sort(b.begin(), b.end());
  } else {
    b.resize(static_cast<std::size_t>(tc.n_b));
    std::iota(b.begin(), b.end(), 0);
  }
  mc::DeviceBuffer da(a.size() * 8 + 8), db(b.size() * 8 + 8), out(a.size() * b.size() * 4 + 4);
  mc::copy_to_device(res, da.data(), a.data(), a.size() * 8);
  mc::copy_to_device(res, db.data(), b.data(), b.size() * 8);
  mc::RowDistanceArgs r;
  r.x = dx.view;
  r.a = da.as<std::int64_t>();
  r.n_a = tc.n_a;
  r.b = tc.pool ? db.as<std::int64_t>() : nullptr;
  r.n_b = tc.n_b;
  r.out = out.as<float>();
  mc::row_distances(res, r);
  const auto g1 = download<float>(res, out, a.size() * b.size());
  mc::row_distances(res, r);
  const auto g2 = download<float>(res, out, a.size() * b.size());
  // Reference: float64 on the rounded values. f32 rows: f32 sums of the d squared
  // differences, within ~sqrt(d) * 2^-24 of the sum (all terms are >= 0). 16-bit rows up to
  // 4096 wide run on tensor cores as |p|^2 + |c|^2 - 2 p.c: the error scales with the norms,
  // not the distance; the distance between identical rows is still exactly 0.
  const bool expanded = tc.dtype != DType::kF32 && d <= 4096;
  auto norm2 = [&](std::int64_t r) {
    double s = 0;
    for (std::int64_t j = 0; j < d; ++j) s += double(x.at(r, j)) * x.at(r, j);
    return s;
  };
  std::int64_t bad = 0, first = -1;
  double max_err = 0;
  for (std::int64_t t = 0; t < tc.n_a; ++t) {
    for (std::int64_t i = 0; i < tc.n_b; ++i) {
      double ref = 0;
      for (std::int64_t j = 0; j < d; ++j) {
        const double diff = x.at(a[t], j) - x.at(b[i], j);
        ref += diff * diff;
      }
      const double got = g1[t * tc.n_b + i];
      const double scale = expanded ? norm2(a[t]) + norm2(b[i]) : ref;
      const double err = std::fabs(got - ref) / std::max(scale, 1e-30);
      max_err = std::max(max_err, ref == 0 ? std::fabs(got) : err);
      const bool ok_v = ref == 0 ? got == 0 : err <= 2e-6 * std::max<double>(8, std::sqrt(double(d)));
      if (!ok_v) {
        ++bad;
        if (first < 0) first = t * tc.n_b + i;
      }
    }
  }
  const bool same = std::memcmp(g1.data(), g2.data(), g1.size() * 4) == 0;
  bool ok = true;
  CHECK_OR_FAIL(bad == 0, "%lld distances off (first: candidate %lld, pool %lld: %.9g)", (long long)bad,
                (long long)(first >= 0 ? first / tc.n_b : -1), (long long)(first >= 0 ? first % tc.n_b : -1),
                first >= 0 ? double(g1[first]) : 0.0);
  CHECK_OR_FAIL(same, "two runs gave different distances (not deterministic)");
  char name[256], detail[128];
  std::snprintf(name, sizeof(name), "row distances %-4s n=%lld a=%lld b=%lld d=%lld%s%s",
                megatax::dtype_name(tc.dtype), (long long)n, (long long)tc.n_a, (long long)tc.n_b,
                (long long)d, tc.stride_pad ? " strided" : "", tc.pool ? " pool" : "");
  std::snprintf(detail, sizeof(detail), "max rel err %.1e (of %s), deterministic %s", max_err,
                expanded ? "|p|^2 + |c|^2" : "the distance", same ? "yes" : "NO");
  report(name, ok, detail);
}

// ---- means (k-means update on the device) -----------------------------------------------------

// Grouped row distances (k-means++ of many problems) against row_distances run group by
// group: the same bits, whatever the group sizes (empty and one-row groups: blocks of pool
// rows then span many groups), with groups that have no candidates left untouched.
void test_row_distances_grouped(mc::Resources& res, std::mt19937_64& rng, std::int64_t d, DType dtype,
                                std::int64_t stride_pad, std::int64_t groups, std::int64_t max_rows,
                                std::int64_t max_n_a) {
  const std::int64_t n = 4000, stride = d + stride_pad;
  const HostMatrix x = make_matrix(n, d, stride, dtype, random_values(rng, n, d, 1.f));
  DeviceMatrix dx = upload(res, x);
  std::uniform_int_distribution<std::int64_t> rows_of(0, max_rows), row(0, n - 1), na_of(0, max_n_a);
  std::vector<std::int64_t> b, b_begin = {0}, a(static_cast<std::size_t>(groups * mc::kMaxRowDistanceCandidates), 0),
                                  out_begin(static_cast<std::size_t>(groups));
  std::vector<std::int32_t> n_a(static_cast<std::size_t>(groups));
  std::int64_t total = 0;
  for (std::int64_t g = 0; g < groups; ++g) {
    const std::int64_t m = g % 7 == 3 ? 0 : rows_of(rng);
    for (std::int64_t i = 0; i < m; ++i) b.push_back(row(rng));
    b_begin.push_back(static_cast<std::int64_t>(b.size()));
    n_a[g] = static_cast<std::int32_t>(g == 0 ? max_n_a : na_of(rng));
    for (std::int32_t t = 0; t < n_a[g]; ++t) a[g * mc::kMaxRowDistanceCandidates + t] = row(rng);
    out_begin[g] = total;
    total += n_a[g] * m;
  }
  const auto n_b = static_cast<std::int64_t>(b.size());
  mc::DeviceBuffer db(b.size() * 8 + 8), dbb(b_begin.size() * 8), da(a.size() * 8), dna(n_a.size() * 4),
      dob(out_begin.size() * 8), out(static_cast<std::size_t>(total) * 4 + 4), one(static_cast<std::size_t>(max_n_a * n_b) * 4 + 4);
  mc::copy_to_device(res, db.data(), b.data(), b.size() * 8);
  mc::copy_to_device(res, dbb.data(), b_begin.data(), b_begin.size() * 8);
  mc::copy_to_device(res, da.data(), a.data(), a.size() * 8);
  mc::copy_to_device(res, dna.data(), n_a.data(), n_a.size() * 4);
  mc::copy_to_device(res, dob.data(), out_begin.data(), out_begin.size() * 8);
  // Groups without candidates keep what was there: mark everything first.
  std::vector<float> marks(static_cast<std::size_t>(total) + 1, -7.f);
  mc::copy_to_device(res, out.data(), marks.data(), marks.size() * 4);
  mc::GroupedRowDistanceArgs r;
  r.x = dx.view;
  r.groups = groups;
  r.b = db.as<std::int64_t>();
  r.b_begin = dbb.as<std::int64_t>();
  r.n_b = n_b;
  r.a = da.as<std::int64_t>();
  r.n_a = dna.as<std::int32_t>();
  r.out_begin = dob.as<std::int64_t>();
  r.out = out.as<float>();
  r.max_n_a = max_n_a;
  mc::row_distances_grouped(res, r);
  const auto got = download<float>(res, out, static_cast<std::size_t>(total) + 1);
  std::int64_t differ = 0, first = -1;
  for (std::int64_t g = 0; g < groups; ++g) {
    const std::int64_t m = b_begin[g + 1] - b_begin[g];
    if (n_a[g] == 0 || m == 0) continue;
    mc::RowDistanceArgs s1;
    s1.x = dx.view;
    s1.a = da.as<std::int64_t>() + g * mc::kMaxRowDistanceCandidates;
    s1.n_a = n_a[g];
    s1.b = db.as<std::int64_t>() + b_begin[g];
    s1.n_b = m;
    s1.out = one.as<float>();
    mc::row_distances(res, s1);
    const auto ref = download<float>(res, one, static_cast<std::size_t>(n_a[g] * m));
    if (std::memcmp(ref.data(), got.data() + out_begin[g], ref.size() * 4) != 0) {
      ++differ;
      if (first < 0) first = g;
    }
  }
  bool ok = true;
  CHECK_OR_FAIL(differ == 0, "%lld groups differ from row_distances (first: group %lld)", (long long)differ,
                (long long)first);
  CHECK_OR_FAIL(got[static_cast<std::size_t>(total)] == -7.f, "wrote past the last group's output");
  char name[256];
  std::snprintf(name, sizeof(name), "row distances grouped %-4s d=%lld%s groups=%lld rows<=%lld a<=%lld",
                megatax::dtype_name(dtype), (long long)d, stride_pad ? " strided" : "", (long long)groups,
                (long long)max_rows, (long long)max_n_a);
  report(name, ok, "bit-identical to row_distances per group");
}

// ---- pool Gram matrices and the seeding that reads them --------------------------------------

// The distance the seeding forms from Gram entries, rounded step by step as on the device
// (volatile: no contraction into an fma).
float gram_pair_distance(float norm_p, float norm_c, float dot) {
  volatile float sum = norm_p + norm_c;
  volatile float twice = 2.f * dot;
  const float dist = sum - twice;
  return dist > 0.f ? dist : 0.f;
}

// pool_gram against float64 dots, and its distances against row_distances' bits: for
// candidates drawn from each pool, |p_i|^2 + |p_t|^2 - 2 G[t][i] (clamped) must equal
// row_distances(t, i) exactly. Groups of random sizes (empty ones, tile edges), launched in
// two halves through offset b_begin / gram_begin pointers.
void test_pool_gram(mc::Resources& res, std::mt19937_64& rng, std::int64_t d, DType dtype, std::int64_t stride_pad,
                    std::int64_t groups, std::int64_t max_rows) {
  const std::int64_t n = 3000, stride = d + stride_pad;
  const HostMatrix x = make_matrix(n, d, stride, dtype, random_values(rng, n, d, 1.f));
  DeviceMatrix dx = upload(res, x);
  std::uniform_int_distribution<std::int64_t> rows_of(1, max_rows), row(0, n - 1);
  std::vector<std::int64_t> b, b_begin = {0}, gram_begin;
  std::int64_t gram_total = 0, max_m = 0;
  for (std::int64_t g = 0; g < groups; ++g) {
    std::int64_t m = g % 5 == 2 ? 0 : rows_of(rng);
    if (g == 1) m = std::min<std::int64_t>(max_rows, 128);  // a whole tile
    if (g == 3) m = std::min<std::int64_t>(max_rows, 129);  // one row past it
    for (std::int64_t i = 0; i < m; ++i) b.push_back(row(rng));
    b_begin.push_back(static_cast<std::int64_t>(b.size()));
    gram_begin.push_back(gram_total);
    gram_total += m * m;
    max_m = std::max(max_m, m);
  }
  const auto n_b = static_cast<std::int64_t>(b.size());
  mc::DeviceBuffer db(b.size() * 8 + 8), dbb(b_begin.size() * 8), dgb(gram_begin.size() * 8),
      gram(static_cast<std::size_t>(gram_total + 1) * 4), norms(static_cast<std::size_t>(n_b + 1) * 4);
  mc::copy_to_device(res, db.data(), b.data(), b.size() * 8);
  mc::copy_to_device(res, dbb.data(), b_begin.data(), b_begin.size() * 8);
  mc::copy_to_device(res, dgb.data(), gram_begin.data(), gram_begin.size() * 8);
  std::vector<float> marks(static_cast<std::size_t>(gram_total) + 1, -7.f);
  mc::copy_to_device(res, gram.data(), marks.data(), marks.size() * 4);
  const std::int64_t half = groups / 2;
  for (const auto& [g0, g1] : {std::pair<std::int64_t, std::int64_t>{0, half}, {half, groups}}) {
    if (g1 <= g0) continue;
    mc::PoolGramArgs a;
    a.x = dx.view;
    a.groups = g1 - g0;
    a.b = db.as<std::int64_t>();
    a.b_begin = dbb.as<std::int64_t>() + g0;
    a.max_m = max_m;
    a.gram_begin = dgb.as<std::int64_t>() + g0;
    a.gram = gram.as<float>();
    a.norms = norms.as<float>();
    mc::pool_gram(res, a);
  }
  const auto G = download<float>(res, gram, static_cast<std::size_t>(gram_total) + 1);
  const auto N = download<float>(res, norms, static_cast<std::size_t>(n_b));
  std::int64_t bad_value = 0, bad_norm = 0, bad_bits = 0, compared = 0;
  double max_err = 0;
  mc::DeviceBuffer da(16 * 8), one(static_cast<std::size_t>(16 * std::max<std::int64_t>(max_m, 1)) * 4);
  for (std::int64_t g = 0; g < groups; ++g) {
    const std::int64_t m = b_begin[g + 1] - b_begin[g], f = b_begin[g];
    if (m == 0) continue;
    const float* Gg = G.data() + gram_begin[g];
    for (std::int64_t t = 0; t < m; ++t) {
      if (N[static_cast<std::size_t>(f + t)] != Gg[t * m + t]) ++bad_norm;
      for (std::int64_t i = 0; i < m; ++i) {
        if ((t * 7 + i) % 5 != 0 && m > 200) continue;  // a sample of the large ones
        double ref = 0;
        for (std::int64_t j = 0; j < d; ++j) ref += x.at(b[f + t], j) * x.at(b[f + i], j);
        const double scale = x.norm(b[f + t]) + x.norm(b[f + i]);
        const double err = std::fabs(Gg[t * m + i] - ref) / std::max(scale, 1e-30);
        max_err = std::max(max_err, err);
        if (err > 2e-6 * std::max<double>(8, std::sqrt(double(d)))) ++bad_value;
      }
    }
    // Candidates: up to 16 pool entries (the first, the last and random ones).
    std::vector<std::int64_t> cand = {0, m - 1}, a_rows;
    std::uniform_int_distribution<std::int64_t> pick(0, m - 1);
    while (cand.size() < 16) cand.push_back(pick(rng));
    for (const std::int64_t t : cand) a_rows.push_back(b[f + t]);
    mc::copy_to_device(res, da.data(), a_rows.data(), a_rows.size() * 8);
    mc::RowDistanceArgs r;
    r.x = dx.view;
    r.a = da.as<std::int64_t>();
    r.n_a = static_cast<std::int64_t>(cand.size());
    r.b = db.as<std::int64_t>() + f;
    r.n_b = m;
    r.out = one.as<float>();
    mc::row_distances(res, r);
    const auto ref = download<float>(res, one, static_cast<std::size_t>(r.n_a * m));
    for (std::size_t c = 0; c < cand.size(); ++c) {
      const std::int64_t t = cand[c];
      for (std::int64_t i = 0; i < m; ++i) {
        const float mine = gram_pair_distance(N[static_cast<std::size_t>(f + i)], N[static_cast<std::size_t>(f + t)],
                                              Gg[t * m + i]);
        const float theirs = ref[c * static_cast<std::size_t>(m) + static_cast<std::size_t>(i)];
        if (std::memcmp(&mine, &theirs, 4) != 0) ++bad_bits;
        ++compared;
      }
    }
  }
  bool ok = true;
  CHECK_OR_FAIL(bad_value == 0, "%lld Gram entries off the float64 dot (max rel err %.2e)", (long long)bad_value,
                max_err);
  CHECK_OR_FAIL(bad_norm == 0, "%lld norms differ from the Gram diagonal", (long long)bad_norm);
  CHECK_OR_FAIL(bad_bits == 0, "%lld of %lld distances from the Gram matrix differ from row_distances' bits",
                (long long)bad_bits, (long long)compared);
  CHECK_OR_FAIL(G[static_cast<std::size_t>(gram_total)] == -7.f, "wrote past the last group's matrix");
  char name[256], detail[160];
  std::snprintf(name, sizeof(name), "pool gram %-4s d=%lld%s groups=%lld rows<=%lld", megatax::dtype_name(dtype),
                (long long)d, stride_pad ? " strided" : "", (long long)groups, (long long)max_rows);
  std::snprintf(detail, sizeof(detail), "max rel err %.1e; %lld distances bit-identical to row_distances", max_err,
                (long long)compared);
  report(name, ok, detail);
}

// seed_grouped reading the pools' Gram matrices (scratch given: one chunk, or many when the
// scratch holds a few problems) against seed_grouped reading the pools every round: the same
// chosen pool indices, problem for problem.
void test_seed_grouped_gram(mc::Resources& res, std::mt19937_64& rng, std::int64_t d, DType dtype,
                            std::int64_t groups, std::int64_t max_rows) {
  const std::int64_t n = 4000;
  const HostMatrix x = make_matrix(n, d, d, dtype, random_values(rng, n, d, 1.f));
  DeviceMatrix dx = upload(res, x);
  std::uniform_int_distribution<std::int64_t> rows_of(1, max_rows), row(0, n - 1);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  std::vector<std::int64_t> b, b_begin = {0};
  std::vector<mc::SeedingProblem> probs;
  std::vector<double> uniforms;
  std::int64_t max_k = 1, max_m = 0;
  std::int32_t max_trials = 1;
  for (std::int64_t g = 0; g < groups; ++g) {
    const std::int64_t m = rows_of(rng);
    for (std::int64_t i = 0; i < m; ++i) b.push_back(row(rng));
    // A problem with duplicated rows: its potential reaches 0 before k.
    if (g == 2) {
      const std::size_t start = b.size() - static_cast<std::size_t>(m);
      for (std::size_t i = 3; i < static_cast<std::size_t>(m); ++i) b[start + i] = b[start + i % 3];
    }
    b_begin.push_back(static_cast<std::int64_t>(b.size()));
    mc::SeedingProblem p;
    p.k = std::uniform_int_distribution<std::int64_t>(1, std::min<std::int64_t>(m, 60))(rng);
    p.first = std::uniform_int_distribution<std::int64_t>(0, m - 1)(rng);
    p.trials = static_cast<std::int32_t>(std::uniform_int_distribution<int>(1, 9)(rng));
    p.uniform_begin = static_cast<std::int64_t>(uniforms.size());
    for (std::int64_t u = 0; u < (p.k - 1) * p.trials; ++u) uniforms.push_back(unif(rng));
    probs.push_back(p);
    max_k = std::max(max_k, p.k);
    max_m = std::max(max_m, m);
    max_trials = std::max(max_trials, p.trials);
  }
  uniforms.push_back(0.5);  // never empty
  mc::DeviceBuffer db(b.size() * 8), dbb(b_begin.size() * 8), dp(probs.size() * sizeof(mc::SeedingProblem)),
      du(uniforms.size() * 8), chosen(static_cast<std::size_t>(groups * max_k) * 8),
      scratch(static_cast<std::size_t>(max_m * max_m) * 4 * 3);
  mc::copy_to_device(res, db.data(), b.data(), b.size() * 8);
  mc::copy_to_device(res, dbb.data(), b_begin.data(), b_begin.size() * 8);
  mc::copy_to_device(res, dp.data(), probs.data(), probs.size() * sizeof(mc::SeedingProblem));
  mc::copy_to_device(res, du.data(), uniforms.data(), uniforms.size() * 8);
  auto run = [&](std::size_t scratch_bytes) {
    std::vector<std::int64_t> fill(static_cast<std::size_t>(groups * max_k), -5);
    mc::copy_to_device(res, chosen.data(), fill.data(), fill.size() * 8);
    mc::GroupedSeedingArgs s;
    s.x = dx.view;
    s.groups = groups;
    s.b = db.as<std::int64_t>();
    s.b_begin = dbb.as<std::int64_t>();
    s.n_b = static_cast<std::int64_t>(b.size());
    s.problems = dp.as<mc::SeedingProblem>();
    s.uniforms = du.as<double>();
    s.max_k = max_k;
    s.max_trials = max_trials;
    s.chosen = chosen.as<std::int64_t>();
    if (scratch_bytes > 0) {
      s.b_begin_host = b_begin.data();
      s.scratch = scratch.data();
      s.scratch_bytes = scratch_bytes;
    }
    mc::seed_grouped(res, s);
    return download<std::int64_t>(res, chosen, static_cast<std::size_t>(groups * max_k));
  };
  const auto pools = run(0);
  const auto one_chunk = run(scratch.size());
  const auto chunks = run(static_cast<std::size_t>(max_m * max_m) * 4 * 3 / 2);  // a problem or two per chunk
  std::int64_t differ = 0, differ_chunks = 0, first = -1, bad_index = 0;
  for (std::int64_t g = 0; g < groups; ++g) {
    const std::int64_t m = b_begin[g + 1] - b_begin[g];
    for (std::int64_t j = 0; j < probs[g].k; ++j) {
      const auto e = static_cast<std::size_t>(g * max_k + j);
      if (pools[e] < 0 || pools[e] >= m) ++bad_index;
    }
    const auto a0 = pools.begin() + g * max_k, a1 = a0 + probs[g].k;
    if (!std::equal(a0, a1, one_chunk.begin() + g * max_k)) {
      ++differ;
      if (first < 0) first = g;
    }
    if (!std::equal(a0, a1, chunks.begin() + g * max_k)) ++differ_chunks;
  }
  bool ok = true;
  CHECK_OR_FAIL(bad_index == 0, "%lld chosen indices outside their pools", (long long)bad_index);
  CHECK_OR_FAIL(differ == 0, "%lld problems chose differently through the Gram matrices (first: %lld)",
                (long long)differ, (long long)first);
  CHECK_OR_FAIL(differ_chunks == 0, "%lld problems chose differently with the matrices in small chunks",
                (long long)differ_chunks);
  char name[256];
  std::snprintf(name, sizeof(name), "seeding via pool gram %-4s d=%lld groups=%lld rows<=%lld k<=%lld",
                megatax::dtype_name(dtype), (long long)d, (long long)groups, (long long)max_rows, (long long)max_k);
  report(name, ok, "the same choices as reading the pools (one chunk and many)");
}

// rows_to_f32 against the host's values of the same (strided) rows: exact.
void test_rows_to_f32(mc::Resources& res, std::mt19937_64& rng, std::int64_t n, std::int64_t d, DType dtype,
                      std::int64_t stride_pad) {
  const HostMatrix x = make_matrix(n, d, d + stride_pad, dtype, random_values(rng, n, d, 3.f));
  DeviceMatrix dx = upload(res, x);
  mc::DeviceBuffer out(static_cast<std::size_t>(n * d) * 4 + 4);
  mc::rows_to_f32(res, dx.view, out.as<float>());
  const auto got = download<float>(res, out, static_cast<std::size_t>(n * d));
  std::int64_t bad = 0;
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t j = 0; j < d; ++j)
      if (got[static_cast<std::size_t>(r * d + j)] != static_cast<float>(x.at(r, j))) ++bad;
  bool ok = true;
  CHECK_OR_FAIL(bad == 0, "%lld of %lld values differ", (long long)bad, (long long)(n * d));
  char name[128];
  std::snprintf(name, sizeof(name), "rows_to_f32 %-4s n=%lld d=%lld%s", megatax::dtype_name(dtype), (long long)n,
                (long long)d, stride_pad ? " strided" : "");
  report(name, ok, "equal to the host's values");
}

// normalise_rows against the host's arithmetic written out here (taxonomy::normalise_rows:
// float64 sum of squares in column order, 1 / sqrt, each value times that in float64 rounded
// to f32, then rounded to the dtype): every byte equal, the padding past d untouched, a zero
// row kept; and the unit norms checked in float64.
void test_normalise_rows(mc::Resources& res, std::mt19937_64& rng, std::int64_t n, std::int64_t d, DType dtype,
                         std::int64_t stride_pad) {
  const std::int64_t stride = d + stride_pad;
  std::vector<float> values = random_values(rng, n, d, 3.f);
  const std::int64_t zero_row = n > 2 ? static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n)) : -1;
  if (zero_row >= 0) std::fill(values.begin() + zero_row * d, values.begin() + (zero_row + 1) * d, 0.f);
  const HostMatrix x = make_matrix(n, d, stride, dtype, values);
  DeviceMatrix dx = upload(res, x);
  mc::normalise_rows(res, dx.view);
  const std::size_t es = megatax::dtype_size(dtype);
  std::vector<unsigned char> got(x.bytes.size());
  mc::copy_to_host(res, got.data(), dx.buf.data(), got.size());
  std::vector<unsigned char> want = x.bytes;
  std::vector<float> row(static_cast<std::size_t>(d));
  double worst_norm = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < d; ++j) row[static_cast<std::size_t>(j)] = static_cast<float>(x.at(i, j));
    double s = 0;
    for (std::int64_t j = 0; j < d; ++j) s += static_cast<double>(row[j]) * row[j];
    if (s <= 0) continue;
    const double inv = 1.0 / std::sqrt(s);
    for (std::int64_t j = 0; j < d; ++j) row[j] = static_cast<float>(row[j] * inv);
    megatax::convert_from_f32(row.data(), static_cast<std::size_t>(d), dtype,
                              want.data() + static_cast<std::size_t>(i * stride) * es);
    std::vector<float> back(static_cast<std::size_t>(d));
    megatax::convert_to_f32(dtype, got.data() + static_cast<std::size_t>(i * stride) * es,
                            static_cast<std::size_t>(d), back.data());
    double norm = 0;
    for (const float v : back) norm += static_cast<double>(v) * v;
    worst_norm = std::max(worst_norm, std::fabs(std::sqrt(norm) - 1));
  }
  std::int64_t bad = 0;
  for (std::size_t b = 0; b < got.size(); b += es) bad += std::memcmp(got.data() + b, want.data() + b, es) != 0;
  bool ok = true;
  CHECK_OR_FAIL(bad == 0, "%lld of %lld elements differ from the host's arithmetic", (long long)bad,
                (long long)(n * stride));
  const double tol = dtype == DType::kF32 ? 1e-6 : dtype == DType::kF16 ? 2e-3 : 1.6e-2;
  CHECK_OR_FAIL(worst_norm <= tol, "a row's norm is 1 +- %.2e (> %.0e)", worst_norm, tol);
  char name[128], detail[96];
  std::snprintf(name, sizeof(name), "normalise_rows %-4s n=%lld d=%lld%s", megatax::dtype_name(dtype), (long long)n,
                (long long)d, stride_pad ? " strided" : "");
  std::snprintf(detail, sizeof(detail), "bits as the host's, norms 1 +- %.1e, a zero row kept", worst_norm);
  report(name, ok, detail);
}

// find_non_finite_row against a scan of the rows' values on the host: `planted` NaNs and
// infinities (either sign) written at random elements, the smallest row holding one wanted
// (-1 when none is planted); a strided view's padding (NaN, make_matrix) must not count.
void test_find_non_finite_row(mc::Resources& res, std::mt19937_64& rng, std::int64_t n, std::int64_t d, DType dtype,
                              std::int64_t stride_pad, int planted) {
  const std::int64_t stride = d + stride_pad;
  HostMatrix x = make_matrix(n, d, stride, dtype, random_values(rng, n, d, 3.f));
  const std::size_t es = megatax::dtype_size(dtype);
  // NaN, +infinity, -infinity in each dtype's bits.
  const std::uint32_t f32_bits[] = {0x7fc00001u, 0x7f800000u, 0xff800000u};
  const std::uint16_t f16_bits[] = {0x7e01, 0x7c00, 0xfc00};
  const std::uint16_t bf16_bits[] = {0x7fc1, 0x7f80, 0xff80};
  for (int p = 0; p < planted; ++p) {
    const auto i = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n));
    const auto j = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(d));
    const auto kind = static_cast<std::size_t>(rng() % 3);
    unsigned char* at = x.bytes.data() + static_cast<std::size_t>(i * stride + j) * es;
    if (dtype == DType::kF32) {
      std::memcpy(at, &f32_bits[kind], 4);
    } else {
      std::memcpy(at, dtype == DType::kF16 ? &f16_bits[kind] : &bf16_bits[kind], 2);
    }
  }
  std::int64_t want = -1;
  std::vector<float> row(static_cast<std::size_t>(d));
  for (std::int64_t i = 0; i < n && want < 0; ++i) {
    megatax::convert_to_f32(dtype, x.bytes.data() + static_cast<std::size_t>(i * stride) * es,
                            static_cast<std::size_t>(d), row.data());
    for (const float v : row) {
      if (!std::isfinite(v)) want = i;
    }
  }
  DeviceMatrix dx = upload(res, x);
  mc::DeviceBuffer first(sizeof(std::int64_t));
  mc::find_non_finite_row(res, dx.view, first.as<std::int64_t>());
  std::int64_t got = -2;
  mc::copy_to_host(res, &got, first.data(), sizeof got);
  bool ok = true;
  CHECK_OR_FAIL(got == want, "first row with a non-finite value: got %lld, the host's scan %lld", (long long)got,
                (long long)want);
  char name[128], detail[96];
  std::snprintf(name, sizeof(name), "find_non_finite_row %-4s n=%lld d=%lld%s, %d planted", megatax::dtype_name(dtype),
                (long long)n, (long long)d, stride_pad ? " strided" : "", planted);
  std::snprintf(detail, sizeof(detail), "row %lld as the host's scan", (long long)want);
  report(name, ok, detail);
}

// How many rows t of `got` differ from row idx[t] of `src` (rows of row_bytes bytes).
std::int64_t rows_unlike_host_gather(const std::vector<unsigned char>& got, const std::vector<unsigned char>& src,
                                     const std::vector<std::int64_t>& idx, std::size_t row_bytes) {
  std::int64_t bad = 0;
  for (std::size_t t = 0; t < idx.size(); ++t)
    bad += std::memcmp(got.data() + t * row_bytes, src.data() + idx[t] * row_bytes, row_bytes) != 0 ? 1 : 0;
  return bad;
}

// gather_rows against the same gather on the host (bytes must match exactly).
void test_gather_rows(mc::Resources& res, std::mt19937_64& rng, std::size_t row_bytes, std::int64_t src_rows,
                      std::int64_t n) {
  std::vector<unsigned char> src(row_bytes * static_cast<std::size_t>(src_rows));
  for (auto& v : src) v = static_cast<unsigned char>(rng());
  std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
  std::uniform_int_distribution<std::int64_t> row(0, src_rows - 1);
  for (auto& v : idx) v = row(rng);
  mc::DeviceBuffer dsrc(src.size() + 16), didx(idx.size() * 8 + 8), ddst(row_bytes * static_cast<std::size_t>(n) + 16);
  mc::copy_to_device(res, dsrc.data(), src.data(), src.size());
  mc::copy_to_device(res, didx.data(), idx.data(), idx.size() * 8);
  mc::gather_rows(res, dsrc.data(), row_bytes, didx.as<std::int64_t>(), n, ddst.data());
  const auto got = download<unsigned char>(res, ddst, row_bytes * static_cast<std::size_t>(n));
  const std::int64_t bad = rows_unlike_host_gather(got, src, idx, row_bytes);
  bool ok = true;
  CHECK_OR_FAIL(bad == 0, "%lld rows differ from the host gather", (long long)bad);
  char name[160];
  std::snprintf(name, sizeof(name), "gather_rows row_bytes=%zu src=%lld n=%lld%s", row_bytes, (long long)src_rows,
                (long long)n, row_bytes % 16 == 0 ? " (16-byte pieces)" : "");
  report(name, ok, "byte-identical to the host gather");
}

// gather_rows_at: rows scattered over two buffers, against the host. The first holds rows
// [0, half) in device memory or, with on_host, in page-locked host memory (read over the bus
// at its device address); the second's rows start one byte in, so they take the byte path
// when the first's take 16-byte pieces. max_sms: gather_rows_at's (0: the whole device).
void test_gather_rows_at(mc::Resources& res, std::mt19937_64& rng, std::size_t row_bytes, std::int64_t src_rows,
                         std::int64_t n, int max_sms = 0, bool on_host = false) {
  std::vector<unsigned char> src(row_bytes * static_cast<std::size_t>(src_rows));
  for (auto& v : src) v = static_cast<unsigned char>(rng());
  const std::int64_t half = src_rows / 2;  // rows [0, half) in buffer a, the rest in b at offset 1
  mc::DeviceBuffer da(on_host ? 0 : row_bytes * static_cast<std::size_t>(half) + 16),
      db(row_bytes * static_cast<std::size_t>(src_rows - half) + 16);
  mc::PinnedBuffer ha(on_host ? row_bytes * static_cast<std::size_t>(half) + 16 : 0);
  const unsigned char* a = nullptr;
  if (on_host) {
    std::memcpy(ha.data(), src.data(), row_bytes * static_cast<std::size_t>(half));
    a = static_cast<const unsigned char*>(mc::device_address(ha.data()));
  } else {
    mc::copy_to_device(res, da.data(), src.data(), row_bytes * static_cast<std::size_t>(half));
    a = da.as<unsigned char>();
  }
  mc::copy_to_device(res, db.as<unsigned char>() + 1, src.data() + row_bytes * static_cast<std::size_t>(half),
                     row_bytes * static_cast<std::size_t>(src_rows - half));
  std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
  std::vector<const void*> at(static_cast<std::size_t>(n));
  std::uniform_int_distribution<std::int64_t> row(0, src_rows - 1);
  for (std::size_t t = 0; t < idx.size(); ++t) {
    idx[t] = row(rng);
    at[t] = idx[t] < half ? static_cast<const void*>(a + idx[t] * row_bytes)
                          : static_cast<const void*>(db.as<unsigned char>() + 1 + (idx[t] - half) * row_bytes);
  }
  mc::DeviceBuffer dat(at.size() * sizeof(void*) + 8), ddst(row_bytes * static_cast<std::size_t>(n) + 16);
  mc::copy_to_device(res, dat.data(), at.data(), at.size() * sizeof(void*));
  mc::gather_rows_at(res, static_cast<const void* const*>(dat.data()), row_bytes, n, ddst.data(), max_sms);
  const auto got = download<unsigned char>(res, ddst, row_bytes * static_cast<std::size_t>(n));
  const std::int64_t bad = rows_unlike_host_gather(got, src, idx, row_bytes);
  bool ok = true;
  CHECK_OR_FAIL(bad == 0, "%lld rows differ from the host gather", (long long)bad);
  char name[200];
  std::snprintf(name, sizeof(name), "gather_rows_at row_bytes=%zu src=%lld n=%lld, two buffers%s, %s", row_bytes,
                (long long)src_rows, (long long)n, on_host ? " (one in page-locked host memory)" : "",
                max_sms == 0 ? "the whole device" : ("max_sms " + std::to_string(max_sms)).c_str());
  report(name, ok, "byte-identical to the host gather");
}

// copy_by_sms: `bytes` random bytes from page-locked host memory (read over the bus at its
// device address) or from device memory, starting `offset` bytes into the source buffer
// (offset % 16 != 0: the byte path), on `sms` SMs, against the host's bytes; the bytes
// around the destination range stay as they were.
void test_copy_by_sms(mc::Resources& res, std::mt19937_64& rng, std::size_t bytes, std::size_t offset, int sms,
                      bool from_host) {
  std::vector<unsigned char> src(bytes + offset);
  for (auto& v : src) v = static_cast<unsigned char>(rng());
  mc::PinnedBuffer hsrc(from_host ? src.size() : 0);
  mc::DeviceBuffer dsrc(from_host ? 0 : src.size()), ddst(bytes + 32);
  const unsigned char* from = nullptr;
  if (from_host) {
    std::memcpy(hsrc.data(), src.data(), src.size());
    from = static_cast<const unsigned char*>(mc::device_address(hsrc.data()));
  } else {
    mc::copy_to_device(res, dsrc.data(), src.data(), src.size());
    from = dsrc.as<unsigned char>();
  }
  std::vector<unsigned char> canary(bytes + 32);
  for (auto& v : canary) v = static_cast<unsigned char>(rng());
  mc::copy_to_device(res, ddst.data(), canary.data(), canary.size());
  mc::copy_by_sms(res, ddst.as<unsigned char>() + 16, from + offset, bytes, sms);
  const auto got = download<unsigned char>(res, ddst, bytes + 32);
  std::int64_t bad = 0, spilled = 0;
  for (std::size_t i = 0; i < bytes; ++i) bad += got[16 + i] != src[offset + i];
  for (std::size_t i = 0; i < 16; ++i) spilled += (got[i] != canary[i]) + (got[16 + bytes + i] != canary[16 + bytes + i]);
  bool ok = true;
  CHECK_OR_FAIL(bad == 0, "%lld bytes differ from the source", (long long)bad);
  CHECK_OR_FAIL(spilled == 0, "%lld bytes written outside the destination range", (long long)spilled);
  char name[160];
  std::snprintf(name, sizeof(name), "copy_by_sms %zu bytes from %s (offset %zu), %d SMs", bytes,
                from_host ? "page-locked host memory" : "device memory", offset, sms);
  report(name, ok, "byte-identical to the source");
}

// A file's read-only mapping registered where it lies in the page cache (HostRegistration,
// read_only; the range starts mid-page: widened to whole pages), its rows gathered over the
// bus by gather_rows_at at their device addresses, against the file's bytes; the file's
// header (`offset` bytes) skipped as a reader of .npy would.
void test_registered_file_mapping(mc::Resources& res, std::mt19937_64& rng, std::size_t row_bytes, std::int64_t rows,
                                  std::int64_t n, std::size_t offset) {
  bool ok = true;
  std::vector<unsigned char> src(row_bytes * static_cast<std::size_t>(rows));
  for (auto& v : src) v = static_cast<unsigned char>(rng());
  char path[] = "/tmp/megatax_registered_XXXXXX";
  const int fd = ::mkstemp(path);
  CHECK_OR_FAIL(fd >= 0, "mkstemp failed");
  if (fd < 0) return report("registered file mapping", ok, "");
  std::vector<unsigned char> file(offset, 0x5a);
  file.insert(file.end(), src.begin(), src.end());
  const bool written = ::write(fd, file.data(), file.size()) == static_cast<ssize_t>(file.size());
  void* map = written ? ::mmap(nullptr, file.size(), PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
  ::close(fd);
  ::unlink(path);
  CHECK_OR_FAIL(map != MAP_FAILED, "could not write and map %s", path);
  if (map == MAP_FAILED) return report("registered file mapping", ok, "");
  const auto* rows0 = static_cast<const unsigned char*>(map) + offset;
  std::int64_t bad = -1;
  try {
    mc::HostRegistration reg(rows0, row_bytes * static_cast<std::size_t>(rows), /*read_only=*/true);
    const auto* at0 = static_cast<const unsigned char*>(mc::device_address(rows0));
    std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
    std::vector<const void*> at(idx.size());
    std::uniform_int_distribution<std::int64_t> row(0, rows - 1);
    for (std::size_t t = 0; t < idx.size(); ++t) {
      idx[t] = row(rng);
      at[t] = at0 + static_cast<std::size_t>(idx[t]) * row_bytes;
    }
    mc::DeviceBuffer dat(at.size() * sizeof(void*)), ddst(row_bytes * static_cast<std::size_t>(n));
    mc::copy_to_device(res, dat.data(), at.data(), at.size() * sizeof(void*));
    mc::gather_rows_at(res, static_cast<const void* const*>(dat.data()), row_bytes, n, ddst.data(), 8);
    const auto got = download<unsigned char>(res, ddst, row_bytes * static_cast<std::size_t>(n));
    bad = rows_unlike_host_gather(got, src, idx, row_bytes);
  } catch (const megatax::Error& e) {
    if (e.code() == megatax::ErrorCode::kUnimplemented) {
      std::printf("  [skip] registered file mapping: %s\n", e.what());
      ::munmap(map, file.size());
      return;
    }
    CHECK_OR_FAIL(false, "%s", e.what());
  }
  ::munmap(map, file.size());
  CHECK_OR_FAIL(bad == 0, "%lld rows differ from the file's", (long long)bad);
  char name[200];
  std::snprintf(name, sizeof(name), "registered file mapping row_bytes=%zu rows=%lld n=%lld header %zu", row_bytes,
                (long long)rows, (long long)n, offset);
  report(name, ok, "rows gathered over the bus byte-identical to the file's");
}

// The descent on the device: order_rows_by_parent against a stable sort of the row numbers
// on the host (std::stable_sort by parent, rows without children last), then
// scatter_descent of random labels and distances against the same scatter on the host.
// Parents: random in [-1, n_parents + 1) (-1: stopped above; n_parents: out of range, both
// last), a third of them leaves (no children).
void test_descent(mc::Resources& res, std::mt19937_64& rng, std::int64_t n, std::int64_t n_parents) {
  std::vector<std::int64_t> child_begin(static_cast<std::size_t>(n_parents) + 1, 0);
  for (std::int64_t p = 0; p < n_parents; ++p)
    child_begin[static_cast<std::size_t>(p) + 1] = child_begin[static_cast<std::size_t>(p)] + (rng() % 3 == 0 ? 0 : 1 + rng() % 100);
  std::vector<std::int32_t> parent(static_cast<std::size_t>(n));
  for (auto& v : parent) v = static_cast<std::int32_t>(static_cast<std::int64_t>(rng() % (n_parents + 2)) - 1);
  auto active = [&](std::int32_t p) {
    return p >= 0 && p < n_parents && child_begin[static_cast<std::size_t>(p) + 1] > child_begin[static_cast<std::size_t>(p)];
  };
  auto key = [&](std::int64_t i) {
    const std::int32_t p = parent[static_cast<std::size_t>(i)];
    return active(p) ? static_cast<std::int64_t>(p) : n_parents;
  };
  std::vector<std::int64_t> want_order(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) want_order[static_cast<std::size_t>(i)] = i;
  std::stable_sort(want_order.begin(), want_order.end(), [&](std::int64_t a, std::int64_t b) { return key(a) < key(b); });
  std::int64_t m = 0;
  for (const std::int32_t p : parent) m += active(p) ? 1 : 0;
  const auto nn = static_cast<std::size_t>(n);
  mc::DeviceBuffer dparent(nn * 4 + 4), dcb(child_begin.size() * 8), dorder(nn * 8 + 8), dsorted(nn * 4 + 4);
  mc::copy_to_device(res, dparent.data(), parent.data(), nn * 4);
  mc::copy_to_device(res, dcb.data(), child_begin.data(), child_begin.size() * 8);
  mc::order_rows_by_parent(res, dparent.as<std::int32_t>(), n, dcb.as<std::int64_t>(), n_parents,
                           dorder.as<std::int64_t>(), dsorted.as<std::int32_t>());
  const auto order = download<std::int64_t>(res, dorder, nn);
  const auto sorted = download<std::int32_t>(res, dsorted, nn);
  bool ok = true;
  std::int64_t bad_order = 0, bad_parent = 0;
  for (std::size_t t = 0; t < nn; ++t) {
    bad_order += order[t] != want_order[t] ? 1 : 0;
    bad_parent += sorted[t] != key(want_order[t]) ? 1 : 0;
  }
  CHECK_OR_FAIL(bad_order == 0, "%lld positions hold another row than the host's stable sort", (long long)bad_order);
  CHECK_OR_FAIL(bad_parent == 0, "%lld sorted parents differ", (long long)bad_parent);
  {
    // The groups' table: the sorted parents' runs against the host's runs of its sorted keys.
    std::vector<std::int32_t> want_parent, want_rows;
    for (std::size_t t = 0; t < nn; ++t) {
      const auto k = static_cast<std::int32_t>(key(want_order[t]));
      if (want_parent.empty() || want_parent.back() != k) {
        want_parent.push_back(k);
        want_rows.push_back(0);
      }
      ++want_rows.back();
    }
    mc::DeviceBuffer druns(8), drun_parent(nn * 4 + 4), drun_rows(nn * 4 + 4);
    mc::count_sorted_parents(res, dsorted.as<std::int32_t>(), n, drun_parent.as<std::int32_t>(),
                             drun_rows.as<std::int32_t>(), druns.as<std::int64_t>());
    const auto runs = download<std::int64_t>(res, druns, 1)[0];
    const auto run_parent = download<std::int32_t>(res, drun_parent, nn);
    const auto run_rows = download<std::int32_t>(res, drun_rows, nn);
    CHECK_OR_FAIL(runs == static_cast<std::int64_t>(want_parent.size()), "%lld runs counted, the host has %zu",
                  (long long)runs, want_parent.size());
    std::int64_t bad_runs = 0;
    for (std::size_t r = 0; r < want_parent.size() && static_cast<std::int64_t>(r) < runs; ++r)
      bad_runs += run_parent[r] != want_parent[r] || run_rows[r] != want_rows[r] ? 1 : 0;
    CHECK_OR_FAIL(bad_runs == 0, "%lld runs' parent or rows differ", (long long)bad_runs);
  }
  // The grouped assignment's results stand in as random labels within each parent's children.
  std::vector<std::int32_t> labels(static_cast<std::size_t>(m) + 1);
  std::vector<float> dists(static_cast<std::size_t>(m) + 1);
  for (std::int64_t t = 0; t < m; ++t) {
    const auto p = static_cast<std::size_t>(key(want_order[static_cast<std::size_t>(t)]));
    labels[static_cast<std::size_t>(t)] = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(child_begin[p + 1] - child_begin[p]));
    dists[static_cast<std::size_t>(t)] = std::uniform_real_distribution<float>(0.f, 9.f)(rng);
  }
  mc::DeviceBuffer dlab(labels.size() * 4), ddist(dists.size() * 4), dout(nn * 12 + 12);
  mc::copy_to_device(res, dlab.data(), labels.data(), labels.size() * 4);
  mc::copy_to_device(res, ddist.data(), dists.data(), dists.size() * 4);
  auto* node = dout.as<std::int32_t>();
  mc::scatter_descent(res, dorder.as<std::int64_t>(), dsorted.as<std::int32_t>(), dlab.as<std::int32_t>(),
                      ddist.as<float>(), m, n, dcb.as<std::int64_t>(), node, node + n,
                      reinterpret_cast<float*>(node + 2 * n));
  const auto out = download<std::int32_t>(res, dout, nn * 3);
  std::int64_t bad_rows = 0;
  for (std::size_t t = 0; t < nn; ++t) {
    const auto i = static_cast<std::size_t>(want_order[t]);
    const std::int32_t want_child = t < static_cast<std::size_t>(m) ? labels[t] : -1;
    const std::int32_t want_node =
        t < static_cast<std::size_t>(m)
            ? static_cast<std::int32_t>(child_begin[static_cast<std::size_t>(key(want_order[t]))] + labels[t])
            : -1;
    const float want_dist = t < static_cast<std::size_t>(m) ? dists[t] : 0.f;
    float got_dist;
    std::memcpy(&got_dist, &out[2 * nn + i], 4);
    bad_rows += out[i] != want_node || out[nn + i] != want_child || got_dist != want_dist ? 1 : 0;
  }
  CHECK_OR_FAIL(bad_rows == 0, "%lld rows' node, child or distance differ from the host's scatter", (long long)bad_rows);
  char name[160];
  std::snprintf(name, sizeof(name), "descent n=%lld parents=%lld (%lld rows under parents with children)",
                (long long)n, (long long)n_parents, (long long)m);
  report(name, ok, "order as a stable sort, runs counted, results as the host's scatter");
}

// A pass's node tallies on the device: `batches` calls of tally_rows_by_node on random nodes
// (some negative or >= n_nodes: skipped; `hot` of the rows on node 0, a run wider than a
// warp's loads) and distances, then take_node_tallies, against the host's loop (count += 1,
// inertia += double(dist) row after row, across the calls): counts equal and sums to the bit;
// then the array must be zero (a second take finds nothing).
void test_node_tallies(mc::Resources& res, std::mt19937_64& rng, std::int64_t n, std::int64_t n_nodes, int batches,
                       double hot) {
  bool ok = true;
  const auto nn = static_cast<std::size_t>(n), nodes = static_cast<std::size_t>(n_nodes);
  std::vector<std::int64_t> want_count(nodes, 0);
  std::vector<double> want_inertia(nodes, 0.0);
  mc::DeviceBuffer dtally(nodes * sizeof(mc::DeviceNodeTally)), dnode(nn * 4 + 4), ddist(nn * 4 + 4);
  const std::vector<mc::DeviceNodeTally> zeros(nodes);
  mc::copy_to_device(res, dtally.data(), zeros.data(), nodes * sizeof(mc::DeviceNodeTally));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::uniform_real_distribution<float> dd(0.f, 50.f);
  std::int64_t offered = 0;
  for (int b = 0; b < batches; ++b) {
    std::vector<std::int32_t> node(nn);
    std::vector<float> dist(nn);
    for (std::size_t i = 0; i < nn; ++i) {
      const double x = u(rng);
      node[i] = x < hot ? 0
                : x < hot + 0.05 ? static_cast<std::int32_t>(-1 - static_cast<std::int64_t>(rng() % 3))
                : x < hot + 0.07 ? static_cast<std::int32_t>(n_nodes + static_cast<std::int64_t>(rng() % 3))
                                 : static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(n_nodes));
      dist[i] = dd(rng) * (rng() % 7 == 0 ? 1e-6f : 1.f);  // magnitudes apart: the order matters
      if (node[i] >= 0 && node[i] < n_nodes) {
        ++want_count[static_cast<std::size_t>(node[i])];
        want_inertia[static_cast<std::size_t>(node[i])] += dist[i];
        ++offered;
      }
    }
    mc::copy_to_device(res, dnode.data(), node.data(), nn * 4);
    mc::copy_to_device(res, ddist.data(), dist.data(), nn * 4);
    mc::tally_rows_by_node(res, dnode.as<std::int32_t>(), ddist.as<float>(), n, n_nodes,
                           dtally.as<mc::DeviceNodeTally>());
    res.synchronize();  // the host's arrays are refilled next
  }
  mc::DeviceBuffer dnodes(nodes * 4), dcounts(nodes * 8), dinertia(nodes * 8), dtouched(8);
  auto take = [&] {
    mc::take_node_tallies(res, dtally.as<mc::DeviceNodeTally>(), n_nodes, dnodes.as<std::int32_t>(),
                          dcounts.as<std::int64_t>(), dinertia.as<double>(), dtouched.as<std::int64_t>());
    return download<std::int64_t>(res, dtouched, 1)[0];
  };
  const std::int64_t touched = take();
  const auto got_nodes = download<std::int32_t>(res, dnodes, nodes);
  const auto got_counts = download<std::int64_t>(res, dcounts, nodes);
  const auto got_inertia = download<double>(res, dinertia, nodes);
  std::vector<std::int32_t> want_nodes;
  for (std::size_t j = 0; j < nodes; ++j)
    if (want_count[j] > 0) want_nodes.push_back(static_cast<std::int32_t>(j));
  CHECK_OR_FAIL(touched == static_cast<std::int64_t>(want_nodes.size()), "%lld nodes taken, the host has %zu",
                (long long)touched, want_nodes.size());
  std::int64_t bad_node = 0, bad_count = 0, bad_sum = 0;
  for (std::size_t t = 0; t < want_nodes.size() && static_cast<std::int64_t>(t) < touched; ++t) {
    const auto j = static_cast<std::size_t>(want_nodes[t]);
    bad_node += got_nodes[t] != want_nodes[t] ? 1 : 0;
    bad_count += got_counts[t] != want_count[j] ? 1 : 0;
    bad_sum += std::memcmp(&got_inertia[t], &want_inertia[j], sizeof(double)) != 0 ? 1 : 0;
  }
  CHECK_OR_FAIL(bad_node == 0, "%lld taken nodes out of ascending order or not the host's", (long long)bad_node);
  CHECK_OR_FAIL(bad_count == 0, "%lld counts differ", (long long)bad_count);
  CHECK_OR_FAIL(bad_sum == 0, "%lld inertia sums differ from the host's in-order sums in some bit", (long long)bad_sum);
  const std::int64_t again = take();
  CHECK_OR_FAIL(again == 0, "the tallies were not zeroed: a second take found %lld nodes", (long long)again);
  char name[200];
  std::snprintf(name, sizeof(name), "node tallies n=%lld x %d batches, %lld nodes (%lld rows tallied, %.0f%% on one node)",
                (long long)n, batches, (long long)n_nodes, (long long)offered, hot * 100);
  report(name, ok, "counts, and float64 sums to the bit as the host's row-order loop");
}

// Page-locked buffers (both allocation paths: cudaMallocHost below 4 MiB, mapped and
// registered above): random bytes to the device and back into another buffer, after growing
// one; the driver must know them as page-locked host memory.
void test_pinned_buffers(mc::Resources& res, std::mt19937_64& rng, std::size_t bytes) {
  bool ok = true;
  mc::PinnedBuffer a(bytes / 2 + 1), b;
  a.reserve(bytes);  // grows: a fresh allocation
  b.reserve(bytes);
  CHECK_OR_FAIL(a.size() >= bytes && b.size() >= bytes, "sizes %zu, %zu < %zu", a.size(), b.size(), bytes);
  auto* src = a.as<unsigned char>();
  for (std::size_t i = 0; i < bytes; ++i) src[i] = static_cast<unsigned char>(rng());
  cudaPointerAttributes attr{};
  const bool known = cudaPointerGetAttributes(&attr, src) == cudaSuccess && attr.type == cudaMemoryTypeHost;
  CHECK_OR_FAIL(known, "the driver does not see the buffer as page-locked host memory");
  mc::DeviceBuffer dev(bytes);
  mc::copy_to_device(res, dev.data(), src, bytes);
  mc::copy_to_host(res, b.data(), dev.data(), bytes);
  CHECK_OR_FAIL(std::memcmp(b.data(), src, bytes) == 0, "the bytes came back changed");
  // An asynchronous read-back waited for on another thread through an event, with work
  // queued after it (the device buffer zeroed): the bytes as they were when it was queued.
  for (std::size_t i = 0; i < bytes; ++i) src[i] = static_cast<unsigned char>(rng());
  mc::copy_to_device(res, dev.data(), src, bytes);
  std::memset(b.data(), 0xA5, bytes);
  mc::copy_to_host_async(res, b.data(), dev.data(), bytes);
  mc::Event landed, never;
  landed.record(res);
  mc::fill_zero(res, dev.data(), bytes);
  never.synchronize();  // never recorded: complete
  mc::Event moved = std::move(landed);
  std::thread waiter([&] { moved.synchronize(); });
  waiter.join();
  CHECK_OR_FAIL(std::memcmp(b.data(), src, bytes) == 0, "the asynchronous read-back differs");
  res.synchronize();
  char name[120];
  std::snprintf(name, sizeof(name), "pinned buffer %zu bytes", bytes);
  report(name, ok, "registered with the driver, round trip byte-identical, async read-back through an event");
}

void test_means(mc::Resources& res, std::mt19937_64& rng, std::int64_t k, std::int64_t d, bool normalise,
                DType conv) {
  std::uniform_real_distribution<double> u(-50, 50);
  std::uniform_int_distribution<int> cnt(0, 40);
  std::vector<double> sums(static_cast<std::size_t>(k * d));
  std::vector<std::int64_t> counts(static_cast<std::size_t>(k));
  std::vector<std::uint8_t> keep(static_cast<std::size_t>(k));
  std::vector<float> start(static_cast<std::size_t>(k * d));
  for (auto& v : sums) v = u(rng);
  for (std::int64_t c = 0; c < k; ++c) {
    counts[c] = cnt(rng) < 5 ? 0 : cnt(rng) + 1;  // some empty clusters
    keep[c] = cnt(rng) < 4 ? 1 : 0;               // some kept
  }
  for (auto& v : start) v = static_cast<float>(u(rng));
  const std::size_t es = megatax::dtype_size(conv);
  mc::DeviceBuffer ds(sums.size() * 8), dc(counts.size() * 8), dk(keep.size() + 1), dcen(start.size() * 4),
      dconv(start.size() * es);
  mc::copy_to_device(res, ds.data(), sums.data(), sums.size() * 8);
  mc::copy_to_device(res, dc.data(), counts.data(), counts.size() * 8);
  mc::copy_to_device(res, dk.data(), keep.data(), keep.size());
  mc::copy_to_device(res, dcen.data(), start.data(), start.size() * 4);
  std::vector<unsigned char> start_conv(start.size() * es);
  megatax::convert_from_f32(start.data(), start.size(), conv, start_conv.data());
  mc::copy_to_device(res, dconv.data(), start_conv.data(), start_conv.size());
  mc::MeansArgs a;
  a.sums = ds.as<double>();
  a.counts = dc.as<std::int64_t>();
  a.k = k;
  a.d = d;
  a.keep = dk.as<std::uint8_t>();
  a.normalise = normalise;
  a.centroids = dcen.as<float>();
  a.converted = dconv.data();
  a.converted_dtype = conv;
  mc::means(res, a);
  const auto got = download<float>(res, dcen, start.size());
  std::vector<unsigned char> got_conv(start_conv.size());
  mc::copy_to_host(res, got_conv.data(), dconv.data(), got_conv.size());
  // Reference: float64 division cast to float (exact), then the float64 norm.
  std::vector<float> want = start;
  for (std::int64_t c = 0; c < k; ++c) {
    if (counts[c] == 0 || keep[c]) continue;
    double sq = 0;
    for (std::int64_t j = 0; j < d; ++j) {
      want[c * d + j] = static_cast<float>(sums[c * d + j] / static_cast<double>(counts[c]));
      sq += static_cast<double>(want[c * d + j]) * want[c * d + j];
    }
    if (normalise && sq > 0)
      for (std::int64_t j = 0; j < d; ++j) want[c * d + j] = static_cast<float>(want[c * d + j] / std::sqrt(sq));
  }
  std::int64_t bad = 0, bad_conv = 0;
  double max_err = 0;
  std::vector<unsigned char> want_conv(start_conv.size());
  megatax::convert_from_f32(got.data(), got.size(), conv, want_conv.data());
  for (std::size_t e = 0; e < want.size(); ++e) {
    const double err = std::fabs(static_cast<double>(got[e]) - want[e]) / (std::fabs(static_cast<double>(want[e])) + 1e-30);
    max_err = std::max(max_err, err);
    // Unnormalised: exact. Normalised: the device sums the squares in another order.
    if (normalise ? err > 1e-6 : got[e] != want[e]) ++bad;
  }
  for (std::size_t b = 0; b < want_conv.size(); ++b) bad_conv += want_conv[b] != got_conv[b];
  bool ok = true;
  CHECK_OR_FAIL(bad == 0, "%lld centroid values off", (long long)bad);
  CHECK_OR_FAIL(bad_conv == 0, "%lld bytes of the converted copy differ from the f32 values rounded", (long long)bad_conv);
  char name[160], detail[96];
  std::snprintf(name, sizeof(name), "means k=%lld d=%lld%s -> %s", (long long)k, (long long)d,
                normalise ? " normalised" : "", megatax::dtype_name(conv));
  std::snprintf(detail, sizeof(detail), "max rel err %.1e (empty and kept clusters untouched)", max_err);
  report(name, ok, detail);
}

// ---- Lloyd's decisions (lloyd_decide) -----------------------------------------------------
// Against LloydRun::assigned()'s rule written here: each problem's inertia summed one float64
// add a row in row order (distances of wide-ranging magnitudes: another order would round
// otherwise), its decision, its rows' labels numbered across the batch and its keep flags.
void test_lloyd_decide(mc::Resources& res, std::mt19937_64& rng, std::int64_t groups, std::int64_t max_rows) {
  std::uniform_int_distribution<std::int64_t> rows_of(1, max_rows), k_of(1, 50), iters(0, 5), pct(0, 99);
  std::uniform_real_distribution<double> expo(-8, 8);
  std::vector<std::int64_t> rb{0}, cb{0};
  for (std::int64_t g = 0; g < groups; ++g) {
    // Chunk edges (the kernel stages 2048 distances at a time) and random sizes.
    const std::int64_t edges[] = {2047, 2048, 2049, 4096};
    const std::int64_t n = g < 4 && max_rows >= 4096 ? edges[g] : rows_of(rng);
    rb.push_back(rb.back() + n);
    cb.push_back(cb.back() + std::min<std::int64_t>(k_of(rng), n));
  }
  const std::int64_t n = rb.back(), total_k = cb.back();
  std::vector<float> dist(static_cast<std::size_t>(n));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  for (std::int64_t g = 0; g < groups; ++g)
    for (std::int64_t i = rb[g]; i < rb[g + 1]; ++i) {
      dist[i] = static_cast<float>(std::exp2(expo(rng)));
      labels[i] = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(cb[g + 1] - cb[g]));
    }
  std::vector<std::uint8_t> assigned(static_cast<std::size_t>(groups));
  std::vector<mc::LloydProblem> probs(static_cast<std::size_t>(groups));
  std::vector<double> sums(static_cast<std::size_t>(groups));
  const double tols[] = {0, 1e-4, 1e-2, 1};
  for (std::int64_t g = 0; g < groups; ++g) {
    double s = 0;
    for (std::int64_t i = rb[g]; i < rb[g + 1]; ++i) s += static_cast<double>(dist[i]);
    sums[g] = s;
    assigned[g] = pct(rng) < 80 ? 1 : 0;
    probs[g].max_iter = static_cast<std::int32_t>(iters(rng));
    probs[g].updates = static_cast<std::int32_t>(std::min<std::int64_t>(iters(rng), probs[g].max_iter));
    probs[g].tol = tols[rng() % 4];
    // The last inertia near this one (relative changes around the tolerances) or far.
    const double rel[] = {0, 5e-5, 2e-4, 5e-3, 0.3};
    probs[g].last_inertia = s * (1 + rel[rng() % 5] * (pct(rng) < 50 ? 1 : -1));
  }
  const auto bytes = [](const auto& v) { return v.size() * sizeof(v[0]); };
  mc::DeviceBuffer drb(bytes(rb)), dcb(bytes(cb)), das(assigned.size()), dlab(bytes(labels)), ddist(bytes(dist)),
      dprob(bytes(probs)), din(static_cast<std::size_t>(groups) * 8), dup(static_cast<std::size_t>(groups)),
      dglob(bytes(labels)), dkeep(static_cast<std::size_t>(total_k));
  mc::copy_to_device(res, drb.data(), rb.data(), bytes(rb));
  mc::copy_to_device(res, dcb.data(), cb.data(), bytes(cb));
  mc::copy_to_device(res, das.data(), assigned.data(), assigned.size());
  mc::copy_to_device(res, dlab.data(), labels.data(), bytes(labels));
  mc::copy_to_device(res, ddist.data(), dist.data(), bytes(dist));
  mc::copy_to_device(res, dprob.data(), probs.data(), bytes(probs));
  mc::LloydDecideArgs a;
  a.groups = groups;
  a.row_begin = drb.as<std::int64_t>();
  a.centroid_begin = dcb.as<std::int64_t>();
  a.assigned = das.as<std::uint8_t>();
  a.labels = dlab.as<std::int32_t>();
  a.distances = ddist.as<float>();
  a.problems = dprob.as<mc::LloydProblem>();
  a.inertia = din.as<double>();
  a.updates = dup.as<std::uint8_t>();
  a.global_labels = dglob.as<std::int32_t>();
  a.keep = dkeep.as<std::uint8_t>();
  mc::lloyd_decide(res, a);
  const auto got_in = download<double>(res, din, static_cast<std::size_t>(groups));
  const auto got_up = download<std::uint8_t>(res, dup, static_cast<std::size_t>(groups));
  const auto got_prob = download<mc::LloydProblem>(res, dprob, probs.size());
  const auto got_glob = download<std::int32_t>(res, dglob, labels.size());
  const auto got_keep = download<std::uint8_t>(res, dkeep, static_cast<std::size_t>(total_k));
  std::int64_t bad_in = 0, bad_up = 0, bad_state = 0, bad_glob = 0, bad_keep = 0, updating = 0, converged = 0;
  for (std::int64_t g = 0; g < groups; ++g) {
    bool update = false;
    mc::LloydProblem want = probs[g];
    if (assigned[g]) {
      const double s = sums[g];
      const bool conv = want.updates > 0 && std::fabs(want.last_inertia - s) / std::max(std::fabs(s), 1e-300) < want.tol;
      update = !conv && want.updates != want.max_iter;
      converged += conv ? 1 : 0;
      want.last_inertia = s;
      want.updates += update ? 1 : 0;
      bad_in += std::memcmp(&got_in[g], &s, 8) != 0;
    }
    updating += update ? 1 : 0;
    bad_up += (got_up[g] != 0) != update;
    bad_state += std::memcmp(&got_prob[g].last_inertia, &want.last_inertia, 8) != 0 || got_prob[g].updates != want.updates ||
                 got_prob[g].max_iter != want.max_iter || got_prob[g].tol != want.tol;
    for (std::int64_t i = rb[g]; i < rb[g + 1]; ++i)
      bad_glob += got_glob[i] != (update ? labels[i] + static_cast<std::int32_t>(cb[g]) : -1);
    for (std::int64_t c = cb[g]; c < cb[g + 1]; ++c) bad_keep += got_keep[c] != (update ? 0 : 1);
  }
  bool ok = true;
  CHECK_OR_FAIL(bad_in == 0, "%lld inertia sums differ from the row-order float64 sum", (long long)bad_in);
  CHECK_OR_FAIL(bad_up == 0 && bad_state == 0, "%lld decisions, %lld states differ", (long long)bad_up,
                (long long)bad_state);
  CHECK_OR_FAIL(bad_glob == 0 && bad_keep == 0, "%lld labels, %lld keep flags differ", (long long)bad_glob,
                (long long)bad_keep);
  char name[120], detail[120];
  std::snprintf(name, sizeof(name), "lloyd_decide groups=%lld rows<=%lld", (long long)groups, (long long)max_rows);
  std::snprintf(detail, sizeof(detail), "%lld rows, %lld updating, %lld converged, bit-exact", (long long)n,
                (long long)updating, (long long)converged);
  report(name, ok, detail);
}

// ---- argument errors ----------------------------------------------------------------------

template <class F>
bool throws_invalid(F f) {
  try {
    f();
  } catch (const megatax::Error& e) {
    return e.code() == megatax::ErrorCode::kInvalidArgument;
  }
  return false;
}

void test_errors(mc::Resources& res, std::mt19937_64& rng) {
  const HostMatrix x = make_matrix(10, 8, 8, DType::kBF16, random_values(rng, 10, 8, 1.f));
  DeviceMatrix dx = upload(res, x);
  mc::DeviceBuffer labels(80), sums(8 * 8 * 8);
  bool ok = true;
  CHECK_OR_FAIL(throws_invalid([&] {
                  mc::AssignArgs a;
                  a.x = dx.view;
                  a.centroids = MatrixView(dx.view.data, 0, 8, DType::kBF16);  // k = 0
                  a.labels = labels.data();
                  mc::assign(res, a);
                }),
                "assign with k = 0 did not throw kInvalidArgument");
  CHECK_OR_FAIL(throws_invalid([&] { mc::copy_by_sms(res, labels.data(), sums.data(), 16, 0); }),
                "copy_by_sms on 0 SMs did not throw kInvalidArgument");
  CHECK_OR_FAIL(throws_invalid([&] { mc::copy_by_sms(res, nullptr, sums.data(), 16, 2); }),
                "copy_by_sms to a null pointer did not throw kInvalidArgument");
  CHECK_OR_FAIL(throws_invalid([&] {
                  mc::AssignArgs a;
                  a.x = dx.view;
                  a.centroids = MatrixView(dx.view.data, 4, 8, DType::kF16);  // dtype mismatch
                  a.labels = labels.data();
                  mc::assign(res, a);
                }),
                "assign with mismatched dtypes did not throw");
  // Two groups of a valid grouped assignment (rows 0-3 and 4-9 against centroids 0-2 and
  // 3-4), with one thing spoiled by `spoil`: must throw kInvalidArgument.
  auto grouped_refuses = [&](auto&& spoil) {
    return throws_invalid([&] {
      mc::GroupedAssignArgs a;
      a.x = dx.view;
      a.centroids = dx.view;
      a.row_begin = {0, 4, 10};
      a.centroid_begin = {0, 3};
      a.centroid_end = {3, 5};
      a.labels = labels.as<std::int32_t>();
      spoil(a);
      mc::assign_grouped(res, a);
    });
  };
  CHECK_OR_FAIL(grouped_refuses([](mc::GroupedAssignArgs& a) {
                  a.centroid_end = {3, 3};  // second group has no centroids
                }),
                "assign_grouped with an empty centroid range did not throw");
  CHECK_OR_FAIL(grouped_refuses([](mc::GroupedAssignArgs& a) {
                  a.row_begin = {0, 4, 9};  // does not end at n = 10
                }),
                "assign_grouped with row_begin not ending at n did not throw");
  CHECK_OR_FAIL(throws_invalid([&] {
                  mc::TopkArgs a;
                  a.queries = dx.view;
                  a.database = dx.view;
                  a.k = 5000;  // above the maximum
                  a.distances = static_cast<float*>(sums.data());
                  a.ids = static_cast<std::int64_t*>(labels.data());
                  mc::topk(res, a);
                }),
                "topk with k = 5000 did not throw");
  // Accumulates the 10 rows labelled `lab` (k = 8) into `sums`.
  auto accumulate_labels = [&](const std::vector<std::int64_t>& lab, bool skip_negative, bool check) {
    mc::copy_to_device(res, labels.data(), lab.data(), 80);
    res.synchronize();
    mc::AccumulateArgs a;
    a.x = dx.view;
    a.labels = labels.data();
    a.k = 8;
    a.sums = sums.data();
    a.skip_negative = skip_negative;
    a.check_labels = check;
    mc::accumulate(res, a);
  };
  // Whether accumulate (labels checked) refuses them.
  auto accumulate_refuses = [&](const std::vector<std::int64_t>& lab, bool skip_negative) {
    return throws_invalid([&] { accumulate_labels(lab, skip_negative, true); });
  };
  // A label out of range: error, and sums untouched.
  std::vector<std::int64_t> lab(10, 1);
  lab[7] = 8;
  std::vector<double> zero(64, 0.0);
  mc::copy_to_device(res, sums.data(), zero.data(), 64 * 8);
  res.synchronize();
  CHECK_OR_FAIL(accumulate_refuses(lab, false), "accumulate with label 8 >= k did not throw");
  const auto after = download<double>(res, sums, 64);
  CHECK_OR_FAIL(std::all_of(after.begin(), after.end(), [](double v) { return v == 0.0; }),
                "accumulate wrote sums before refusing a bad label");
  // -1 is an error unless asked to skip it; skipping negatives still refuses label >= k.
  lab[7] = -1;
  CHECK_OR_FAIL(accumulate_refuses(lab, false),
                "accumulate with label -1 and no skip_negative did not throw");
  lab[3] = 8;
  CHECK_OR_FAIL(accumulate_refuses(lab, true), "accumulate skipping negatives took label 8 >= k");
  // Unchecked (check_labels = false), label 8 >= k is summed nowhere, as a skipped -1 is.
  auto unchecked_sums = [&](const std::vector<std::int64_t>& l) {
    mc::copy_to_device(res, sums.data(), zero.data(), 64 * 8);
    accumulate_labels(l, true, false);
    res.synchronize();
    return download<double>(res, sums, 64);
  };
  const std::vector<double> with_bad = unchecked_sums(lab);
  std::vector<std::int64_t> lab_skipped = lab;
  lab_skipped[3] = -1;
  const std::vector<double> skipped = unchecked_sums(lab_skipped);
  CHECK_OR_FAIL(with_bad == skipped && std::any_of(skipped.begin(), skipped.end(), [](double v) { return v != 0.0; }),
                "unchecked accumulate: a label >= k was not summed nowhere");
  CHECK_OR_FAIL(grouped_refuses([](mc::GroupedAssignArgs& a) {
                  a.skip = {0};  // one flag for two groups
                }),
                "assign_grouped with a skip list of the wrong size did not throw");
  CHECK_OR_FAIL(throws_invalid([&] { mc::lloyd_decide(res, mc::LloydDecideArgs{}); }),
                "lloyd_decide with no groups and null arrays did not throw");
  {
    mc::DeviceBuffer node(64), tally(64 * sizeof(mc::DeviceNodeTally));
    auto* t = tally.as<mc::DeviceNodeTally>();
    CHECK_OR_FAIL(throws_invalid([&] { mc::tally_rows_by_node(res, node.as<std::int32_t>(), node.as<float>(), 4, 0, t); }),
                  "tally_rows_by_node with no nodes did not throw");
    CHECK_OR_FAIL(throws_invalid([&] { mc::tally_rows_by_node(res, nullptr, node.as<float>(), 4, 8, t); }),
                  "tally_rows_by_node with a null node array did not throw");
    CHECK_OR_FAIL(throws_invalid([&] {
                    mc::take_node_tallies(res, t, 8, nullptr, node.as<std::int64_t>(), node.as<double>(),
                                          node.as<std::int64_t>());
                  }),
                  "take_node_tallies with a null nodes array did not throw");
    CHECK_OR_FAIL(throws_invalid([&] {
                    mc::count_sorted_parents(res, node.as<std::int32_t>(), -1, node.as<std::int32_t>(),
                                             node.as<std::int32_t>(), node.as<std::int64_t>());
                  }),
                  "count_sorted_parents with n = -1 did not throw");
  }
  report("argument errors", ok,
         "k=0, dtype mismatch, k>4096, bad label, -1 label, unchecked labels, skip size, lloyd_decide, node tallies, runs");
}

}  // namespace

// Thrown past the remaining sections under --topk-only.
struct SkipRest {};

int main(int argc, char** argv) {
  std::uint64_t seed = std::random_device{}();
  seed = (seed << 32) ^ std::random_device{}();
  bool small = false, topk_only = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--small") == 0) {
      small = true;
    } else if (std::strcmp(argv[i], "--topk-only") == 0) {
      topk_only = true;  // the top-k cases alone (a selection variant under test)
    } else {
      std::fprintf(stderr, "usage: %s [--seed S] [--small] [--topk-only]\n", argv[0]);
      return 2;
    }
  }
  std::printf("cuda_kernels_test: seed %llu%s\n", (unsigned long long)seed,
              small ? " (--small)" : "");
  if (mc::device_count() == 0) {
    std::printf("cuda_kernels_test: no CUDA device visible: FAILED (this test needs a GPU)\n");
    return 1;
  }
  std::mt19937_64 rng(seed);
  try {
    mc::Resources res(0);
    std::printf("device: %s, %d SMs\n", res.device_name().c_str(), res.sm_count());
    const DType kB = DType::kBF16, kH = DType::kF16, kF = DType::kF32;
    std::vector<AssignCase> assign_cases;
    std::vector<TopkCase> topk_cases;
    std::vector<AccCase> acc_cases;
    std::vector<GroupedCase> grouped_cases;
    std::vector<RowDistCase> rowdist_cases = {{3000, 8, 2048, 1024, kB}, {500, 1, 37, 3, kF, 0, false}};
    if (small) {
      assign_cases = {{70, 130, 40, kB}, {33, 300, 17, kB, Metric::kL2, false, 3, true},
                      {70, 130, 17, kF}};
      // On Hopper: the few-query kernel (the first, the fourth and the last: chunks of two
      // tiles, so a merge of a sorted area into a list), the many-query one.
      topk_cases = {{5, 700, 24, 10, kB}, {3, 300, 5, 40, kF, Metric::kL2, false},
                    {40, 900, 64, 10, kB}, {6, 900, 40, 10, kF}, {40, 900, 36, 10, kF},
                    {4, 20000, 32, 100, kB}};
      acc_cases = {{3000, 20, 40, kB}, {500, 7, 3, kF, mc::SumType::kF32, true}};
      grouped_cases = {{5, 200, 40, 24, kB}, {4, 150, 9, 7, kF}, {6, 100, 20, 16, kH, Metric::kL2, 0, true}};
    } else {
      for (std::int64_t d : {1, 3, 17, 128, 1000, 1024, 2048}) {
        const std::int64_t n = d >= 1000 ? 700 : 3001;
        assign_cases.push_back({n, 257, d, kB});
        assign_cases.push_back({n, 257, d, kF});
      }
      assign_cases.push_back({1, 1, 1, kB});
      assign_cases.push_back({1, 1, 1, kF});
      assign_cases.push_back({129, 1, 64, kB});
      assign_cases.push_back({4096, 1024, 128, kB});
      assign_cases.push_back({4096, 1024, 128, kH});
      assign_cases.push_back({2000, 1000, 256, kB, Metric::kL2, true});   // uniform: near-ties
      assign_cases.push_back({1500, 200, 96, kB, Metric::kL2, false, 8, false, true});
      assign_cases.push_back({1500, 200, 95, kH, Metric::kL2, false, 3});  // unaligned stride
      assign_cases.push_back({1500, 200, 95, kF, Metric::kL2, false, 3});
      assign_cases.push_back({3000, 64, 128, kB, Metric::kL2, false, 0, true});  // dup ties
      assign_cases.push_back({3000, 64, 33, kF, Metric::kL2, false, 0, true});
      assign_cases.push_back({50, 3000, 64, kB, Metric::kL2, false, 0, true});   // K split + ties
      assign_cases.push_back({50, 3000, 64, kF, Metric::kL2, false, 0, true});
      assign_cases.push_back({300, 5000, 128, kH, Metric::kL2, false, 0, false, false, true});
      assign_cases.push_back({1000, 300, 128, kB, Metric::kInnerProduct});
      assign_cases.push_back({1000, 300, 100, kF, Metric::kInnerProduct});
      assign_cases.push_back({1000, 300, 64, kB, Metric::kL2, false, 0, false, true, true});
      assign_cases.push_back({3000, 700, 136, kB});                 // d chunk tail, 3 tiles
      assign_cases.push_back({5000, 513, 200, kH, Metric::kInnerProduct});
      assign_cases.push_back({20, 9000, 128, kB, Metric::kL2, false, 0, false, true});

      topk_cases = {
          {1, 1, 1, 1, kF},
          {3, 100, 3, 10, kF},
          {7, 50, 8, 64, kB},            // k > n: padded tails
          {17, 5000, 17, 100, kF},
          {17, 5000, 17, 100, kB},
          {64, 20000, 128, 10, kB},
          {64, 20000, 128, 10, kF},
          {130, 20000, 128, 100, kH},
          {20, 20000, 128, 1024, kF},
          {20, 20000, 128, 1024, kB},
          {100, 8000, 1024, 10, kB},
          {33, 3000, 2048, 1, kF},
          {33, 3000, 2048, 1, kB},
          {9, 4000, 1000, 32, kB, Metric::kL2, false},  // norms computed inside
          {200, 10000, 64, 50, kB, Metric::kInnerProduct},
          {50, 5000, 65, 20, kF, Metric::kInnerProduct},
          {40, 6000, 95, 37, kH, Metric::kL2, true, 5},  // strided, unaligned
          {40, 6000, 96, 37, kF, Metric::kL2, true, 4},  // f32 strided, 16-byte copies
          {70, 3001, 1000, 10, kF},                      // f32: many d chunks
          {300, 10000, 32, 100, kB, Metric::kL2, true, 0, std::size_t{1} << 20},  // batches
          // The Hopper kernel's edges (more than 16 queries, d a multiple of 8): query blocks
          // in clusters of 2 (d > 256) or alone, a d chunk tail, database tails, k past a
          // chunk, k > n.
          {1000, 30000, 136, 100, kB},
          // Lists large enough (queries x chunks x k) that a seed keeps its values in the
          // lists' id space rather than the scratch areas (topk_sm90.cu seed_bounds).
          {1000, 40000, 64, 200, kB},
          {300, 5000, 264, 20, kB},
          {257, 3001, 8, 5, kH},
          {64, 700, 128, 300, kB},
          {50, 100, 64, 200, kB},
          {129, 5000, 256, 64, kH, Metric::kInnerProduct, false},
          {300, 5001, 128, 20, kB, Metric::kL2, true, 0, std::size_t{1} << 30, false, true},
          // Equal scores in many chunks (79 and 39 of them: the union bound's windows).
          {64, 20000, 128, 10, kB, Metric::kL2, true, 0, std::size_t{1} << 30, false, false, 4},
          {130, 20000, 128, 100, kH, Metric::kL2, true, 0, std::size_t{1} << 30, false, false,
           3},
          // The few-query Hopper kernel (at most 16 queries): database tails, a d chunk tail,
          // long lists (k = 1024 over several chunks), one query, inner product, strided.
          {16, 100000, 128, 100, kB},
          {1, 30001, 72, 10, kH},
          {16, 20000, 1024, 1024, kB},
          {11, 20000, 64, 50, kB, Metric::kInnerProduct},
          {12, 777, 8, 5, kH, Metric::kL2, false},
          {16, 50000, 2048, 1, kB},
          {5, 9000, 120, 33, kH, Metric::kL2, true, 8},
          {4, 3840, 64, 128, kH, Metric::kL2, true, 0, std::size_t{1} << 20, true},
          // k = 4096 (the largest) over three chunks: more candidates below the shared bound
          // than the block select gathers into shared memory (list_select.cuh).
          {3, 60000, 32, 4096, kB},
          // ... and its f32 form (3xTF32; FFMA in the pass below): d a multiple of 4,
          // 32-float d chunks with a tail.
          {16, 100000, 128, 100, kF},
          {7, 20001, 36, 10, kF},
          {16, 20000, 1024, 1024, kF},
          {9, 5000, 64, 20, kF, Metric::kInnerProduct},
          {12, 3001, 100, 5, kF, Metric::kL2, false, 4},
          {4, 3840, 64, 128, kF, Metric::kL2, true, 0, std::size_t{1} << 20, true},
          // Equal scores across a few queries' lists: the block select's passes over the
          // ties' ids (list_select.cuh), with the keys in registers and read again (k = 1000).
          {16, 20000, 128, 100, kB, Metric::kL2, true, 0, std::size_t{1} << 30, false, false,
           40},
          {7, 20000, 64, 37, kH, Metric::kInnerProduct, true, 0, std::size_t{1} << 30, false,
           false, 16},
          {3, 100000, 64, 1000, kF, Metric::kL2, true, 0, std::size_t{1} << 30, false, false,
           7},
          {16, 200000, 64, 100, kB, Metric::kL2, true, 0, std::size_t{1} << 30, false, false,
           30},  // 132 lists of 100 (13,200 keys in registers), then the ties' ids
          // Copies within every 256-row tile: a chunk's first tile, whose k best are chosen
          // before they are sorted (warp_select.cuh select_empty_row), is cut inside a run
          // of equal scores (the few-query kernel and, with more queries, the many-query one).
          {16, 20000, 64, 100, kB, Metric::kL2, true, 0, std::size_t{1} << 30, false, false,
           200},
          {5, 20000, 40, 10, kH, Metric::kL2, true, 0, std::size_t{1} << 30, false, false, 1000},
          {200, 20000, 128, 10, kB, Metric::kL2, true, 0, std::size_t{1} << 30, false, false,
           400},
          {130, 30000, 264, 100, kB, Metric::kL2, true, 0, std::size_t{1} << 30, false, false,
           300},
      };
      grouped_cases = {
          {1, 5000, 100, 128, kB},                      // one group = plain assign
          {100, 400, 100, 1024, kB},                    // a level of 100 x 100
          {100, 400, 100, 1024, kH},
          {300, 50, 130, 64, kF},                       // tiny groups, > 1 tile of children
          {50, 700, 300, 96, kB, Metric::kL2, 8},       // strided
          {40, 300, 50, 95, kH, Metric::kL2, 3},        // unaligned stride
          {60, 300, 80, 128, kB, Metric::kInnerProduct},
          {60, 300, 80, 33, kF, Metric::kInnerProduct},
          {7, 1000, 300, 200, kB},                      // > 2 tiles of 128 children
          {100, 400, 100, 1024, kH, Metric::kL2, 0, true},  // converged problems skipped
          {60, 300, 80, 33, kF, Metric::kL2, 0, true},
      };
      rowdist_cases.insert(rowdist_cases.end(), {{5000, 16, 4096, 1024, kH},
                                                 {700, 5, 700, 1, kB, 0, false},
                                                 {2000, 3, 999, 2048, kF},
                                                 {1000, 9, 100, 95, kH, 3},
                                                 {4000, 7, 2048, 17, kF, 2}});
      acc_cases = {
          {100000, 1000, 128, kB},
          {200000, 16, 64, kF, mc::SumType::kF64, true, 0.6},
          {50000, 300, 1000, kH, mc::SumType::kF32},
          {20000, 50, 2048, kB},
          {5000, 7, 3, kF, mc::SumType::kF32},
          {5000, 4000, 17, kB, mc::SumType::kF64, true, 0.1},
          {1, 1, 1, kF},
          {100000, 2000, 1024, kH, mc::SumType::kF64, true, 0.1, 0.3},  // rows of no cluster
          {3000, 5, 7, kF, mc::SumType::kF32, false, 0.4, 0.9},
      };
    }
    // On Hopper, f16/bf16 assignments run the sm_90a (wgmma + TMA) kernel; the portable
    // mma.sync kernel, which other GPUs and TMA-incompatible strides use, is checked too
    // (MEGATAX_CUDA_ASSIGN=mma forces it).
    // f32 multiplies as 3xTF32 by default and with FFMA in the portable pass
    // (MEGATAX_CUDA_F32=ffma).
    for (const bool portable : {false, true}) {
      if (topk_only) break;
      if (portable) setenv("MEGATAX_CUDA_ASSIGN", "mma", 1);
      if (portable) setenv("MEGATAX_CUDA_F32", "ffma", 1);
      const char* which = portable ? "portable kernel, f32 on FFMA" : "default kernel";
      std::printf("assign, %s (reference: float64 argmin on the rounded inputs)\n", which);
      for (const auto& tc : assign_cases) test_assign(res, rng, tc);
      std::printf("grouped assign, %s (reference: float64 argmin within each group)\n", which);
      for (const auto& tc : grouped_cases) test_assign_grouped(res, rng, tc);
      for (const DType t : {kH, DType::kBF16, kF}) test_assign_position_free(res, rng, t);
      if (portable) unsetenv("MEGATAX_CUDA_ASSIGN");
      if (portable) unsetenv("MEGATAX_CUDA_F32");
    }
    std::printf("top-k (reference: float64 sort on the rounded inputs)\n");
    for (const auto& tc : topk_cases) test_topk(res, rng, tc);
    std::printf("top-k of f32 queries on FFMA (MEGATAX_CUDA_F32=ffma)\n");
    setenv("MEGATAX_CUDA_F32", "ffma", 1);
    for (const auto& tc : topk_cases) {
      if (tc.dtype == kF) test_topk(res, rng, tc);
    }
    unsetenv("MEGATAX_CUDA_F32");
    if (topk_only) throw SkipRest{};
    std::printf("accumulate (reference: float64 sums in row order)\n");
    for (const auto& tc : acc_cases) test_accumulate(res, rng, tc);
    test_accumulate_means(res, rng, 5000, 60, 1024, kH, kH);
    test_accumulate_means(res, rng, small ? 6000 : 20000, 7, 1500, kB, kB);
    test_accumulate_means(res, rng, 3000, 300, 33, kF, kH);
    std::printf("row distances (reference: float64 on the rounded inputs)\n");
    for (const auto& tc : rowdist_cases) test_row_distances(res, rng, tc);
    test_row_distances_grouped(res, rng, 1024, kH, 0, 40, 300, 8);
    test_row_distances_grouped(res, rng, 17, kF, 3, 300, 4, 16);
    if (!small) {
      test_row_distances_grouped(res, rng, 2048, kF, 0, 12, 700, 16);  // 128 KiB of candidates
      test_row_distances_grouped(res, rng, 95, kB, 1, 500, 40, 5);
      test_row_distances_grouped(res, rng, 1024, kB, 0, 200, 2048, 8);
    }
    std::printf("pool Gram matrices (reference: float64 dots, row_distances' bits)\n");
    test_pool_gram(res, rng, 1024, kB, 0, 9, 300);
    test_pool_gram(res, rng, 40, kH, 8, 30, 140);
    test_seed_grouped_gram(res, rng, 1024, kB, 12, 400);
    if (!small) {
      test_pool_gram(res, rng, 1000, kH, 0, 5, 700);
      test_pool_gram(res, rng, 8, kB, 0, 40, 20);
      test_seed_grouped_gram(res, rng, 96, kH, 200, 150);
      test_seed_grouped_gram(res, rng, 1024, kH, 6, 2048);
      test_seed_grouped_gram(res, rng, 16, kB, 2, 17000);  // running-sum segments wider than a stage
    }
    std::printf("gather rows (reference: the host's gather)\n");
    test_gather_rows(res, rng, 2048, 5000, 7001);
    test_gather_rows(res, rng, 34, 300, 1000);
    test_gather_rows(res, rng, 5, 17, 64);
    test_gather_rows_at(res, rng, 2048, 5000, 7001);
    test_gather_rows_at(res, rng, 34, 300, 1000);
    // Kept to a few SMs (rows read over the bus): each warp takes many rows; rows of more
    // pieces than a warp loads at once (4112 bytes: 257 pieces) and of bytes.
    test_gather_rows_at(res, rng, 2048, 5000, 7001, 3, true);
    test_gather_rows_at(res, rng, 4112, 900, 3001, 1, true);
    test_gather_rows_at(res, rng, 34, 300, 1000, 2, true);
    test_gather_rows_at(res, rng, 4112, 900, 2999, 5, false);
    // A batch's copy over the bus by a few SMs: more pieces than a grid's threads take at once,
    // a tail of bytes, the byte path (unaligned), one SM, from device memory.
    test_copy_by_sms(res, rng, (std::size_t{3} << 20) + 7, 0, 4, true);
    test_copy_by_sms(res, rng, 100003, 5, 2, true);
    test_copy_by_sms(res, rng, 70000, 16, 1, true);
    test_copy_by_sms(res, rng, 12345, 0, 8, false);
    test_copy_by_sms(res, rng, 15, 0, 3, true);
    test_registered_file_mapping(res, rng, 2048, 3000, 5001, 128);  // an .npy header's size
    test_registered_file_mapping(res, rng, 34, 1000, 777, 8);       // .fbin's; byte rows
    std::printf("descent on the device (reference: the host's stable sort and scatter)\n");
    test_descent(res, rng, 1, 1);
    test_descent(res, rng, 1000, 7);
    test_descent(res, rng, 125000, 9200);
    test_descent(res, rng, 70001, 1 << 20);  // 21-bit keys
    std::printf("node tallies on the device (reference: the host's row-order loop)\n");
    test_node_tallies(res, rng, 1, 1, 1, 0.0);
    test_node_tallies(res, rng, 125000, 1000000, 1, 0.0);  // a level-3 shard: runs of 1-2 rows
    test_node_tallies(res, rng, 125000, 10000, 3, 0.0);    // a shard of three batches
    test_node_tallies(res, rng, 70001, 5, 2, 0.5);         // runs of tens of thousands
    test_node_tallies(res, rng, 3000, 1 << 21, 2, 0.1);    // 22-bit keys
    std::printf("rows to f32 (reference: the host's values)\n");
    test_rows_to_f32(res, rng, 3001, 1024, kH, 0);
    test_rows_to_f32(res, rng, 777, 33, kB, 5);
    test_rows_to_f32(res, rng, 50, 7, kF, 1);
    std::printf("rows normalised (reference: the host's float64 arithmetic, to the bit)\n");
    test_normalise_rows(res, rng, 2049, 1024, kH, 0);
    test_normalise_rows(res, rng, 777, 33, kB, 5);
    test_normalise_rows(res, rng, 95, 7, kF, 1);
    test_normalise_rows(res, rng, 300, 2048, kF, 0);
    std::printf("non-finite values found on the device (reference: the host's scan)\n");
    test_find_non_finite_row(res, rng, 4096, 1024, kH, 0, 0);
    test_find_non_finite_row(res, rng, 4096, 1024, kH, 0, 3);
    test_find_non_finite_row(res, rng, 2000, 256, kB, 0, 1);
    test_find_non_finite_row(res, rng, 777, 33, kB, 5, 2);
    test_find_non_finite_row(res, rng, 3001, 100, kF, 0, 4);
    test_find_non_finite_row(res, rng, 1001, 7, kH, 0, 1);
    test_find_non_finite_row(res, rng, 50, 9, kF, 2, 0);
    std::printf("page-locked buffers (reference: the bytes written)\n");
    for (const std::size_t bytes : {std::size_t{1} << 20, (std::size_t{70} << 20) + 3}) test_pinned_buffers(res, rng, bytes);
    std::printf("means (reference: float64 division, float64 norms)\n");
    test_means(res, rng, 300, 1024, false, kH);
    test_means(res, rng, 77, 33, true, kB);
    test_means(res, rng, 5, 3000, true, kF);
    test_lloyd_decide(res, rng, 200, small ? 3000 : 9000);
    test_lloyd_decide(res, rng, 7, 40);
    if (!small) test_errors(res, rng);
  } catch (const SkipRest&) {
    // --topk-only
  } catch (const std::exception& e) {
    std::printf("cuda_kernels_test: exception: %s\n", e.what());
    ++g_failures;
  }
  std::printf("cuda_kernels_test: %d cases, %d failed (seed %llu) -> %s\n", g_cases, g_failures,
              (unsigned long long)seed, g_failures == 0 ? "PASS" : "FAIL");
  return std::min(g_failures, 100);
}
