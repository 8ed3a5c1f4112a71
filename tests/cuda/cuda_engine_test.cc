// GPU test of the engine on the CUDA backend (`device = cuda`): a whole hierarchical fit on a
// GPU against the same fit on the CPU (the independent reference), on freshly generated data.
//
// Checks:
//   1. f32 on the GPU (exact FFMA) vs the CPU: >= 99.5% of the output paths equal, and the
//      level-1 centroids within 1e-3 (relative) of the CPU's.
//   2. Determinism: the same GPU fit twice gives byte-identical model files and outputs.
//   3. f16 data (tensor cores): >= 99% of paths equal to the CPU fit on the same f16 data.
//   4. A model fitted on the GPU predicts (on the CPU) its own fit's paths for >= 99.5% of rows.
//   5. Bad GPU index: Error(kInvalidArgument) naming it.
// Prints the CPU and GPU fit times (information, not a check).
//
//   cuda_engine_test [--seed S] [--dir D]   (exit code = failed checks)
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "io/npy_array.h"
#include "megatax/error.h"
#include "megatax/storage.h"
#include "megatax/taxonomy.h"
#include "taxonomy/synthetic.h"

namespace {

using megatax::TaxonomyConfig;
using megatax::TaxonomyEngine;
namespace fs = std::filesystem;

int g_failed = 0;

void check(bool ok, const std::string& what) {
  std::printf("[%s] %s\n", ok ? " ok " : "FAIL", what.c_str());
  if (!ok) ++g_failed;
}

std::vector<char> read_file(const fs::path& p) {
  std::FILE* f = std::fopen(p.c_str(), "rb");
  if (f == nullptr) return {};
  std::vector<char> out;
  char buf[1 << 16];
  std::size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + got);
  std::fclose(f);
  return out;
}

// Every regular file under `a` has a byte-identical twin under `b` (taxonomy.json excepted:
// it holds timings).
bool same_tree_files(const fs::path& a, const fs::path& b, std::string* first_diff) {
  for (const auto& e : fs::recursive_directory_iterator(a)) {
    if (!e.is_regular_file() || e.path().filename() == "taxonomy.json") continue;
    const fs::path rel = fs::relative(e.path(), a);
    if (read_file(e.path()) != read_file(b / rel)) {
      *first_diff = rel.string();
      return false;
    }
  }
  return true;
}

std::vector<std::int32_t> all_paths(const std::string& out_dir, int shards) {
  auto st = megatax::open_storage_for_uri(out_dir);
  std::vector<std::int32_t> all;
  for (int s = 0; s < shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "/part-%05d.paths.npy", s);
    std::vector<std::int64_t> shape;
    auto p = megatax::io::read_npy_array<std::int32_t>(*st, out_dir + name, &shape);
    all.insert(all.end(), p.begin(), p.end());
  }
  return all;
}

double fraction_equal_rows(const std::vector<std::int32_t>& a, const std::vector<std::int32_t>& b, int levels) {
  if (a.size() != b.size() || a.empty()) return 0;
  std::size_t same = 0, rows = a.size() / static_cast<std::size_t>(levels);
  for (std::size_t i = 0; i < rows; ++i)
    same += std::equal(a.begin() + i * levels, a.begin() + (i + 1) * levels, b.begin() + i * levels);
  return static_cast<double>(same) / static_cast<double>(rows);
}

std::vector<float> centroids(const std::string& storage, int level) {
  auto st = megatax::open_storage_for_uri(storage);
  std::vector<std::int64_t> shape;
  return megatax::io::read_npy_array<float>(*st, storage + "/level-" + std::to_string(level) + "/centroids.npy",
                                            &shape);
}

