// The taxonomy C API: a round trip equal to the C++ engine, the balancing / HNSW / beam /
// search settings of version 2 giving the C++ API's results, and the error paths.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "io/io_test_util.h"
#include "io/npy_array.h"
#include "megatax/megatax_c.h"
#include "megatax/storage.h"
#include "megatax/taxonomy.h"
#include "taxonomy/synthetic.h"
#include "taxonomy/taxonomy_test_util.h"

namespace {

using megatax::testing_io::ScratchDir;
using megatax::testing_taxonomy::tree_bytes;

#if defined(MEGATAX_TEST_HAVE_HNSWLIB)
constexpr bool kHaveHnswlib = true;
#else
constexpr bool kHaveHnswlib = false;  // builds without hnswlib refuse graphs (kUnimplemented)
#endif

std::string last_error() { return megatax_last_error(); }

// A two-level synthetic dataset's spec (taxonomy/synthetic.h) of n rows in `shards` shards.
megatax::taxonomy::SyntheticSpec two_level_spec(std::int64_t n, int dim, int branching, int shards,
                                                std::uint64_t seed) {
  megatax::taxonomy::SyntheticSpec spec;
  spec.n = n;
  spec.dim = dim;
  spec.levels = 2;
  spec.branching = branching;
  spec.shards = shards;
  spec.seed = seed;
  return spec;
}

TEST(TaxonomyCApi, FitPredictLoadMatchTheEngine) {
  MEGATAX_SEEDED_RNG(rng);
  ScratchDir dir;
  const megatax::taxonomy::SyntheticSpec spec = two_level_spec(3000, 10, 4, 2, rng_seed);
  megatax::taxonomy::generate_dataset(spec, dir / "data");

  megatax_taxonomy_config_t cfg;
  ASSERT_EQ(megatax_taxonomy_config_init(&cfg), MEGATAX_OK);
  const int64_t branching[2] = {4, 3};
  const std::string storage = dir / "tax";
  cfg.n_levels = 2;
  cfg.branching = branching;
  cfg.n_branching = 2;
  cfg.storage_uri = storage.c_str();
  cfg.seed = 5;
  cfg.sample_per_centroid = 32;
  megatax_taxonomy_t* t = nullptr;
  ASSERT_EQ(megatax_taxonomy_create(&cfg, &t), MEGATAX_OK) << last_error();
  const std::string input = dir / "data/part-*.npy", output = dir / "out";
  ASSERT_EQ(megatax_taxonomy_fit(t, input.c_str(), output.c_str(), 0), MEGATAX_OK) << last_error();
  int levels = 0;
  int64_t dim = 0;
  ASSERT_EQ(megatax_taxonomy_levels(t, &levels), MEGATAX_OK);
  ASSERT_EQ(megatax_taxonomy_dim(t, &dim), MEGATAX_OK);
  EXPECT_EQ(levels, 2);
  EXPECT_EQ(dim, 10);

  // Predict the first shard through the C API and compare with fit's output file.
  auto st = megatax::open_storage_for_uri("/");
  std::vector<int64_t> shape;
  auto x = megatax::io::read_npy_array<float>(*st, dir / "data/part-00000.npy", &shape);
  auto fit_paths = megatax::io::read_npy_array<int32_t>(*st, dir / "out/part-00000.paths.npy", &shape);
  std::vector<int32_t> paths(fit_paths.size());
  std::vector<float> dist(fit_paths.size() / 2);
  ASSERT_EQ(megatax_taxonomy_predict(t, static_cast<int64_t>(dist.size()), x.data(), paths.data(), dist.data()),
            MEGATAX_OK) << last_error();
  EXPECT_EQ(paths, fit_paths);

  // A loaded copy predicts files identically.
  megatax_taxonomy_t* loaded = nullptr;
  ASSERT_EQ(megatax_taxonomy_load(storage.c_str(), &loaded), MEGATAX_OK) << last_error();
  const std::string pred = dir / "pred";
  ASSERT_EQ(megatax_taxonomy_predict_files(loaded, input.c_str(), pred.c_str()), MEGATAX_OK) << last_error();
  EXPECT_EQ(megatax::io::read_npy_array<int32_t>(*st, dir / "pred/part-00001.paths.npy", &shape),
            megatax::io::read_npy_array<int32_t>(*st, dir / "out/part-00001.paths.npy", &shape));

  // Fitting again without resume is refused; with resume it is a no-op.
  EXPECT_EQ(megatax_taxonomy_fit(t, input.c_str(), output.c_str(), 0), MEGATAX_ALREADY_EXISTS);
  EXPECT_NE(last_error().find("already exists"), std::string::npos) << last_error();
  EXPECT_EQ(megatax_taxonomy_fit(t, input.c_str(), output.c_str(), 1), MEGATAX_OK) << last_error();
  megatax_taxonomy_destroy(loaded);
  megatax_taxonomy_destroy(t);
}

TEST(TaxonomyCApi, ErrorsAreCodesWithMessages) {
  ScratchDir dir;
  megatax_taxonomy_t* t = reinterpret_cast<megatax_taxonomy_t*>(0x1);
  EXPECT_EQ(megatax_taxonomy_create(nullptr, &t), MEGATAX_INVALID_ARGUMENT);
  EXPECT_EQ(t, nullptr);
  EXPECT_NE(last_error().find("argument 'config' is null"), std::string::npos) << last_error();

  megatax_taxonomy_config_t cfg;
  ASSERT_EQ(megatax_taxonomy_config_init(&cfg), MEGATAX_OK);
  EXPECT_EQ(megatax_taxonomy_create(&cfg, &t), MEGATAX_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("storage_uri"), std::string::npos) << last_error();
  const std::string storage = dir / "t";
  cfg.storage_uri = storage.c_str();
  cfg.metric = 7;
  EXPECT_EQ(megatax_taxonomy_create(&cfg, &t), MEGATAX_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("MEGATAX_TAXONOMY_METRIC_"), std::string::npos) << last_error();
  cfg.metric = MEGATAX_TAXONOMY_METRIC_COSINE;
  const int64_t bad_branching[1] = {1};
  cfg.branching = bad_branching;
  cfg.n_branching = 1;
  EXPECT_EQ(megatax_taxonomy_create(&cfg, &t), MEGATAX_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("branching_factor"), std::string::npos) << last_error();
  cfg.branching = nullptr;
  ASSERT_EQ(megatax_taxonomy_create(&cfg, &t), MEGATAX_OK) << last_error();

  float x[4] = {1, 2, 3, 4};
  int32_t paths[4];
  EXPECT_EQ(megatax_taxonomy_predict(t, 1, x, paths, nullptr), MEGATAX_FAILED_PRECONDITION);
  EXPECT_NE(last_error().find("not fitted"), std::string::npos) << last_error();
  const std::string missing = dir / "nothing/*.npy", out = dir / "o";
  EXPECT_EQ(megatax_taxonomy_fit(t, missing.c_str(), out.c_str(), 0), MEGATAX_NOT_FOUND);
  EXPECT_NE(last_error().find("nothing/*.npy"), std::string::npos) << last_error();
  EXPECT_EQ(megatax_taxonomy_fit(t, nullptr, out.c_str(), 0), MEGATAX_INVALID_ARGUMENT);
  megatax_taxonomy_destroy(t);

  megatax_taxonomy_t* loaded = reinterpret_cast<megatax_taxonomy_t*>(0x1);
  EXPECT_EQ(megatax_taxonomy_load(storage.c_str(), &loaded), MEGATAX_NOT_FOUND);
  EXPECT_EQ(loaded, nullptr);
  EXPECT_NE(last_error().find("taxonomy.json"), std::string::npos) << last_error();
  megatax_taxonomy_destroy(nullptr);
}

TEST(TaxonomyCApi, ConfigDefaultsAreTheEngines) {
  static_assert(MEGATAX_C_API_VERSION >= 2, "the version-2 fields are tested here");
  megatax_taxonomy_config_t c;
  ASSERT_EQ(megatax_taxonomy_config_init(&c), MEGATAX_OK);
  const megatax::TaxonomyConfig d;
  EXPECT_EQ(c.balance != 0, d.balance);
  EXPECT_EQ(c.min_node_size, d.min_node_size);
  EXPECT_EQ(c.max_leaf_size, d.max_leaf_size);
  EXPECT_EQ(c.min_branching, d.min_branching);
  EXPECT_EQ(c.max_branching, d.max_branching);
  EXPECT_EQ(c.max_split_rounds, d.max_split_rounds);
  EXPECT_EQ(c.hnsw_threshold, d.hnsw_threshold);
  EXPECT_EQ(c.hnsw_m, d.hnsw_m);
  EXPECT_EQ(c.hnsw_ef_construction, d.hnsw_ef_construction);
  EXPECT_EQ(c.hnsw_ef, d.hnsw_ef);
}

// Balancing, HNSW, beam and search settings through C equal the same settings through C++.
TEST(TaxonomyCApi, BalanceHnswBeamAndSearchMatchTheEngine) {
  MEGATAX_SEEDED_RNG(rng);
  ScratchDir dir;
  megatax::taxonomy::SyntheticSpec spec = two_level_spec(8000, 12, 6, 3, rng_seed);
  spec.separation = 2.0;
  spec.zipf = 1.1;  // skewed: balancing has work to do
  megatax::taxonomy::generate_dataset(spec, dir / "data");
  const std::string input = dir / "data/part-*.npy";

  // The same settings, once as C and once as C++.
  const int64_t branching[2] = {40, 4};
  const std::string c_storage = dir / "c_tax", cpp_storage = dir / "cpp_tax";
  megatax_taxonomy_config_t cfg;
  ASSERT_EQ(megatax_taxonomy_config_init(&cfg), MEGATAX_OK);
  cfg.n_levels = 2;
  cfg.branching = branching;
  cfg.n_branching = 2;
  cfg.storage_uri = c_storage.c_str();
  cfg.seed = 11;
  cfg.sample_per_centroid = 16;
  cfg.threads = 2;
  cfg.balance = 1;
  cfg.min_node_size = 30;
  cfg.max_leaf_size = 150;
  cfg.min_branching = 2;
  cfg.max_branching = 8;
  cfg.max_split_rounds = 2;
  cfg.hnsw_threshold = kHaveHnswlib ? 32 : 0;  // the root's 40 children go through a graph
  cfg.hnsw_m = 8;
  cfg.hnsw_ef_construction = 60;
  cfg.hnsw_ef = 12;
  megatax::TaxonomyConfig cpp;
  cpp.n_levels = 2;
  cpp.branching = {40, 4};
  cpp.storage_uri = cpp_storage;
  cpp.seed = 11;
  cpp.sample_per_centroid = 16;
  cpp.threads = 2;
  cpp.balance = true;
  cpp.min_node_size = 30;
  cpp.max_leaf_size = 150;
  cpp.min_branching = 2;
  cpp.max_branching = 8;
  cpp.max_split_rounds = 2;
  cpp.hnsw_threshold = kHaveHnswlib ? 32 : 0;
  cpp.hnsw_m = 8;
  cpp.hnsw_ef_construction = 60;
  cpp.hnsw_ef = 12;

  megatax_taxonomy_t* t = nullptr;
  ASSERT_EQ(megatax_taxonomy_create(&cfg, &t), MEGATAX_OK) << last_error();
  const std::string c_out = dir / "c_out", cpp_out = dir / "cpp_out";
  ASSERT_EQ(megatax_taxonomy_fit(t, input.c_str(), c_out.c_str(), 0), MEGATAX_OK) << last_error();
  megatax::TaxonomyEngine engine(cpp);
  megatax::FitOptions quiet;
  quiet.progress = false;
  engine.fit(input, cpp_out, quiet);
  EXPECT_EQ(std::filesystem::exists(dir / "c_tax/level-1/hnsw-0.bin"), kHaveHnswlib);
  EXPECT_EQ(tree_bytes(c_storage, true), tree_bytes(cpp_storage, true));
  EXPECT_EQ(tree_bytes(c_out, false), tree_bytes(cpp_out, false));
  // Balancing changed the per-node branching: some level-1 node has other than 4 children.
  // (Not the total: adaptive branching can add up to 40 x 4 by coincidence.)
  {
    auto fs = megatax::open_storage_for_uri("/");
    std::vector<int64_t> nshape;
    const auto level2 = megatax::io::read_npy_array<int64_t>(*fs, c_storage + "/level-2/nodes.npy", &nshape);
    ASSERT_EQ(nshape.size(), 2u);
    std::vector<int64_t> children(40, 0);
    for (int64_t i = 0; i < nshape[0]; ++i) {
      const int64_t parent = level2[static_cast<std::size_t>(2 * i)];
      ASSERT_TRUE(parent >= 0 && parent < 40) << "node " << i << " parent " << parent;
      ++children[static_cast<std::size_t>(parent)];
    }
    EXPECT_TRUE(std::any_of(children.begin(), children.end(), [](int64_t c) { return c != 4; }))
        << "every level-1 node kept 4 children: balancing did nothing";
  }

  // Beam predict of in-memory rows.
  auto st = megatax::open_storage_for_uri("/");
  std::vector<int64_t> shape;
  const auto x = megatax::io::read_npy_array<float>(*st, dir / "data/part-00000.npy", &shape);
  const int64_t n = shape[0];
  const megatax::MatrixView view(x.data(), n, 12, megatax::DType::kF32);
  for (const int beam : {1, 3}) {
    SCOPED_TRACE("beam " + std::to_string(beam));
    std::vector<int32_t> paths(static_cast<std::size_t>(2 * n));
    std::vector<float> dist(static_cast<std::size_t>(n));
    int64_t changed = -1;
    ASSERT_EQ(megatax_taxonomy_predict_beam(t, n, x.data(), beam, paths.data(), dist.data(), &changed), MEGATAX_OK)
        << last_error();
    const auto want = engine.predict(view, beam);
    EXPECT_EQ(paths, want.paths);
    EXPECT_EQ(dist, want.distances);
    EXPECT_EQ(changed, want.beam_changed);
  }
  // Search settings: exact scan, then the graphs with another ef.
  for (const auto& [exact, ef] : {std::pair<int, int64_t>{1, 0}, {0, 3}, {0, 0}}) {
    SCOPED_TRACE("exact " + std::to_string(exact) + ", ef " + std::to_string(ef));
    ASSERT_EQ(megatax_taxonomy_set_search(t, exact, ef), MEGATAX_OK) << last_error();
    engine.set_search(exact != 0, ef);
    std::vector<int32_t> paths(static_cast<std::size_t>(2 * n));
    std::vector<float> dist(static_cast<std::size_t>(n));
    ASSERT_EQ(megatax_taxonomy_predict(t, n, x.data(), paths.data(), dist.data()), MEGATAX_OK) << last_error();
    const auto want = engine.predict(view);
    EXPECT_EQ(paths, want.paths);
    EXPECT_EQ(dist, want.distances);
  }
  // Beam predict of files, on a loaded copy.
  megatax_taxonomy_t* loaded = nullptr;
  ASSERT_EQ(megatax_taxonomy_load(c_storage.c_str(), &loaded), MEGATAX_OK) << last_error();
  const std::string c_pred = dir / "c_pred", cpp_pred = dir / "cpp_pred";
  int64_t rows = -1, changed = -1;
  ASSERT_EQ(megatax_taxonomy_predict_files_beam(loaded, input.c_str(), c_pred.c_str(), 2, &rows, &changed), MEGATAX_OK)
      << last_error();
  auto cpp_loaded = megatax::TaxonomyEngine::load(cpp_storage);
  megatax::FitOptions beam2 = quiet;
  beam2.beam = 2;
  const auto report = cpp_loaded.predict(input, cpp_pred, beam2);
  EXPECT_EQ(rows, report.rows);
  EXPECT_EQ(rows, spec.n);
  EXPECT_EQ(changed, report.beam_changed);
  EXPECT_EQ(tree_bytes(c_pred, false), tree_bytes(cpp_pred, false));
  // A beam below 1 is refused, naming it.
  const std::string unused = dir / "unused";
  EXPECT_EQ(megatax_taxonomy_predict_files_beam(loaded, input.c_str(), unused.c_str(), 0, nullptr, nullptr),
            MEGATAX_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("beam"), std::string::npos) << last_error();
  std::vector<int32_t> one_path(2);
  EXPECT_EQ(megatax_taxonomy_predict_beam(loaded, 1, x.data(), 0, one_path.data(), nullptr, nullptr),
            MEGATAX_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("beam"), std::string::npos) << last_error();
  megatax_taxonomy_destroy(loaded);
  megatax_taxonomy_destroy(t);
}

TEST(TaxonomyCApi, Version2SettingsErrors) {
  ScratchDir dir;
  const std::string storage = dir / "t";
  megatax_taxonomy_config_t cfg;
  megatax_taxonomy_t* t = nullptr;
  auto refused = [&](const char* field) {
    SCOPED_TRACE(field);
    EXPECT_EQ(megatax_taxonomy_create(&cfg, &t), MEGATAX_INVALID_ARGUMENT);
    EXPECT_EQ(t, nullptr);
    EXPECT_NE(last_error().find(field), std::string::npos) << last_error();
    ASSERT_EQ(megatax_taxonomy_config_init(&cfg), MEGATAX_OK);
    cfg.storage_uri = storage.c_str();
  };
  ASSERT_EQ(megatax_taxonomy_config_init(&cfg), MEGATAX_OK);
  cfg.storage_uri = storage.c_str();
  cfg.hnsw_m = 1;
  refused("hnsw_m");
  cfg.hnsw_ef = 0;
  refused("hnsw_ef");
  cfg.hnsw_threshold = -1;
  refused("hnsw_threshold");
  cfg.min_node_size = -5;
  refused("min_node_size");
  cfg.max_leaf_size = -1;
  refused("max_leaf_size");
  cfg.min_branching = 1;
  refused("min_branching");
  cfg.max_split_rounds = 99;
  refused("max_split_rounds");

  ASSERT_EQ(megatax_taxonomy_create(&cfg, &t), MEGATAX_OK) << last_error();
  EXPECT_EQ(megatax_taxonomy_set_search(nullptr, 0, 0), MEGATAX_INVALID_ARGUMENT);
  EXPECT_EQ(megatax_taxonomy_set_search(t, 0, -1), MEGATAX_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("hnsw_ef"), std::string::npos) << last_error();
  float x[2] = {1, 2};
  int32_t paths[6];
  EXPECT_EQ(megatax_taxonomy_predict_beam(t, 1, x, 2, paths, nullptr, nullptr), MEGATAX_FAILED_PRECONDITION);
  EXPECT_EQ(megatax_taxonomy_predict_beam(t, 1, nullptr, 2, paths, nullptr, nullptr), MEGATAX_INVALID_ARGUMENT);
  const std::string in = dir / "none/*.npy", out = dir / "o";
  EXPECT_EQ(megatax_taxonomy_predict_files_beam(t, in.c_str(), out.c_str(), 1, nullptr, nullptr),
            MEGATAX_FAILED_PRECONDITION);
  EXPECT_EQ(megatax_taxonomy_predict_files_beam(t, nullptr, out.c_str(), 1, nullptr, nullptr), MEGATAX_INVALID_ARGUMENT);
  megatax_taxonomy_destroy(t);
}

// Version 3: the device fields and device predicts. This machine has no usable GPU (a CPU
// build: UNIMPLEMENTED; a CUDA build: FAILED_PRECONDITION); a GPU machine runs these paths in
// tests/cuda/cuda_engine_test (the C++ calls they translate to).
bool no_gpu_error(int status) {
  if (status == MEGATAX_UNIMPLEMENTED || status == MEGATAX_FAILED_PRECONDITION) {
    EXPECT_NE(last_error().find("cuda"), std::string::npos) << last_error();
    return true;
  }
  return false;
}

TEST(TaxonomyCApi, Version3DeviceSettings) {
  static_assert(MEGATAX_C_API_VERSION >= 3, "the version-3 fields are tested here");
  MEGATAX_SEEDED_RNG(rng);
  ScratchDir dir;
  const megatax::taxonomy::SyntheticSpec spec = two_level_spec(2000, 12, 3, 2, rng_seed);
  megatax::taxonomy::generate_dataset(spec, dir / "data");
  const std::string input = dir / "data/part-*.npy";

  megatax_taxonomy_config_t cfg;
  ASSERT_EQ(megatax_taxonomy_config_init(&cfg), MEGATAX_OK);
  const megatax::TaxonomyConfig d;
  EXPECT_EQ(std::string(cfg.device), d.device);
  EXPECT_EQ(cfg.gpu, d.gpu);
  EXPECT_EQ(std::string(cfg.gpu_dtype), d.gpu_dtype);

  // A fit on "cuda" without a GPU: the error, and nothing committed.
  const std::string gpu_storage = dir / "t_gpu";
  cfg.storage_uri = gpu_storage.c_str();
  cfg.n_levels = 2;
  cfg.device = "cuda";
  megatax_taxonomy_t* t = nullptr;
  ASSERT_EQ(megatax_taxonomy_create(&cfg, &t), MEGATAX_OK) << last_error();
  const std::string gpu_out = dir / "o_gpu";
  const int fit_status = megatax_taxonomy_fit(t, input.c_str(), gpu_out.c_str(), 0);
  megatax_taxonomy_destroy(t);
  if (fit_status == MEGATAX_OK) GTEST_SKIP() << "a GPU is usable here: tests/cuda cover the device paths";
  EXPECT_TRUE(no_gpu_error(fit_status)) << fit_status << ": " << last_error();
  EXPECT_FALSE(std::filesystem::exists(gpu_storage + "/taxonomy.json"));

  // The CPU fit, then the device predicts: "cpu" (and NULL) equal the plain calls.
  const std::string storage = dir / "t";
  cfg.storage_uri = storage.c_str();
  cfg.device = "cpu";
  cfg.gpu_dtype = nullptr;  // NULL = "auto"
  ASSERT_EQ(megatax_taxonomy_create(&cfg, &t), MEGATAX_OK) << last_error();
  const std::string out = dir / "o";
  ASSERT_EQ(megatax_taxonomy_fit(t, input.c_str(), out.c_str(), 0), MEGATAX_OK) << last_error();
  auto st = megatax::open_storage_for_uri("/");
  std::vector<int64_t> shape;
  const auto x = megatax::io::read_npy_array<float>(*st, dir / "data/part-00001.npy", &shape);
  const int64_t n = shape[0];
  std::vector<int32_t> paths(static_cast<std::size_t>(n * 2)), paths_dev(paths.size());
  std::vector<float> dist(static_cast<std::size_t>(n)), dist_dev(dist.size());
  ASSERT_EQ(megatax_taxonomy_predict(t, n, x.data(), paths.data(), dist.data()), MEGATAX_OK) << last_error();
  for (const char* device : {"cpu", static_cast<const char*>(nullptr)}) {
    std::fill(paths_dev.begin(), paths_dev.end(), -7);
    ASSERT_EQ(megatax_taxonomy_predict_device(t, n, x.data(), device, -1, nullptr, paths_dev.data(), dist_dev.data()),
              MEGATAX_OK) << last_error();
    EXPECT_EQ(paths_dev, paths);
    EXPECT_EQ(dist_dev, dist);
  }
  EXPECT_EQ(paths, megatax::io::read_npy_array<int32_t>(*st, dir / "o/part-00001.paths.npy", &shape));
  EXPECT_TRUE(no_gpu_error(
      megatax_taxonomy_predict_device(t, n, x.data(), "cuda", -1, "auto", paths_dev.data(), nullptr)));
  EXPECT_EQ(megatax_taxonomy_predict_device(t, n, x.data(), "tpu", -1, nullptr, paths_dev.data(), nullptr),
            MEGATAX_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("device must be cpu or cuda"), std::string::npos) << last_error();
  EXPECT_EQ(megatax_taxonomy_predict_device(t, n, nullptr, "cpu", -1, nullptr, paths_dev.data(), nullptr),
            MEGATAX_INVALID_ARGUMENT);

  const std::string pred = dir / "pred", pred_gpu = dir / "pred_gpu";
  int64_t rows = -1;
  ASSERT_EQ(megatax_taxonomy_predict_files_device(t, input.c_str(), pred.c_str(), "cpu", -1, nullptr, &rows),
            MEGATAX_OK) << last_error();
  EXPECT_EQ(rows, spec.n);
  EXPECT_EQ(megatax::io::read_npy_array<int32_t>(*st, dir / "pred/part-00000.paths.npy", &shape),
            megatax::io::read_npy_array<int32_t>(*st, dir / "o/part-00000.paths.npy", &shape));
  EXPECT_TRUE(no_gpu_error(
      megatax_taxonomy_predict_files_device(t, input.c_str(), pred_gpu.c_str(), "cuda", 0, "f16", nullptr)));
  EXPECT_FALSE(std::filesystem::exists(pred_gpu));
  megatax_taxonomy_release_gpu(t);  // nothing kept: a no-op
  megatax_taxonomy_release_gpu(nullptr);
  megatax_taxonomy_destroy(t);
}

}  // namespace
