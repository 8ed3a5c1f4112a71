// bench_kmeans -- times one flat k-means fit (cluster::fit_kmeans with the CPU assigner):
// total time, k-means++ seeding, every assignment and update, the assignment GFLOP/s and
// the final inertia.
//
// Data: a .fbin file (big-ann-benchmarks layout: uint32 n, uint32 d, then n * d float32,
// row-major), e.g. the one bench/kmeans_faiss.py writes so FAISS runs on the same vectors,
// or a seeded Gaussian mixture generated here (--n --d: 4k true centres ~ N(0, I), points
// = centre + noise * N(0, I); row i depends on (seed, i) only).
//
// Lloyd as fit_kmeans does it, with max_iter = --iters and tol = 0: seeding, then --iters
// rounds of (assign, update), then one final assignment of the returned centroids, so
// iters + 1 assignments in all (FAISS's Kmeans(niter) does niter assign + update rounds and
// never assigns its final centroids). assign_gflops counts 2 * n * k * d flops per
// assignment over the time spent in Assigner::set_centroids + assign (a timing wrapper
// around CpuAssigner); seeding time is the time from the start of fit_kmeans to its first
// set_centroids call (k-means++ is all fit_kmeans does before that).
//
// Prints a human report and one machine-readable line:
//   RESULT n=.. d=.. k=.. iters=.. threads=.. simd=.. seconds=.. seed_seconds=..
//          lloyd_seconds=.. assign_seconds=.. update_seconds=.. final_assign_seconds=..
//          assign_gflops=.. inertia=.. empty=..
// (inertia = inertia.back(): the float32 distances of the final assignment summed in
// float64; empty = centroids with no point in the final assignment.)
// Exit status: 0 ok, 1 the benchmark failed (one line on stderr), 2 bad command line.
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <new>
#include <numbers>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/assigner.h"
#include "cluster/kmeans.h"
#include "core/parallel.h"
#include "kernels/cpu/simd_level.h"
#include "megatax/error.h"
#include "megatax/storage.h"
#include "megatax/vector_format.h"

namespace {

using megatax::ErrorCode;
using megatax::throw_error;
using Clock = std::chrono::steady_clock;

constexpr const char* kUsage = R"(usage: bench_kmeans [flags]

Times one k-means fit (k-means++ seeding + Lloyd) of N vectors of dimension D into K clusters.

  --data FILE              read the points from a .fbin file (default: generate, see --n --d)
  --n N                    generated points (default 200000); with --data: use the first N rows
  --d D                    generated dimension (default 128)
  --k K                    clusters (default 1024)
  --iters I                Lloyd updates; tol is 0, so exactly I (default 10)
  --threads T              worker threads, 0 = all hardware threads (default 0)
  --seed S                 k-means++ seed and data seed (default 1234)
  --simd S                 auto|scalar|avx2|avx512|neon (default auto)
  --init-sample-per-centroid M
                           k-means++ subsample: at most M * K points (default 8, as KMeansParams)
  --noise X                generated data: noise standard deviation (default 1.0)
  --centres-per-k C        generated data: true centres per cluster asked for (default 4)
  --write-centroids FILE   save the final K x D centroids as .fbin
  --help                   print this and exit
)";

struct Config {
  std::string data_file, centroids_out, simd = "auto";
  std::int64_t n = 200000, d = 128, k = 1024, init_sample_per_centroid = 8, centres_per_k = 4;
  int iters = 10, threads = 0;
  std::uint64_t seed = 1234;
  double noise = 1.0;
  bool n_set = false, d_set = false;
};

// A command-line problem: reported as one line, exit status 2.
struct UsageError {
  std::string message;
};

template <typename T>
T parse_int(std::string_view flag, std::string_view text, T min_value) {
  T v{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty() || v < min_value)
    throw UsageError{std::string(flag) + ": expected an integer >= " + std::to_string(min_value) +
                     ", got '" + std::string(text) + "'"};
  return v;
}

double parse_real(std::string_view flag, const std::string& text, double min_value) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno != 0 || !std::isfinite(v) || v < min_value)
    throw UsageError{std::string(flag) + ": expected a number >= " + std::to_string(min_value) +
                     ", got '" + text + "'"};
  return v;
}

