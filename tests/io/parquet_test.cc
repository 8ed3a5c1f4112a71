// The Parquet reader and writer (built with Arrow only). Fixtures come from independent
// writers -- pyarrow, DuckDB, Polars -- at test time (tests/io/parquet_fixtures.py); values
// must come back bit for bit. Our outputs are read back by pyarrow and DuckDB
// (tests/io/parquet_check_outputs.py). A fit on Parquet shards equals the fit on the same
// vectors in .npy, file for file.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "io/arrow_test_util.h"
#include "io/io_test_util.h"
#include "io/memory_storage.h"
#include "io/parquet_writer.h"
#include "io/posix_storage.h"
#include "megatax/dataset.h"
#include "megatax/error.h"
#include "megatax/storage.h"
#include "megatax/taxonomy.h"
#include "megatax/vector_format.h"

namespace megatax {
namespace {

using testing_io::expect_error;
using testing_io::run_python_script;
using testing_io::ScratchDir;
using testing_io::split;

struct Fixture {
  std::string name;
  std::string file;
  VectorReadOptions options;
  std::string expect;  // "ok" or an error code name
  std::string vectors_npy;
  std::string ids_npy;  // "" if none
  std::int64_t skipped = 0;
  std::vector<std::string> parts;  // message parts (errors)
};

DType dtype_from(const std::string& s) { return s == "f16" ? DType::kF16 : DType::kF32; }

// Generated once for the whole suite.
class ParquetFixtures : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    const std::uint64_t seed = testing_io::fresh_seed();
    std::printf("parquet fixtures: seed %llu (rerun with MEGATAX_TEST_SEED=%llu)\n",
                static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
    generated_ = run_python_script("io/parquet_fixtures.py", {dir_->path(), std::to_string(seed)},
                                   dir_->path() + "/fixtures.log");
    if (!generated_) return;
    const std::string manifest = testing_io::read_file(dir_->path() + "/manifest.tsv");
    for (const std::string& line : split(manifest, '\n')) {
      if (line.empty()) continue;
      const std::vector<std::string> f = split(line, '\t');
      Fixture fx;
      fx.name = f.at(0);
      fx.file = dir_->path() + "/" + f.at(1);
      fx.options.column = f.at(2);
      fx.options.id_column = f.at(3) == "-" ? "" : f.at(3);
      fx.options.skip_null = f.at(4) == "1";
      fx.options.binary_dtype = dtype_from(f.at(5));
      fx.expect = f.at(6);
      if (fx.expect == "ok") {
        fx.vectors_npy = dir_->path() + "/" + f.at(7);
        fx.ids_npy = f.at(8) == "-" ? "" : dir_->path() + "/" + f.at(8);
        fx.skipped = std::stoll(f.at(9));
      } else {
        fx.parts = split(f.at(7), '|');
      }
      fixtures_->push_back(fx);
    }
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(generated_) << "the fixture writer failed (see above)"; }

  static const Fixture& fixture(const std::string& name) {
    for (const Fixture& f : *fixtures_) {
      if (f.name == name) return f;
    }
    ADD_FAILURE() << "no fixture " << name;
    return fixtures_->front();
  }

