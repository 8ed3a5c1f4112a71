// bench_predict_rows: TaxonomyEngine::predict of in-memory rows (what Python's
// engine.predict(array) calls) on one GPU against the CPU's exact predict (every child
// scanned: the same descent) and its default predict (HNSW graphs on wide nodes), same model,
// same rows, same run. The GPU's first call includes loading the levels onto the device;
// later calls reuse them (the engine keeps them). Prints a table and the share of paths
// equal to the CPU's exact predict.
//
//   bench_predict_rows MODEL_URI DATA_GLOB [ROWS] [REPEAT]
// ROWS: rows read from the shards in order (default all); REPEAT: timed calls each (default 3).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "megatax/dataset.h"
#include "megatax/error.h"
#include "megatax/taxonomy.h"
#include "megatax/vector_format.h"

namespace {

using Clock = std::chrono::steady_clock;

template <class F>
double seconds(F&& f) {
  const auto t = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL_URI DATA_GLOB [ROWS] [REPEAT]\n", argv[0]);
    return 2;
  }
  try {
    const std::string model_uri = argv[1], glob = argv[2];
    const std::int64_t want = argc > 3 ? std::atoll(argv[3]) : -1;
    const int repeat = argc > 4 ? std::max(1, std::atoi(argv[4])) : 3;
    megatax::Dataset data = megatax::Dataset::open(glob);
    const std::int64_t d = data.dim();
    const megatax::DType dtype = data.dtype();
    const std::size_t row_bytes = static_cast<std::size_t>(d) * megatax::dtype_size(dtype);
    std::int64_t n = 0;
    for (const auto& s : data.shards()) n += s.rows;
    if (want > 0) n = std::min(n, want);
    std::vector<unsigned char> rows(static_cast<std::size_t>(n) * row_bytes);
    std::int64_t at = 0;
    for (const auto& s : data.shards()) {
      if (at >= n) break;
      auto reader = megatax::open_vector_file(data.storage(), s.path);
      const std::int64_t take = std::min(s.rows, n - at);
      reader->read(0, take, rows.data() + static_cast<std::size_t>(at) * row_bytes);
      at += take;
    }
    const megatax::MatrixView x(rows.data(), n, d, dtype);

    megatax::TaxonomyEngine model = megatax::TaxonomyEngine::load(model_uri);
    megatax::FitOptions gpu;
    gpu.progress = false;
    gpu.predict_device = "cuda";
    megatax::Prediction on_gpu;
    const double first = seconds([&] { on_gpu = model.predict(x, gpu); });
    double kept = 1e30, exact = 1e30, hnsw = 1e30;
    megatax::Prediction cpu_exact, cpu_default;
    for (int r = 0; r < repeat; ++r) {
      kept = std::min(kept, seconds([&] { on_gpu = model.predict(x, gpu); }));
      model.set_search(true, 0);
      exact = std::min(exact, seconds([&] { cpu_exact = model.predict(x); }));
      model.set_search(false, 0);
      hnsw = std::min(hnsw, seconds([&] { cpu_default = model.predict(x); }));
    }
    const int L = on_gpu.n_levels;
    std::int64_t same = 0;
    for (std::int64_t i = 0; i < n; ++i)
      same += std::equal(on_gpu.paths.begin() + i * L, on_gpu.paths.begin() + (i + 1) * L,
                         cpu_exact.paths.begin() + i * L);
    std::printf(
        "\n==== bench_predict_rows: %lld x %lld %s in memory, model %d levels, best of %d ====\n",
        static_cast<long long>(n), static_cast<long long>(d), megatax::dtype_name(dtype), L,
        repeat);
    std::printf("%-40s %10s %12s\n", "predict(array)", "seconds", "CPU / GPU");
    std::printf("%-40s %10.3f %12s\n", "GPU, first call (levels to the device)", first, "");
    std::printf("%-40s %10.3f %12s\n", "GPU, later calls (levels kept)", kept, "1.00x");
    std::printf("%-40s %10.3f %11.1fx\n", "CPU exact (same descent)", exact, exact / kept);
    std::printf("%-40s %10.3f %11.1fx\n", "CPU default (HNSW where wide)", hnsw, hnsw / kept);
    std::printf("GPU paths equal to the CPU's exact predict: %.3f%%\n",
                100.0 * static_cast<double>(same) / static_cast<double>(n));
    return 0;
  } catch (const megatax::Error& e) {
    std::fprintf(stderr, "bench_predict_rows: %s\n", e.what());
    return 1;
  }
}