// Returns false when --help was given.
bool parse_args(int argc, char** argv, Config* c) {
  static constexpr std::string_view kFlags[] = {"--data",
                                                "--n",
                                                "--d",
                                                "--k",
                                                "--iters",
                                                "--threads",
                                                "--seed",
                                                "--simd",
                                                "--noise",
                                                "--centres-per-k",
                                                "--init-sample-per-centroid",
                                                "--write-centroids"};
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") return false;
    if (arg.substr(0, 2) != "--")
      throw UsageError{"unexpected argument '" + std::string(arg) + "'"};
    std::string flag(arg), value;
    if (const auto eq = arg.find('='); eq != std::string_view::npos) {
      flag = std::string(arg.substr(0, eq));
      value = std::string(arg.substr(eq + 1));
    }
    if (std::find(std::begin(kFlags), std::end(kFlags), flag) == std::end(kFlags))
      throw UsageError{"unknown flag '" + flag + "' (see --help)"};
    if (flag.size() == arg.size()) {
      if (i + 1 >= argc) throw UsageError{flag + ": missing value"};
      value = argv[++i];
    }
    if (flag == "--data") {
      c->data_file = value;
    } else if (flag == "--n") {
      c->n = parse_int<std::int64_t>(flag, value, 1);
      c->n_set = true;
    } else if (flag == "--d") {
      c->d = parse_int<std::int64_t>(flag, value, 1);
      c->d_set = true;
    } else if (flag == "--k") {
      c->k = parse_int<std::int64_t>(flag, value, 1);
    } else if (flag == "--iters") {
      c->iters = parse_int<int>(flag, value, 0);
    } else if (flag == "--threads") {
      c->threads = parse_int<int>(flag, value, 0);
    } else if (flag == "--seed") {
      c->seed = parse_int<std::uint64_t>(flag, value, 0);
    } else if (flag == "--simd") {
      megatax::kernels::parse_simd_level(value);  // validates (throws Error)
      c->simd = value;
    } else if (flag == "--noise") {
      c->noise = parse_real(flag, value, 0.0);
    } else if (flag == "--centres-per-k") {
      c->centres_per_k = parse_int<std::int64_t>(flag, value, 1);
    } else if (flag == "--init-sample-per-centroid") {
      c->init_sample_per_centroid = parse_int<std::int64_t>(flag, value, 1);
    } else if (flag == "--write-centroids") {
      c->centroids_out = value;
    }
  }
  return true;
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// ---- data ----------------------------------------------------------------------------------

