// bench_indexflat -- measures IndexFlat k-NN search: latency, QPS, GFLOP/s and GB/s.
//
// Data is random (seeded, deterministic whatever the thread count) or read from .fbin files
// (big-ann-benchmarks layout: uint32 n, uint32 d, then n * d float32, row-major) so that a
// peer (bench/faiss_bench.py) can be measured on exactly the same vectors.
// Prints a human summary and one machine-readable line starting with "RESULT ".
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

#include "core/parallel.h"
#include "kernels/cpu/simd_level.h"
#include "megatax/error.h"
#include "megatax/index_flat.h"

namespace {

using megatax::ErrorCode;
using megatax::throw_error;

constexpr const char* kUsage = R"(usage: bench_indexflat [flags]

Builds an exact flat index of N random vectors of dimension D and times k-NN search of Q
random queries.

  --q Q            queries per search (default 128)
  --n N            database vectors (default 200000)
  --d D            dimension (default 128)
  --k K            neighbours per query (default 10)
  --iters I        timed searches (default 5)
  --warmup W       untimed searches first (default 1)
  --dtype T        index storage: fp32|fp16|bf16 (default fp32)
  --metric M       l2|ip (default l2)
  --backend B      auto|cpu|cuda (default auto)
  --devices LIST   cuda: the GPUs holding the database, comma-separated, e.g. 0,1 (its rows
                   dealt to them in blocks, searched at once; default 0)
  --device-warmup B  cuda, 1: before the build, time a 1-row index's first search apart (the
                   process's device context and kernel loading), so that the first search
                   printed after the build is the database's copy alone (default 0)
  --threads T      worker threads, 0 = all hardware threads (default 0)
  --simd S         auto|scalar|avx2|avx512|neon (default auto)
  --seed S         random seed (default 1234)
  --dist D         random distribution: normal|uniform (default normal; uniform is [0,1))
  --base FILE      read the database from a .fbin file instead (--n: use the first N rows)
  --queries FILE   read the queries from a .fbin file instead (--q: use the first Q rows)
  --ids-out FILE   write the last search's ids: uint32 nq, uint32 k, then nq*k int64
  --help           print this and exit
)";

struct Config {
  std::int64_t q = 128, n = 200000, d = 128, k = 10;
  int iters = 5, warmup = 1, threads = 0, device_warmup = 0;
  std::string dtype = "fp32", metric = "l2", backend = "auto", simd = "auto", dist = "normal";
  std::uint64_t seed = 1234;
  std::string base_file, queries_file, ids_out;
  std::vector<int> devices;
  bool q_set = false, n_set = false, d_set = false;
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

void check_choice(std::string_view flag, const std::string& value,
                  std::initializer_list<const char*> choices) {
  std::string list;
  for (const char* c : choices) {
    if (value == c) return;
    list += list.empty() ? c : std::string("|") + c;
  }
  throw UsageError{std::string(flag) + ": expected " + list + ", got '" + value + "'"};
}

// Returns false when --help was given.
bool parse_args(int argc, char** argv, Config* c) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") return false;
    if (arg.substr(0, 2) != "--")
      throw UsageError{"unexpected argument '" + std::string(arg) + "'"};
    std::string flag(arg), value;
    const auto eq_pos = arg.find('=');
    if (eq_pos != std::string_view::npos) flag = std::string(arg.substr(0, eq_pos));
    static constexpr std::string_view kFlags[] = {"--q",     "--n",      "--d",       "--k",
                                                  "--iters", "--warmup", "--threads", "--seed",
                                                  "--dtype", "--metric", "--backend", "--simd",
                                                  "--dist",  "--base",   "--queries", "--ids-out",
                                                  "--devices", "--device-warmup"};
    if (std::find(std::begin(kFlags), std::end(kFlags), flag) == std::end(kFlags))
      throw UsageError{"unknown flag '" + flag + "' (see --help)"};
    if (const auto eq = arg.find('='); eq != std::string_view::npos) {
      flag = std::string(arg.substr(0, eq));
      value = std::string(arg.substr(eq + 1));
    } else {
      if (i + 1 >= argc) throw UsageError{flag + ": missing value"};
      value = argv[++i];
    }
    if (flag == "--q") {
      c->q = parse_int<std::int64_t>(flag, value, 1);
      c->q_set = true;
    } else if (flag == "--n") {
      c->n = parse_int<std::int64_t>(flag, value, 1);
      c->n_set = true;
    } else if (flag == "--d") {
      c->d = parse_int<std::int64_t>(flag, value, 1);
      c->d_set = true;
    } else if (flag == "--k") {
      c->k = parse_int<std::int64_t>(flag, value, 1);
    } else if (flag == "--iters") {
      c->iters = parse_int<int>(flag, value, 1);
    } else if (flag == "--warmup") {
      c->warmup = parse_int<int>(flag, value, 0);
    } else if (flag == "--threads") {
      c->threads = parse_int<int>(flag, value, 0);
    } else if (flag == "--seed") {
      c->seed = parse_int<std::uint64_t>(flag, value, 0);
    } else if (flag == "--dtype") {
      check_choice(flag, value, {"fp32", "fp16", "bf16", "f32", "f16"});
      c->dtype = value;
    } else if (flag == "--metric") {
      check_choice(flag, value, {"l2", "ip"});
      c->metric = value;
    } else if (flag == "--device-warmup") {
      c->device_warmup = parse_int<int>(flag, value, 0);
    } else if (flag == "--backend") {
      check_choice(flag, value, {"auto", "cpu", "cuda"});
      c->backend = value;
    } else if (flag == "--simd") {
      check_choice(flag, value, {"auto", "scalar", "avx2", "avx512", "neon"});
      c->simd = value;
    } else if (flag == "--dist") {
      check_choice(flag, value, {"normal", "uniform"});
      c->dist = value;
    } else if (flag == "--base") {
      c->base_file = value;
    } else if (flag == "--queries") {
      c->queries_file = value;
    } else if (flag == "--ids-out") {
      c->ids_out = value;
    } else if (flag == "--devices") {
      c->devices.clear();
      std::string_view rest = value;
      while (true) {
        const auto comma = rest.find(',');
        c->devices.push_back(parse_int<int>(flag, rest.substr(0, comma), 0));
        if (comma == std::string_view::npos) break;
        rest = rest.substr(comma + 1);
      }
    }
  }
  return true;
}

