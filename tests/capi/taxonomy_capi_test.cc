// The taxonomy C API: a round trip equal to the C++ engine, and its error paths.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "io/io_test_util.h"
#include "io/npy_array.h"
#include "megatax/megatax_c.h"
#include "megatax/storage.h"
#include "megatax/taxonomy.h"
#include "taxonomy/synthetic.h"

namespace {

using megatax::testing_io::ScratchDir;

std::string last_error() { return megatax_last_error(); }

TEST(TaxonomyCApi, FitPredictLoadMatchTheEngine) {
  MEGATAX_SEEDED_RNG(rng);
  ScratchDir dir;
  megatax::taxonomy::SyntheticSpec spec;
  spec.n = 3000;
  spec.dim = 10;
  spec.levels = 2;
  spec.branching = 4;
  spec.shards = 2;
  spec.seed = rng_seed;
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

}  // namespace