  static ScratchDir* dir_;
  static bool generated_;
  static std::vector<Fixture>* fixtures_;
  io::PosixStorage posix_;
};
ScratchDir* ParquetFixtures::dir_ = nullptr;
bool ParquetFixtures::generated_ = false;
std::vector<Fixture>* ParquetFixtures::fixtures_ = new std::vector<Fixture>();

// The expected rows (numpy's .npy, read by our npy reader) as raw bytes.
std::vector<unsigned char> load_npy_bytes(const Storage& s, const std::string& path,
                                          std::int64_t* rows, std::int64_t* dim, DType* dtype) {
  const auto r = open_vector_file(s, path);
  *rows = r->rows();
  *dim = r->dim();
  *dtype = r->dtype();
  std::vector<unsigned char> bytes(static_cast<std::size_t>(r->rows() * r->row_bytes()));
  r->read(0, r->rows(), bytes.data());
  return bytes;
}

std::vector<std::int64_t> load_ids(const Storage& s, const std::string& path) {
  const std::string all = read_all(s, path);
  // 1-D int64 .npy: the data is the last 8 * n bytes after the header's '\n'.
  const std::size_t data = all.find('\n') + 1;
  std::vector<std::int64_t> ids((all.size() - data) / 8);
  std::memcpy(ids.data(), all.data() + data, ids.size() * 8);
  return ids;
}

TEST_F(ParquetFixtures, EveryIndependentWriterReadsBackExactly) {
  int checked = 0;
  for (const Fixture& fx : *fixtures_) {
    if (fx.expect != "ok") continue;
    SCOPED_TRACE("fixture " + fx.name);
    std::int64_t rows = 0;
    std::int64_t dim = 0;
    DType dtype = DType::kF32;
    const std::vector<unsigned char> want = load_npy_bytes(posix_, fx.vectors_npy, &rows, &dim, &dtype);
    std::unique_ptr<VectorReader> r;
    ASSERT_NO_THROW(r = open_vector_file(posix_, fx.file, fx.options));
    EXPECT_EQ(r->format(), VectorFormat::kParquet);
    EXPECT_EQ(r->rows(), rows);
    EXPECT_EQ(r->dim(), dim);
    EXPECT_EQ(r->dtype(), dtype);
    EXPECT_EQ(r->skipped_rows(), fx.skipped);
    EXPECT_EQ(r->has_ids(), !fx.ids_npy.empty());
    // All at once.
    std::vector<unsigned char> got(want.size(), 0xEE);
    r->read(0, rows, got.data());
    EXPECT_TRUE(got == want) << "vectors differ from the writer's";
    // In small pieces that straddle batches and row groups, in order.
    std::fill(got.begin(), got.end(), 0xEE);
    const std::int64_t rb = r->row_bytes();
    for (std::int64_t at = 0; at < rows; at += 7) {
      const std::int64_t k = std::min<std::int64_t>(7, rows - at);
      r->read(at, k, got.data() + at * rb);
    }
    EXPECT_TRUE(got == want) << "vectors read in pieces differ";
    // As f32 (f16 converted exactly).
    std::vector<float> f32(static_cast<std::size_t>(rows * dim));
    r->read_f32(0, rows, f32.data());
    std::vector<float> want_f32(f32.size());
    convert_to_f32(dtype, want.data(), want_f32.size(), want_f32.data());
    EXPECT_EQ(std::memcmp(f32.data(), want_f32.data(), f32.size() * 4), 0);
    if (!fx.ids_npy.empty()) {
      const std::vector<std::int64_t> want_ids = load_ids(posix_, fx.ids_npy);
      ASSERT_EQ(static_cast<std::int64_t>(want_ids.size()), rows);
      std::vector<std::int64_t> ids(static_cast<std::size_t>(rows), -1);
      r->read_ids(0, rows, ids.data());
      EXPECT_EQ(ids, want_ids);
      if (rows > 3) {
        std::int64_t two[2];
        r->read_ids(rows - 3, 2, two);
        EXPECT_EQ(two[0], want_ids[rows - 3]);
        EXPECT_EQ(two[1], want_ids[rows - 2]);
      }
    } else {
      std::int64_t one = 0;
      expect_error([&] { r->read_ids(0, 1, &one); }, ErrorCode::kFailedPrecondition,
                   {fx.file, "no id column"});
    }
    expect_error([&] { r->read(rows, 1, got.data()); }, ErrorCode::kOutOfRange, {fx.file});
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

TEST_F(ParquetFixtures, RandomAccessAcrossRowGroupsAndBackwards) {
  MEGATAX_SEEDED_RNG(rng);
  for (const char* name : {"pa_list_snappy_dict_v1", "pa_nullable_nostats", "polars_list_zstd",
                           "pa_fixed_binary_f32"}) {
    SCOPED_TRACE(name);
    const Fixture& fx = fixture(name);
    std::int64_t rows = 0;
    std::int64_t dim = 0;
    DType dtype = DType::kF32;
    const std::vector<unsigned char> want = load_npy_bytes(posix_, fx.vectors_npy, &rows, &dim, &dtype);
    const auto r = open_vector_file(posix_, fx.file, fx.options);
    const std::int64_t rb = r->row_bytes();
    std::vector<unsigned char> got;
    for (int trial = 0; trial < 150; ++trial) {
      const std::int64_t at = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(rows));
      const std::int64_t k = 1 + static_cast<std::int64_t>(rng() % 40);
      const std::int64_t n = std::min(k, rows - at);
      got.assign(static_cast<std::size_t>(n * rb), 0);
      r->read(at, n, got.data());
      ASSERT_EQ(std::memcmp(got.data(), want.data() + at * rb, got.size()), 0)
          << "rows [" << at << ", +" << n << ")";
    }
  }
}

TEST_F(ParquetFixtures, ConcurrentReadsOfOneReader) {
  const Fixture& fx = fixture("pa_list_zstd_nodict_v2");
  std::int64_t rows = 0;
  std::int64_t dim = 0;
  DType dtype = DType::kF32;
  const std::vector<unsigned char> want = load_npy_bytes(posix_, fx.vectors_npy, &rows, &dim, &dtype);
  const auto r = open_vector_file(posix_, fx.file, fx.options);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(t) + 1);
      std::vector<unsigned char> got;
      for (int i = 0; i < 100; ++i) {
        const std::int64_t at = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(rows));
        const std::int64_t n = std::min<std::int64_t>(1 + static_cast<std::int64_t>(rng() % 64),
                                                      rows - at);
        got.resize(static_cast<std::size_t>(n * r->row_bytes()));
        r->read(at, n, got.data());
        if (std::memcmp(got.data(), want.data() + at * r->row_bytes(), got.size()) != 0) {
          ++mismatches;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(ParquetFixtures, CorruptAndWrongInputsGiveClearErrors) {
  int checked = 0;
  for (const Fixture& fx : *fixtures_) {
    if (fx.expect == "ok") continue;
    SCOPED_TRACE("fixture " + fx.name);
    ErrorCode code = ErrorCode::kInternal;
    if (fx.expect == "data_loss") code = ErrorCode::kDataLoss;
    if (fx.expect == "invalid_argument") code = ErrorCode::kInvalidArgument;
    expect_error(
        [&] {
          const auto r = open_vector_file(posix_, fx.file, fx.options);
          std::vector<unsigned char> buf(static_cast<std::size_t>(r->rows() * r->row_bytes()));
          r->read(0, r->rows(), buf.data());
          if (r->has_ids()) {
            std::vector<std::int64_t> ids(static_cast<std::size_t>(r->rows()));
            r->read_ids(0, r->rows(), ids.data());
          }
        },
        code, fx.parts);
    ++checked;
  }
  EXPECT_GE(checked, 15);
  // A missing file: the storage's error, naming it.
  expect_error([&] { open_vector_file(posix_, dir_->path() + "/nope.parquet"); },
               ErrorCode::kNotFound, {"nope.parquet"});
  // Options that cannot work.
  VectorReadOptions bad;
  bad.column = "";
  expect_error([&] { open_vector_file(posix_, fixture("pa_list_none_v1").file, bad); },
               ErrorCode::kInvalidArgument, {"empty embedding column name"});
  bad.column = "emb";
  bad.binary_dtype = DType::kU8;
  expect_error([&] { open_vector_file(posix_, fixture("pa_binary_f32").file, bad); },
               ErrorCode::kInvalidArgument, {"binary_dtype u8", "expected f32 or f16"});
}

TEST_F(ParquetFixtures, ReadsThroughAnyStorage) {
  // The same bytes in an in-memory storage (as they would come from an object store).
  const Fixture& fx = fixture("duckdb_list_zstd");
  io::MemoryStorage mem;
  mem.write_atomic("bucket/d.parquet", testing_io::read_file(fx.file));
  std::int64_t rows = 0;
  std::int64_t dim = 0;
  DType dtype = DType::kF32;
  const std::vector<unsigned char> want = load_npy_bytes(posix_, fx.vectors_npy, &rows, &dim, &dtype);
  const auto r = open_vector_file(mem, "bucket/d.parquet", fx.options);
  std::vector<unsigned char> got(want.size());
  r->read(0, rows, got.data());
  EXPECT_TRUE(got == want);
}

TEST_F(ParquetFixtures, DatasetOverParquetShardsWithIds) {
  VectorReadOptions options;
  options.id_column = "id";
  const Dataset ds = Dataset::open(dir_->path() + "/pa_list_*_v[12].parquet", options);
  ASSERT_EQ(ds.shards().size(), 4u);
  EXPECT_EQ(ds.rows(), 4000);
  EXPECT_EQ(ds.dim(), 8);
  EXPECT_TRUE(ds.has_ids());
  EXPECT_EQ(ds.shards()[1].format, VectorFormat::kParquet);
  EXPECT_TRUE(ds.shards()[3].has_ids);
  // Batches equal the writer's vectors, shard by shard.
  std::int64_t rows = 0;
  std::int64_t dim = 0;
  DType dtype = DType::kF32;
  const std::vector<unsigned char> want =
      load_npy_bytes(posix_, fixture("pa_list_gzip_dict_v2").vectors_npy, &rows, &dim, &dtype);
  for (std::size_t s = 0; s < ds.shards().size(); ++s) {
    BatchReader batches(ds, s, 333);
    Batch b;
    std::int64_t seen = 0;
    while (batches.next(&b)) {
      ASSERT_EQ(std::memcmp(b.data, want.data() + b.local_begin * dim * 4,
                            static_cast<std::size_t>(b.view.rows * dim * 4)),
                0);
      check_finite(b, ds);
      seen += b.view.rows;
    }
    EXPECT_EQ(seen, 1000);
  }
  // skip_null counts what it skipped.
  VectorReadOptions skip;
  skip.skip_null = true;
  const Dataset nulls = Dataset::open(dir_->path() + "/pa_nullable_*stats.parquet", skip);
  ASSERT_EQ(nulls.shards().size(), 2u);
  EXPECT_EQ(nulls.skipped_rows(), 2 * fixture("pa_nullable_stats").skipped);
  EXPECT_EQ(nulls.rows(), 2 * (500 - fixture("pa_nullable_stats").skipped));
  // An id column needs Parquet shards.
  std::vector<float> x(6, 1.0f);
  write_npy(posix_, dir_->path() + "/mixed/a.npy", std::span<const float>(x),
            std::vector<std::int64_t>{2, 3});
  std::filesystem::copy_file(fixture("pa_fixed_f16").file, dir_->path() + "/mixed/b.parquet");
  expect_error([&] { Dataset::open(dir_->path() + "/mixed/*", options); },
               ErrorCode::kInvalidArgument, {"mixed/a.npy", "no id column 'id'"});
}

TEST(ParquetWriterTest, OutputsReadBackByPyarrowAndDuckdb) {
  ScratchDir dir;
  io::PosixStorage posix;
  MEGATAX_SEEDED_RNG(rng);
  for (const std::int64_t n : {std::int64_t{0}, std::int64_t{1}, std::int64_t{5000}}) {
    SCOPED_TRACE("rows " + std::to_string(n));
    const std::int64_t levels = 3;
    std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
    std::vector<std::int32_t> paths(static_cast<std::size_t>(n * levels));
    std::vector<float> dist(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      ids[i] = static_cast<std::int64_t>(rng() >> 1) - (std::int64_t{1} << 61);
      for (std::int64_t l = 0; l < levels; ++l) {
        paths[i * levels + l] = l == 2 && i % 7 == 0 ? -1 : static_cast<std::int32_t>(rng() % 50);
      }
      dist[i] = static_cast<float>(rng() % 100000) / 7.0f;
    }
    const std::string stem = dir.path() + "/out-" + std::to_string(n);
    io::ParquetWriteOptions options;
    options.row_group_rows = 2000;
    io::write_paths_parquet(posix, stem + ".parquet", ids, paths, levels, dist, options);
    write_npy(posix, stem + ".ids.npy", std::span<const std::int64_t>(ids),
              std::vector<std::int64_t>{n});
    write_npy(posix, stem + ".paths.npy", std::span<const std::int32_t>(paths),
              std::vector<std::int64_t>{n, levels});
    write_npy(posix, stem + ".dist.npy", std::span<const float>(dist), std::vector<std::int64_t>{n});
    EXPECT_TRUE(run_python_script("io/parquet_check_outputs.py",
                                  {stem + ".parquet", stem + ".ids.npy", stem + ".paths.npy",
                                   stem + ".dist.npy", "2000"},
                                  stem + ".log"));
    // No temporary left beside it.
    for (const std::string& name : posix.list(dir.path())) {
      EXPECT_NE(name[0], '.') << name;
    }
  }
  // Wrong sizes are refused before anything is written.
  const std::vector<std::int64_t> ids = {1, 2};
  const std::vector<std::int32_t> paths = {0, 1, 2};
  const std::vector<float> dist = {0.5f, 1.5f};
  expect_error([&] { io::write_paths_parquet(posix, dir / "bad.parquet", ids, paths, 2, dist); },
               ErrorCode::kInvalidArgument, {"bad.parquet", "2 ids, 3 path values"});
  expect_error([&] { io::write_paths_parquet(posix, dir / "bad.parquet", ids, paths, 0, dist); },
               ErrorCode::kInvalidArgument, {"levels 0"});
  EXPECT_FALSE(posix.exists(dir / "bad.parquet"));
}

// Through the public API only: the same vectors as .npy and as Parquet give the same model
// and the same outputs, byte for byte.
TEST(ParquetFitTest, FitOnParquetEqualsFitOnNpy) {
  ScratchDir dir;
  io::PosixStorage posix;
  MEGATAX_SEEDED_RNG(rng);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::int64_t dim = 16;
  std::vector<std::string> convert_args = {"300"};
  for (const char* shard : {"part-0", "part-1", "part-2"}) {
    const std::int64_t n = 1500;
    std::vector<float> x(static_cast<std::size_t>(n * dim));
    for (std::int64_t i = 0; i < n; ++i) {
      const float center = static_cast<float>(i % 5) * 4.0f;
      for (std::int64_t j = 0; j < dim; ++j) x[i * dim + j] = center + normal(rng);
    }
    const std::string npy = dir.path() + "/npy/" + shard + ".npy";
    write_npy(posix, npy, std::span<const float>(x), std::vector<std::int64_t>{n, dim});
    posix.make_dirs(dir.path() + "/parquet");
    convert_args.push_back(npy);
    convert_args.push_back(dir.path() + "/parquet/" + shard + ".parquet");
  }
  ASSERT_TRUE(run_python_script("io/npy_to_parquet.py", convert_args, dir / "convert.log"));
  std::map<std::string, std::string> files[2];
  const char* kinds[2] = {"npy", "parquet"};
  for (int k = 0; k < 2; ++k) {
    TaxonomyConfig config;
    config.n_levels = 2;
    config.branching = {4};
    config.seed = 7;
    config.threads = 2;
    config.batch_rows = 1000;
    config.storage_uri = dir.path() + "/model-" + kinds[k];
    TaxonomyEngine engine(config);
    FitOptions options;
    options.progress = false;
    engine.fit(dir.path() + "/" + kinds[k] + "/part-*." + kinds[k],
               dir.path() + "/out-" + kinds[k], options);
    for (const char* root : {"/model-", "/out-"}) {
      const std::string base = dir.path() + root + kinds[k];
      for (const auto& e : std::filesystem::recursive_directory_iterator(base)) {
        if (!e.is_regular_file()) continue;
        const std::string rel = root + e.path().lexically_relative(base).string();
        if (rel.find("taxonomy.json") != std::string::npos) continue;  // names its inputs
        files[k][rel] = testing_io::read_file(e.path().string());
      }
    }
  }
  EXPECT_FALSE(files[0].empty());
  ASSERT_EQ(files[0].size(), files[1].size());
  for (const auto& [name, bytes] : files[0]) {
    ASSERT_TRUE(files[1].count(name)) << name << " missing from the Parquet fit";
    EXPECT_TRUE(files[1][name] == bytes) << name << " differs between the .npy and Parquet fits";
  }
}

}  // namespace
}  // namespace megatax