// ---- data ----------------------------------------------------------------------------------

std::uint64_t splitmix64(std::uint64_t* state) {
  std::uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// rows x d random floats; row i depends on (seed, stream, i) only, so any thread count gives
// the same matrix.
std::vector<float> random_matrix(std::int64_t rows, std::int64_t d, std::uint64_t seed,
                                 std::uint64_t stream, bool normal, int threads) {
  std::vector<float> out(static_cast<std::size_t>(rows * d));
  constexpr std::int64_t kRowsPerTask = 1024;
  const std::int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  megatax::parallel_for(threads, tasks, [&](std::int64_t task, int) {
    const std::int64_t r1 = std::min(rows, (task + 1) * kRowsPerTask);
    for (std::int64_t r = task * kRowsPerTask; r < r1; ++r) {
      std::uint64_t state =
          seed * 0x100000001B3ull ^ (stream << 56) ^ static_cast<std::uint64_t>(r);
      splitmix64(&state);
      float* row = out.data() + r * d;
      auto uniform = [&] {  // [0, 1) with 24 random bits
        return static_cast<float>(splitmix64(&state) >> 40) * (1.0f / 16777216.0f);
      };
      if (!normal) {
        for (std::int64_t j = 0; j < d; ++j) row[j] = uniform();
        continue;
      }
      for (std::int64_t j = 0; j < d; j += 2) {  // Box-Muller, two values per pair
        const double u1 = (static_cast<double>(splitmix64(&state) >> 11) + 0.5) * 0x1.0p-53;
        const double u2 = static_cast<double>(splitmix64(&state) >> 11) * 0x1.0p-53;
        const double radius = std::sqrt(-2.0 * std::log(u1));
        row[j] = static_cast<float>(radius * std::cos(2.0 * std::numbers::pi * u2));
        if (j + 1 < d)
          row[j + 1] = static_cast<float>(radius * std::sin(2.0 * std::numbers::pi * u2));
      }
    }
  });
  return out;
}

struct FbinData {
  std::int64_t rows = 0, dim = 0;
  std::vector<float> values;
};

// Reads the first `max_rows` rows (all when max_rows <= 0) of a .fbin file.
FbinData read_fbin(const std::string& path, std::int64_t max_rows) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr)
    throw_error(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIoError,
                "fbin file " + path + ": cannot open: " + std::strerror(errno));
  struct Closer {
    std::FILE* f;
    ~Closer() { std::fclose(f); }
  } closer{f};
  std::uint32_t header[2];
  if (std::fread(header, sizeof header, 1, f) != 1)
    throw_error(ErrorCode::kDataLoss, "fbin file " + path + ": truncated: no 8-byte header");
  const std::int64_t n = header[0], d = header[1];
  if (d < 1) throw_error(ErrorCode::kDataLoss, "fbin file " + path + ": dim is 0");
  std::fseek(f, 0, SEEK_END);
  const std::int64_t size = std::ftell(f);
  const std::int64_t expected = 8 + n * d * 4;
  if (size < expected)
    throw_error(ErrorCode::kDataLoss, "fbin file " + path + ": truncated: expected " +
                                          std::to_string(expected) + " bytes for " +
                                          std::to_string(n) + " x " + std::to_string(d) +
                                          ", found " + std::to_string(size));
  if (max_rows > n)
    throw_error(ErrorCode::kInvalidArgument, "fbin file " + path + ": asked for " +
                                                 std::to_string(max_rows) + " rows, it holds " +
                                                 std::to_string(n));
  FbinData out;
  out.rows = max_rows > 0 ? max_rows : n;
  out.dim = d;
  out.values.resize(static_cast<std::size_t>(out.rows * d));
  std::fseek(f, 8, SEEK_SET);
  if (std::fread(out.values.data(), sizeof(float), out.values.size(), f) != out.values.size())
    throw_error(ErrorCode::kIoError, "fbin file " + path + ": short read");
  return out;
}