std::uint64_t splitmix64(std::uint64_t* state) {
  std::uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// d standard normal floats (Box-Muller) from `state`.
void normal_row(std::uint64_t* state, std::int64_t d, float scale, float* out) {
  for (std::int64_t j = 0; j < d; j += 2) {
    const double u1 = (static_cast<double>(splitmix64(state) >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53;
    const double radius = std::sqrt(-2.0 * std::log(u1)) * scale;
    out[j] = static_cast<float>(radius * std::cos(2.0 * std::numbers::pi * u2));
    if (j + 1 < d) out[j + 1] = static_cast<float>(radius * std::sin(2.0 * std::numbers::pi * u2));
  }
}

// n x d points of a Gaussian mixture with `centres` true centres ~ N(0, I); point i =
// centre[hash(seed, i) mod centres] + noise * N(0, I). Row i depends on (seed, i) only.
std::vector<float> gaussian_mixture(std::int64_t n, std::int64_t d, std::int64_t centres,
                                    double noise, std::uint64_t seed, int threads) {
  std::vector<float> centre_rows(static_cast<std::size_t>(centres * d));
  for (std::int64_t c = 0; c < centres; ++c) {
    std::uint64_t state = seed * 0x100000001B3ull ^ (1ull << 62) ^ static_cast<std::uint64_t>(c);
    normal_row(&state, d, 1.0f, centre_rows.data() + c * d);
  }
  std::vector<float> out(static_cast<std::size_t>(n * d));
  constexpr std::int64_t kRowsPerTask = 1024;
  megatax::parallel_for(
      threads, (n + kRowsPerTask - 1) / kRowsPerTask, [&](std::int64_t task, int) {
        const std::int64_t r1 = std::min(n, (task + 1) * kRowsPerTask);
        for (std::int64_t r = task * kRowsPerTask; r < r1; ++r) {
          std::uint64_t state = seed * 0x100000001B3ull ^ static_cast<std::uint64_t>(r);
          const auto c =
              static_cast<std::int64_t>(splitmix64(&state) % static_cast<std::uint64_t>(centres));
          float* row = out.data() + r * d;
          normal_row(&state, d, static_cast<float>(noise), row);
          const float* centre = centre_rows.data() + c * d;
          for (std::int64_t j = 0; j < d; ++j) row[j] += centre[j];
        }
      });
  return out;
}

// Rows [0, max_rows) of a vector file (all when max_rows <= 0) as float32.
std::vector<float> read_points(const std::string& path, std::int64_t max_rows, std::int64_t* rows,
                               std::int64_t* dim) {
  std::string inner;
  auto storage = megatax::open_storage_for_uri(path, &inner);
  auto reader = megatax::open_vector_file(*storage, inner);
  if (max_rows > reader->rows())
    throw_error(ErrorCode::kInvalidArgument, "--data " + path + ": asked for " +
                                                 std::to_string(max_rows) + " rows, it holds " +
                                                 std::to_string(reader->rows()));
  *rows = max_rows > 0 ? max_rows : reader->rows();
  *dim = reader->dim();
  std::vector<float> out(static_cast<std::size_t>(*rows * *dim));
  reader->read_f32(0, *rows, out.data());
  return out;
}

void write_fbin(const std::string& path, const std::vector<float>& x, std::int64_t rows,
                std::int64_t dim) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr)
    throw_error(ErrorCode::kIoError,
                "centroids file " + tmp + ": cannot create: " + std::strerror(errno));
  const std::uint32_t header[2] = {static_cast<std::uint32_t>(rows),
                                   static_cast<std::uint32_t>(dim)};
  const bool ok = std::fwrite(header, sizeof header, 1, f) == 1 &&
                  std::fwrite(x.data(), sizeof(float), x.size(), f) == x.size();
  if (std::fclose(f) != 0 || !ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw_error(ErrorCode::kIoError, "centroids file " + path + ": write failed");
  }
}

// ---- timing assigner -----------------------------------------------------------------------

// Forwards to a CpuAssigner and records when each set_centroids / assign call starts and
// ends. One assignment = one set_centroids (packing the centroids) + one assign.
// Thread-safety: as Assigner (one thread at a time).
class TimingAssigner final : public megatax::cluster::Assigner {
 public:
  struct Call {
    Clock::time_point begin;  // set_centroids called
    Clock::time_point end;    // assign returned
  };

  explicit TimingAssigner(megatax::kernels::KnnOptions options)
      : inner_(megatax::Metric::kL2, options) {}

  void set_centroids(const float* centroids, std::int64_t k, std::int64_t dim) override {
    calls_.push_back({Clock::now(), {}});
    inner_.set_centroids(centroids, k, dim);
  }
  void assign(const megatax::MatrixView& x, std::int64_t* labels, float* distances) override {
    inner_.assign(x, labels, distances);
    calls_.back().end = Clock::now();
  }

  const std::vector<Call>& calls() const noexcept { return calls_; }

 private:
  megatax::cluster::CpuAssigner inner_;
  std::vector<Call> calls_;
};

int run(const Config& c) {
  namespace kernels = megatax::kernels;
  const kernels::SimdLevel simd = kernels::resolve_simd_level(kernels::parse_simd_level(c.simd));
  const int threads = megatax::resolve_threads(c.threads, std::numeric_limits<std::int64_t>::max());

  // Data.
  const auto t_data = Clock::now();
  std::int64_t n = c.n, d = c.d;
  std::vector<float> x;
  std::string source;
  if (!c.data_file.empty()) {
    x = read_points(c.data_file, c.n_set ? c.n : 0, &n, &d);
    if (c.d_set && d != c.d)
      throw_error(ErrorCode::kInvalidArgument, "--data " + c.data_file + " has dim " +
                                                   std::to_string(d) + ", --d is " +
                                                   std::to_string(c.d));
    source = c.data_file;
  } else {
    const std::int64_t centres = c.centres_per_k * c.k;
    x = gaussian_mixture(n, d, centres, c.noise, c.seed, c.threads);
    char buf[160];
    std::snprintf(buf, sizeof buf, "gaussian mixture, %lld centres, noise %.3g, seed %llu",
                  static_cast<long long>(centres), c.noise,
                  static_cast<unsigned long long>(c.seed));
    source = buf;
  }
  const double data_s = seconds_between(t_data, Clock::now());
  std::printf(
      "config: n=%lld d=%lld k=%lld iters=%d tol=0 threads=%d simd=%s "
      "init_sample_per_centroid=%lld data=%s (%.2f s)\n",
      static_cast<long long>(n), static_cast<long long>(d), static_cast<long long>(c.k), c.iters,
      threads, kernels::simd_level_name(simd), static_cast<long long>(c.init_sample_per_centroid),
      source.c_str(), data_s);

  // Fit.
  megatax::cluster::KMeansParams params;
  params.k = c.k;
  params.max_iter = c.iters;
  params.tol = 0;
  // As FAISS: --iters assignments each followed by an update; the returned centroids are
  // scored by the exact evaluator of compare_kmeans.sh, not by an extra assignment.
  params.final_assignment = false;
  params.seed = c.seed;
  params.threads = c.threads;
  params.init_sample_per_centroid = c.init_sample_per_centroid;
  kernels::KnnOptions knn;
  knn.threads = c.threads;
  knn.simd = simd;
  TimingAssigner assigner(knn);
  const megatax::MatrixView view = megatax::f32_view(x.data(), n, d);
  const auto t0 = Clock::now();
  const megatax::cluster::KMeansResult r = megatax::cluster::fit_kmeans(view, params, assigner);
  const auto t1 = Clock::now();

  // Report.
  const auto& calls = assigner.calls();
  if (calls.empty()) throw_error(ErrorCode::kInternal, "fit_kmeans made no assignment");
  const double total_s = seconds_between(t0, t1);
  const double seed_s = seconds_between(t0, calls.front().begin);
  const double flops =
      2.0 * static_cast<double>(n) * static_cast<double>(c.k) * static_cast<double>(d);
  double assign_s = 0, update_s = 0;
  std::printf("%-5s %10s %10s %10s %18s\n", "iter", "assign_s", "GFLOP/s", "update_s", "inertia");
  for (std::size_t i = 0; i < calls.size(); ++i) {
    const double a = seconds_between(calls[i].begin, calls[i].end);
    const double u = i + 1 < calls.size() ? seconds_between(calls[i].end, calls[i + 1].begin)
                                          : seconds_between(calls[i].end, t1);
    assign_s += a;
    update_s += u;
    const double inertia = i < r.inertia.size() ? r.inertia[i] : std::nan("");
    std::printf("%-5zu %10.4f %10.1f %10.4f %18.8g\n", i, a, flops / a / 1e9, u, inertia);
  }
  const double final_assign_s = seconds_between(calls.back().begin, calls.back().end);
  const double lloyd_s = total_s - seed_s;
  const double gflops = flops * static_cast<double>(calls.size()) / assign_s / 1e9;
  const auto empty = std::count(r.counts.begin(), r.counts.end(), std::int64_t{0});
  std::printf(
      "total %.3f s = seeding %.3f s (%.0f%%) + Lloyd %.3f s (%zu assignments %.3f s, "
      "updates %.3f s); last assignment alone %.3f s\n",
      total_s, seed_s, 100 * seed_s / total_s, lloyd_s, calls.size(), assign_s, update_s,
      final_assign_s);
  std::printf(
      "assignment: %.1f GFLOP/s (2*n*k*d per assignment); final inertia %.10g; "
      "%d updates; %lld empty clusters\n",
      gflops, r.inertia.back(), r.iterations, static_cast<long long>(empty));
  std::printf(
      "RESULT n=%lld d=%lld k=%lld iters=%d threads=%d simd=%s seconds=%.4f "
      "seed_seconds=%.4f lloyd_seconds=%.4f assign_seconds=%.4f update_seconds=%.4f "
      "final_assign_seconds=%.4f assign_gflops=%.2f inertia=%.10g empty=%lld\n",
      static_cast<long long>(n), static_cast<long long>(d), static_cast<long long>(c.k),
      r.iterations, threads, kernels::simd_level_name(simd), total_s, seed_s, lloyd_s, assign_s,
      update_s, final_assign_s, gflops, r.inertia.back(), static_cast<long long>(empty));
  if (!c.centroids_out.empty()) write_fbin(c.centroids_out, r.centroids, c.k, d);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config config;
  try {
    if (!parse_args(argc, argv, &config)) {
      std::fputs(kUsage, stdout);
      return 0;
    }
  } catch (const UsageError& e) {
    std::fprintf(stderr, "bench_kmeans: %s\n", e.message.c_str());
    return 2;
  } catch (const megatax::Error& e) {
    std::fprintf(stderr, "bench_kmeans: %s\n", e.what());
    return 2;
  }
  try {
    return run(config);
  } catch (const megatax::Error& e) {
    std::fprintf(stderr, "bench_kmeans: %s: %s\n", megatax::error_code_name(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "bench_kmeans: out of memory\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kmeans: internal error: %s\n", e.what());
  }
  return 1;
}