double fit(const TaxonomyConfig& base, const std::string& device, const std::string& input,
           const std::string& storage, const std::string& output) {
  TaxonomyConfig c = base;
  c.device = device;
  c.storage_uri = storage;
  TaxonomyEngine engine(c);
  megatax::FitOptions o;
  o.progress = false;
  o.executor = "local";
  const auto t0 = std::chrono::steady_clock::now();
  engine.fit(input, output, o);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t seed = std::random_device{}();
  std::string dir = (fs::temp_directory_path() / ("megatax_cuda_engine_" + std::to_string(::getpid()))).string();
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
      dir = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--seed S] [--dir D]\n", argv[0]);
      return 2;
    }
  }
  std::printf("cuda_engine_test: seed %" PRIu64 ", dir %s\n", seed, dir.c_str());
  fs::remove_all(dir);
  fs::create_directories(dir);
  try {
    const int shards = 4, levels = 2;
    megatax::taxonomy::SyntheticSpec spec;
    spec.n = 300000;
    spec.dim = 128;
    spec.levels = levels;
    spec.branching = 16;
    spec.shards = shards;
    spec.seed = seed;
    megatax::taxonomy::generate_dataset(spec, dir + "/f32");
    spec.dtype = megatax::DType::kF16;
    megatax::taxonomy::generate_dataset(spec, dir + "/f16");

    TaxonomyConfig base;
    base.n_levels = levels;
    base.branching = {16};
    base.seed = seed;
    base.batch_rows = 100000;
    const std::string in32 = dir + "/f32/part-*.npy", in16 = dir + "/f16/part-*.npy";

    const double t_cpu = fit(base, "cpu", in32, dir + "/m_cpu", dir + "/o_cpu");
    const double t_gpu = fit(base, "cuda", in32, dir + "/m_gpu", dir + "/o_gpu");
    const double t_gpu2 = fit(base, "cuda", in32, dir + "/m_gpu2", dir + "/o_gpu2");
    std::printf("fit %" PRId64 " x %" PRId64 " f32, %d levels x %d: cpu %.2f s, cuda %.2f s (again %.2f s)\n",
                spec.n, spec.dim, levels, 16, t_cpu, t_gpu, t_gpu2);

    const auto p_cpu = all_paths(dir + "/o_cpu", shards), p_gpu = all_paths(dir + "/o_gpu", shards);
    const double agree = fraction_equal_rows(p_cpu, p_gpu, levels);
    check(agree >= 0.995, "f32 GPU vs CPU: " + std::to_string(100 * agree) + "% of paths equal (>= 99.5%)");
    const auto c_cpu = centroids(dir + "/m_cpu", 1), c_gpu = centroids(dir + "/m_gpu", 1);
    double max_rel = c_cpu.size() == c_gpu.size() ? 0 : 1e9;
    for (std::size_t i = 0; i < c_cpu.size() && i < c_gpu.size(); ++i)
      max_rel = std::max(max_rel, std::fabs(static_cast<double>(c_cpu[i]) - c_gpu[i]) /
                                      (std::fabs(static_cast<double>(c_cpu[i])) + 1e-2));
    check(max_rel <= 1e-3, "f32 GPU vs CPU: level-1 centroids within " + std::to_string(max_rel) + " (<= 1e-3 rel)");

    std::string diff;
    const bool same_model = same_tree_files(dir + "/m_gpu", dir + "/m_gpu2", &diff);
    check(same_model, "GPU fit twice: identical model files" + (same_model ? "" : " (differs: " + diff + ")"));
    const bool same_out = same_tree_files(dir + "/o_gpu", dir + "/o_gpu2", &diff);
    check(same_out, "GPU fit twice: identical outputs" + (same_out ? "" : " (differs: " + diff + ")"));

    const double t_cpu16 = fit(base, "cpu", in16, dir + "/m_cpu16", dir + "/o_cpu16");
    const double t_gpu16 = fit(base, "cuda", in16, dir + "/m_gpu16", dir + "/o_gpu16");
    std::printf("fit f16 data: cpu %.2f s, cuda (f16 tensor cores) %.2f s\n", t_cpu16, t_gpu16);
    const double agree16 = fraction_equal_rows(all_paths(dir + "/o_cpu16", shards), all_paths(dir + "/o_gpu16", shards), levels);
    check(agree16 >= 0.99, "f16 GPU vs CPU: " + std::to_string(100 * agree16) + "% of paths equal (>= 99%)");

    {
      TaxonomyEngine loaded = TaxonomyEngine::load(dir + "/m_gpu");
      megatax::FitOptions unused;
      (void)unused;
      loaded.predict(in32, dir + "/p_gpu");
      const double self = fraction_equal_rows(p_gpu, all_paths(dir + "/p_gpu", shards), levels);
      check(self >= 0.995, "GPU model, CPU predict vs its fit's paths: " + std::to_string(100 * self) + "% (>= 99.5%)");
    }

    bool threw_invalid = false;
    try {
      TaxonomyConfig c = base;
      c.gpu = 99;
      fit(c, "cuda", in32, dir + "/m_bad", dir + "/o_bad");
    } catch (const megatax::Error& e) {
      threw_invalid = e.code() == megatax::ErrorCode::kInvalidArgument &&
                      std::string(e.what()).find("gpu 99") != std::string::npos;
      std::printf("  (gpu 99: %s)\n", e.what());
    }
    check(threw_invalid, "gpu = 99: Error(kInvalidArgument) naming it");
  } catch (const std::exception& e) {
    std::printf("cuda_engine_test: exception: %s\n", e.what());
    ++g_failed;
  }
  fs::remove_all(dir);
  std::printf("cuda_engine_test: %d failed -> %s\n", g_failed, g_failed == 0 ? "PASS" : "FAIL");
  return g_failed;
}