void write_ids(const std::string& path, std::int64_t nq, std::int64_t k,
               const std::vector<std::int64_t>& ids) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr)
    throw_error(ErrorCode::kIoError,
                "ids file " + path + ": cannot create: " + std::strerror(errno));
  const std::uint32_t header[2] = {static_cast<std::uint32_t>(nq), static_cast<std::uint32_t>(k)};
  const bool ok = std::fwrite(header, sizeof header, 1, f) == 1 &&
                  std::fwrite(ids.data(), sizeof(std::int64_t), ids.size(), f) == ids.size();
  if (std::fclose(f) != 0 || !ok)
    throw_error(ErrorCode::kIoError, "ids file " + path + ": write failed");
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int run(const Config& c) {
  const megatax::DType dtype = megatax::parse_dtype(c.dtype);
  const megatax::Metric metric =
      c.metric == "ip" ? megatax::Metric::kInnerProduct : megatax::Metric::kL2;
  megatax::SearchOptions options;
  options.backend = megatax::parse_backend(c.backend);
  options.threads = c.threads;
  options.simd = c.simd;
  options.devices = c.devices;
  const int threads = megatax::resolve_threads(c.threads, std::numeric_limits<std::int64_t>::max());
  const megatax::kernels::SimdLevel simd =
      megatax::kernels::resolve_simd_level(megatax::kernels::parse_simd_level(c.simd));
  const bool normal = c.dist == "normal";

  // Data.
  const double t_data = now_ms();
  std::int64_t n = c.n, q = c.q, d = c.d;
  std::vector<float> base, queries;
  std::string source = "random " + c.dist + " (seed " + std::to_string(c.seed) + ")";
  if (!c.base_file.empty()) {
    FbinData b = read_fbin(c.base_file, c.n_set ? c.n : 0);
    if (c.d_set && b.dim != c.d)
      throw_error(ErrorCode::kInvalidArgument, "--base " + c.base_file + " has dim " +
                                                   std::to_string(b.dim) + ", --d is " +
                                                   std::to_string(c.d));
    n = b.rows;
    d = b.dim;
    base = std::move(b.values);
    source = "base " + c.base_file;
  } else {
    base = random_matrix(n, d, c.seed, 0, normal, c.threads);
  }
  if (!c.queries_file.empty()) {
    FbinData b = read_fbin(c.queries_file, c.q_set ? c.q : 0);
    if (b.dim != d)
      throw_error(ErrorCode::kInvalidArgument, "--queries " + c.queries_file + " has dim " +
                                                   std::to_string(b.dim) + ", the database has " +
                                                   std::to_string(d));
    q = b.rows;
    queries = std::move(b.values);
    source += ", queries " + c.queries_file;
  } else {
    queries = random_matrix(q, d, c.seed, 1, normal, c.threads);
  }
  const double data_ms = now_ms() - t_data;

  std::printf(
      "config: q=%lld n=%lld d=%lld k=%lld dtype=%s metric=%s backend=%s threads=%d "
      "iters=%d warmup=%d data=%s\n",
      static_cast<long long>(q), static_cast<long long>(n), static_cast<long long>(d),
      static_cast<long long>(c.k), megatax::dtype_name(dtype), megatax::metric_name(metric),
      megatax::backend_name(options.backend), threads, c.iters, c.warmup, source.c_str());
  if (!c.devices.empty()) {
    std::printf("devices:");
    for (int g : c.devices) std::printf(" %d", g);
    std::printf("\n");
  }
  const bool bf16_native = dtype == megatax::DType::kBF16 &&
                           simd == megatax::kernels::SimdLevel::kAvx512 &&
                           megatax::kernels::cpu_has_avx512_bf16();
  std::printf("simd: %s%s (supported:", megatax::kernels::simd_level_name(simd),
              bf16_native ? " + avx512-bf16 dot products" : "");
  for (auto l : megatax::kernels::supported_simd_levels())
    std::printf(" %s", megatax::kernels::simd_level_name(l));
  std::printf(")\n");

  if (c.device_warmup != 0 && options.backend == megatax::Backend::kCuda) {
    megatax::IndexFlat one(d, metric, dtype);
    one.add(1, queries.data());
    float dist = 0;
    std::int64_t id = 0;
    const double t_warm = now_ms();
    one.search(1, queries.data(), 1, &dist, &id, options);
    std::printf("device warm-up: %.1f ms (a 1-row index's first search: the process's device "
                "context, the kernels' loading)\n", now_ms() - t_warm);
  }

  // Build.
  megatax::IndexFlat index(d, metric, dtype);
  const double t_add = now_ms();
  index.add(n, base.data());
  const double add_ms = now_ms() - t_add;
  std::printf("data: %.1f ms, add: %.1f ms (%.0f vectors/s)\n", data_ms, add_ms,
              static_cast<double>(n) / std::max(add_ms, 1e-9) * 1e3);
  base.clear();
  base.shrink_to_fit();

  // Search.
  std::vector<float> distances(static_cast<std::size_t>(q * c.k));
  std::vector<std::int64_t> ids(static_cast<std::size_t>(q * c.k));
  for (int w = 0; w < c.warmup; ++w) {
    const double t_first = now_ms();
    index.search(q, queries.data(), c.k, distances.data(), ids.data(), options);
    if (w == 0 && options.backend == megatax::Backend::kCuda)
      std::printf("first search: %.1f ms (the database's copy to the device included)\n", now_ms() - t_first);
  }
  double total_ms = 0, min_ms = std::numeric_limits<double>::infinity();
  for (int it = 0; it < c.iters; ++it) {
    const double t0 = now_ms();
    index.search(q, queries.data(), c.k, distances.data(), ids.data(), options);
    const double ms = now_ms() - t0;
    total_ms += ms;
    min_ms = std::min(min_ms, ms);
  }
  const double avg_ms = total_ms / c.iters;
  const double seconds = avg_ms / 1e3;
  const double qps = static_cast<double>(q) / seconds;
  const double gflops = 2.0 * static_cast<double>(q) * static_cast<double>(n) *
                        static_cast<double>(d) / seconds / 1e9;
  const double gbps = static_cast<double>(n) * static_cast<double>(d) *
                      static_cast<double>(megatax::dtype_size(dtype)) / seconds / 1e9;
  std::printf(
      "search: avg %.3f ms, min %.3f ms, %.1f QPS, %.1f GFLOP/s, %.2f GB/s "
      "(database bytes scanned per search / time)\n",
      avg_ms, min_ms, qps, gflops, gbps);
  std::printf(
      "RESULT q=%lld n=%lld d=%lld k=%lld dtype=%s threads=%d simd=%s avg_ms=%.4f "
      "min_ms=%.4f qps=%.2f gflops=%.2f gbps=%.3f metric=%s\n",
      static_cast<long long>(q), static_cast<long long>(n), static_cast<long long>(d),
      static_cast<long long>(c.k), megatax::dtype_name(dtype), threads,
      megatax::kernels::simd_level_name(simd), avg_ms, min_ms, qps, gflops, gbps,
      megatax::metric_name(metric));
  if (!c.ids_out.empty()) write_ids(c.ids_out, q, c.k, ids);
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
    std::fprintf(stderr, "bench_indexflat: %s\n", e.message.c_str());
    return 2;
  }
  try {
    return run(config);
  } catch (const megatax::Error& e) {
    std::fprintf(stderr, "bench_indexflat: %s: %s\n", megatax::error_code_name(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "bench_indexflat: out of memory\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_indexflat: internal error: %s\n", e.what());
  }
  return 1;
}
