// Tests of megatax/megatax_c.h: results equal the C++ IndexFlat's, every error path returns
// the documented status with a message naming what was wrong, and nothing throws.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "megatax/dtype.h"
#include "megatax/index_flat.h"
#include "megatax/megatax_c.h"

extern "C" int megatax_capi_c_smoke(char* msg, size_t msg_len);
extern "C" int megatax_capi_c_taxonomy_v2(char* msg, size_t msg_len);

namespace {

std::vector<float> normal_data(std::mt19937_64& rng, std::int64_t rows, std::int64_t dim) {
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(static_cast<std::size_t>(rows * dim));
  for (float& x : v) x = dist(rng);
  return v;
}

bool has(const char* text, const std::string& part) {
  return std::string(text).find(part) != std::string::npos;
}

std::string temp_dir() {
  std::string tmpl = ::testing::TempDir() + "capi_test.XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
  return tmpl;
}

// Owns a handle for the test's lifetime.
struct Handle {
  megatax_index_t* p = nullptr;
  ~Handle() { megatax_index_destroy(p); }
};

TEST(CApi, PureCCallerWorks) {
  char msg[512];
  EXPECT_EQ(megatax_capi_c_smoke(msg, sizeof msg), 0) << msg;
  EXPECT_EQ(megatax_capi_c_taxonomy_v2(msg, sizeof msg), 0) << msg;
}

TEST(CApi, StatusNames) {
  EXPECT_STREQ(megatax_status_name(MEGATAX_OK), "ok");
  EXPECT_STREQ(megatax_status_name(MEGATAX_INVALID_ARGUMENT), "invalid_argument");
  EXPECT_STREQ(megatax_status_name(MEGATAX_NOT_FOUND), "not_found");
  EXPECT_STREQ(megatax_status_name(MEGATAX_DATA_LOSS), "data_loss");
  EXPECT_STREQ(megatax_status_name(MEGATAX_INTERNAL), "internal");
  EXPECT_STREQ(megatax_status_name(-1), "unknown");
  EXPECT_STREQ(megatax_status_name(13), "unknown");
}

TEST(CApi, MatchesCppIndexAndRoundTripsThroughFiles) {
  std::random_device rd;
  const std::uint64_t seed = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::int64_t dim = 24, n = 203, nq = 5, k = 15;
  const std::vector<float> x = normal_data(rng, n, dim), q = normal_data(rng, nq, dim);
  for (const int metric : {MEGATAX_METRIC_L2, MEGATAX_METRIC_IP}) {
    for (const int dtype : {MEGATAX_DTYPE_F32, MEGATAX_DTYPE_F16, MEGATAX_DTYPE_BF16}) {
      SCOPED_TRACE("metric " + std::to_string(metric) + " dtype " + std::to_string(dtype));
      Handle h;
      ASSERT_EQ(megatax_index_create(dim, metric, dtype, &h.p), MEGATAX_OK) << megatax_last_error();
      EXPECT_STREQ(megatax_last_error(), "");
      ASSERT_EQ(megatax_index_add(h.p, 100, x.data()), MEGATAX_OK) << megatax_last_error();
      ASSERT_EQ(megatax_index_add(h.p, n - 100, x.data() + 100 * dim), MEGATAX_OK);
      std::int64_t ntotal = -1, d = -1;
      ASSERT_EQ(megatax_index_ntotal(h.p, &ntotal), MEGATAX_OK);
      ASSERT_EQ(megatax_index_dim(h.p, &d), MEGATAX_OK);
      EXPECT_EQ(ntotal, n);
      EXPECT_EQ(d, dim);

      std::vector<float> dist(nq * k);
      std::vector<std::int64_t> ids(nq * k);
      ASSERT_EQ(megatax_index_search(h.p, nq, q.data(), k, dist.data(), ids.data(), nullptr),
                MEGATAX_OK)
          << megatax_last_error();

      megatax::IndexFlat ref(dim, static_cast<megatax::Metric>(metric),
                             static_cast<megatax::DType>(dtype));
      ref.add(n, x.data());
      std::vector<float> ref_dist(nq * k);
      std::vector<std::int64_t> ref_ids(nq * k);
      ref.search(nq, q.data(), k, ref_dist.data(), ref_ids.data());
      EXPECT_EQ(ids, ref_ids);
      EXPECT_EQ(dist, ref_dist);

      // Options: forced scalar path, one thread: same results.
      megatax_search_options_t opts;
      ASSERT_EQ(megatax_search_options_init(&opts), MEGATAX_OK);
      opts.simd = "scalar";
      opts.threads = 1;
      opts.backend = MEGATAX_BACKEND_CPU;
      std::vector<float> dist2(nq * k);
      std::vector<std::int64_t> ids2(nq * k);
      ASSERT_EQ(megatax_index_search(h.p, nq, q.data(), k, dist2.data(), ids2.data(), &opts),
                MEGATAX_OK)
          << megatax_last_error();
      EXPECT_EQ(ids2, ids);
      opts.simd = nullptr;  // NULL = "auto"
      EXPECT_EQ(megatax_index_search(h.p, nq, q.data(), k, dist2.data(), ids2.data(), &opts),
                MEGATAX_OK)
          << megatax_last_error();

      // Save, load, same results.
      const std::string dir = temp_dir();
      const std::string path = dir + "/c.mtx";
      ASSERT_EQ(megatax_index_save(h.p, path.c_str()), MEGATAX_OK) << megatax_last_error();
      Handle loaded;
      ASSERT_EQ(megatax_index_load(path.c_str(), &loaded.p), MEGATAX_OK) << megatax_last_error();
      ASSERT_NE(loaded.p, nullptr);
      std::vector<float> dist3(nq * k);
      std::vector<std::int64_t> ids3(nq * k);
      ASSERT_EQ(megatax_index_search(loaded.p, nq, q.data(), k, dist3.data(), ids3.data(), nullptr),
                MEGATAX_OK);
      EXPECT_EQ(ids3, ids);
      EXPECT_EQ(dist3, dist);

      ASSERT_EQ(megatax_index_reset(h.p), MEGATAX_OK);
      ASSERT_EQ(megatax_index_ntotal(h.p, &ntotal), MEGATAX_OK);
      EXPECT_EQ(ntotal, 0);
    }
  }
}

TEST(CApi, TypedAdd) {
  const std::int64_t dim = 3;
  const std::vector<float> x = {0.5f, -1.f, 2.f, 3.f, 0.25f, -0.75f};
  std::vector<std::uint16_t> h16(x.size()), b16(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    h16[i] = megatax::f32_to_f16(x[i]);
    b16[i] = megatax::f32_to_bf16(x[i]);
  }
  const std::vector<std::uint8_t> u8 = {1, 2, 3, 250, 0, 7};
  Handle h;
  ASSERT_EQ(megatax_index_create(dim, MEGATAX_METRIC_L2, MEGATAX_DTYPE_F32, &h.p), MEGATAX_OK);
  EXPECT_EQ(megatax_index_add_typed(h.p, 2, x.data(), MEGATAX_DTYPE_F32), MEGATAX_OK);
  EXPECT_EQ(megatax_index_add_typed(h.p, 2, h16.data(), MEGATAX_DTYPE_F16), MEGATAX_OK);
  EXPECT_EQ(megatax_index_add_typed(h.p, 2, b16.data(), MEGATAX_DTYPE_BF16), MEGATAX_OK);
  EXPECT_EQ(megatax_index_add_typed(h.p, 2, u8.data(), MEGATAX_DTYPE_U8), MEGATAX_OK)
      << megatax_last_error();
  std::int64_t ntotal = 0;
  ASSERT_EQ(megatax_index_ntotal(h.p, &ntotal), MEGATAX_OK);
  EXPECT_EQ(ntotal, 8);
  // The u8 row (250, 0, 7) is found exactly.
  const float q[3] = {250.f, 0.f, 7.f};
  float dist[2];
  std::int64_t ids[2];
  ASSERT_EQ(megatax_index_search(h.p, 1, q, 2, dist, ids, nullptr), MEGATAX_OK);
  EXPECT_EQ(ids[0], 7);
  EXPECT_EQ(dist[0], 0.f);
}

TEST(CApi, NullPointersAreInvalidArguments) {
  Handle h;
  ASSERT_EQ(megatax_index_create(4, MEGATAX_METRIC_L2, MEGATAX_DTYPE_F32, &h.p), MEGATAX_OK);
  const float x[8] = {0};
  float dist[2];
  std::int64_t ids[2], v;

  EXPECT_EQ(megatax_index_create(4, MEGATAX_METRIC_L2, MEGATAX_DTYPE_F32, nullptr),
            MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "megatax_index_create: argument 'out' is null"))
      << megatax_last_error();
  EXPECT_EQ(megatax_index_add(nullptr, 1, x), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "argument 'index' is null")) << megatax_last_error();
  EXPECT_EQ(megatax_index_add(h.p, 1, nullptr), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "megatax_index_add: argument 'x' is null"))
      << megatax_last_error();
  EXPECT_EQ(megatax_index_add(h.p, 0, nullptr), MEGATAX_OK) << megatax_last_error();
  EXPECT_EQ(megatax_index_add_typed(h.p, 2, nullptr, MEGATAX_DTYPE_F16), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "argument 'x' is null")) << megatax_last_error();
  EXPECT_EQ(megatax_index_search(nullptr, 1, x, 1, dist, ids, nullptr), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "argument 'index' is null")) << megatax_last_error();
  EXPECT_EQ(megatax_index_search(h.p, 1, nullptr, 1, dist, ids, nullptr), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "argument 'q' is null")) << megatax_last_error();
  EXPECT_EQ(megatax_index_search(h.p, 1, x, 1, nullptr, ids, nullptr), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "argument 'distances' is null")) << megatax_last_error();
  EXPECT_EQ(megatax_index_search(h.p, 1, x, 1, dist, nullptr, nullptr), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "argument 'ids' is null")) << megatax_last_error();
  EXPECT_EQ(megatax_index_search(h.p, 0, nullptr, 1, nullptr, nullptr, nullptr), MEGATAX_OK);
  EXPECT_EQ(megatax_index_ntotal(h.p, nullptr), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "argument 'out' is null")) << megatax_last_error();
  EXPECT_EQ(megatax_index_ntotal(nullptr, &v), MEGATAX_INVALID_ARGUMENT);
  EXPECT_EQ(megatax_index_dim(nullptr, &v), MEGATAX_INVALID_ARGUMENT);
  EXPECT_EQ(megatax_index_dim(h.p, nullptr), MEGATAX_INVALID_ARGUMENT);
  EXPECT_EQ(megatax_index_reset(nullptr), MEGATAX_INVALID_ARGUMENT);
  EXPECT_EQ(megatax_index_save(nullptr, "x"), MEGATAX_INVALID_ARGUMENT);
  EXPECT_EQ(megatax_index_save(h.p, nullptr), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "argument 'path' is null")) << megatax_last_error();
  megatax_index_t* out = reinterpret_cast<megatax_index_t*>(0x1);
  EXPECT_EQ(megatax_index_load(nullptr, &out), MEGATAX_INVALID_ARGUMENT);
  EXPECT_EQ(out, nullptr) << "*out is NULL on failure";
  EXPECT_EQ(megatax_index_load("x", nullptr), MEGATAX_INVALID_ARGUMENT);
  EXPECT_EQ(megatax_search_options_init(nullptr), MEGATAX_INVALID_ARGUMENT);
  megatax_index_destroy(nullptr);
}

TEST(CApi, BadArgumentsNameWhatWasExpected) {
  megatax_index_t* out = reinterpret_cast<megatax_index_t*>(0x1);
  EXPECT_EQ(megatax_index_create(0, MEGATAX_METRIC_L2, MEGATAX_DTYPE_F32, &out),
            MEGATAX_INVALID_ARGUMENT);
  EXPECT_EQ(out, nullptr);
  EXPECT_TRUE(has(megatax_last_error(), "dim must be >= 1, got 0")) << megatax_last_error();
  EXPECT_EQ(megatax_index_create(4, 5, MEGATAX_DTYPE_F32, &out), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "'metric'")) << megatax_last_error();
  EXPECT_EQ(megatax_index_create(4, MEGATAX_METRIC_L2, 9, &out), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "'dtype'")) << megatax_last_error();
  EXPECT_EQ(megatax_index_create(4, MEGATAX_METRIC_L2, MEGATAX_DTYPE_U8, &out),
            MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "dtype must be f32, f16 or bf16")) << megatax_last_error();

  Handle h;
  ASSERT_EQ(megatax_index_create(4, MEGATAX_METRIC_IP, MEGATAX_DTYPE_F16, &h.p), MEGATAX_OK);
  std::vector<float> x(3 * 4, 0.5f);
  EXPECT_EQ(megatax_index_add_typed(h.p, 3, x.data(), 42), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "argument 'dtype' must be a MEGATAX_DTYPE_* value"))
      << megatax_last_error();
  EXPECT_EQ(megatax_index_add(h.p, -2, x.data()), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "negative row count")) << megatax_last_error();

  x[1 * 4 + 2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(megatax_index_add(h.p, 3, x.data()), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "megatax_index_add: add: row 1")) << megatax_last_error();
  std::int64_t ntotal = -1;
  ASSERT_EQ(megatax_index_ntotal(h.p, &ntotal), MEGATAX_OK);
  EXPECT_EQ(ntotal, 0);
  EXPECT_STREQ(megatax_last_error(), "") << "a success clears the message";
  x[1 * 4 + 2] = 0.5f;
  ASSERT_EQ(megatax_index_add(h.p, 3, x.data()), MEGATAX_OK);

  float dist[6];
  std::int64_t ids[6];
  EXPECT_EQ(megatax_index_search(h.p, 2, x.data(), 0, dist, ids, nullptr),
            MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "k must be >= 1, got 0")) << megatax_last_error();
  EXPECT_EQ(megatax_index_search(h.p, 2, x.data(), -5, dist, ids, nullptr),
            MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "k must be >= 1, got -5")) << megatax_last_error();

  std::vector<float> q(2 * 4, 0.1f);
  q[1 * 4 + 3] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(megatax_index_search(h.p, 2, q.data(), 3, dist, ids, nullptr),
            MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "query row 1")) << megatax_last_error();

  megatax_search_options_t opts;
  ASSERT_EQ(megatax_search_options_init(&opts), MEGATAX_OK);
  opts.backend = MEGATAX_BACKEND_CUDA;
  {  // where no GPU can run it: unimplemented (no CUDA build) or failed precondition (no GPU)
    const int rc = megatax_index_search(h.p, 1, x.data(), 3, dist, ids, &opts);
    if (rc != MEGATAX_OK) {
      EXPECT_TRUE(rc == MEGATAX_UNIMPLEMENTED || rc == MEGATAX_FAILED_PRECONDITION) << rc;
      EXPECT_TRUE(has(megatax_last_error(), "backend cuda")) << megatax_last_error();
    }
  }
  opts.backend = 17;
  EXPECT_EQ(megatax_index_search(h.p, 1, x.data(), 3, dist, ids, &opts), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "opts->backend")) << megatax_last_error();
  opts.backend = MEGATAX_BACKEND_AUTO;
  opts.simd = "mmx";
  EXPECT_EQ(megatax_index_search(h.p, 1, x.data(), 3, dist, ids, &opts), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "mmx")) << megatax_last_error();
  opts.simd = "auto";
  opts.threads = -4;
  EXPECT_EQ(megatax_index_search(h.p, 1, x.data(), 3, dist, ids, &opts), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "threads")) << megatax_last_error();
  opts.threads = 0;

  // Version 4: the GPUs of a CUDA search. Defaults: none (GPU 0).
  static_assert(MEGATAX_C_API_VERSION >= 4, "the version-4 fields are tested here");
  megatax_search_options_t fresh;
  std::memset(&fresh, 0x5a, sizeof(fresh));
  ASSERT_EQ(megatax_search_options_init(&fresh), MEGATAX_OK);
  EXPECT_EQ(fresh.devices, nullptr);
  EXPECT_EQ(fresh.n_devices, 0);
  opts.n_devices = -1;
  EXPECT_EQ(megatax_index_search(h.p, 1, x.data(), 3, dist, ids, &opts), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "n_devices must be >= 0, got -1")) << megatax_last_error();
  opts.n_devices = 2;  // devices NULL
  EXPECT_EQ(megatax_index_search(h.p, 1, x.data(), 3, dist, ids, &opts), MEGATAX_INVALID_ARGUMENT);
  EXPECT_TRUE(has(megatax_last_error(), "opts->devices")) << megatax_last_error();
  // The CPU backend ignores them: the same results as without.
  const int gpus[] = {0, 1};
  opts.devices = gpus;
  std::vector<float> d_with(3), d_without(3);
  std::vector<int64_t> i_with(3), i_without(3);
  ASSERT_EQ(megatax_index_search(h.p, 1, x.data(), 3, d_with.data(), i_with.data(), &opts), MEGATAX_OK)
      << megatax_last_error();
  ASSERT_EQ(megatax_index_search(h.p, 1, x.data(), 3, d_without.data(), i_without.data(), nullptr),
            MEGATAX_OK);
  EXPECT_EQ(i_with, i_without);
  EXPECT_EQ(d_with, d_without);
  // CUDA over GPUs 0 and 9: a GPU that does not exist is named (or, with no GPU here, the
  // reason there is none).
  const int missing[] = {0, 9};
  opts.devices = missing;
  opts.backend = MEGATAX_BACKEND_CUDA;
  const int rc = megatax_index_search(h.p, 1, x.data(), 3, dist, ids, &opts);
  EXPECT_NE(rc, MEGATAX_OK);
  if (rc == MEGATAX_INVALID_ARGUMENT) {
    EXPECT_TRUE(has(megatax_last_error(), "device 9 does not exist")) << megatax_last_error();
  } else {
    EXPECT_TRUE(rc == MEGATAX_UNIMPLEMENTED || rc == MEGATAX_FAILED_PRECONDITION) << rc;
    EXPECT_TRUE(has(megatax_last_error(), "backend cuda")) << megatax_last_error();
  }
}

TEST(CApi, FileErrors) {
  const std::string dir = temp_dir();
  const std::string missing = dir + "/missing.mtx";
  megatax_index_t* out = reinterpret_cast<megatax_index_t*>(0x1);
  EXPECT_EQ(megatax_index_load(missing.c_str(), &out), MEGATAX_NOT_FOUND);
  EXPECT_EQ(out, nullptr);
  EXPECT_TRUE(has(megatax_last_error(), "index file " + missing + ": not found"))
      << megatax_last_error();

  const std::string garbage = dir + "/garbage.mtx";
  FILE* f = std::fopen(garbage.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::fputs("this is not an index file at all, no sir", f);
  std::fclose(f);
  EXPECT_EQ(megatax_index_load(garbage.c_str(), &out), MEGATAX_DATA_LOSS);
  EXPECT_TRUE(has(megatax_last_error(), "bad magic")) << megatax_last_error();

  Handle h;
  ASSERT_EQ(megatax_index_create(2, MEGATAX_METRIC_L2, MEGATAX_DTYPE_F32, &h.p), MEGATAX_OK);
  const std::string bad_dir = dir + "/nope/x.mtx";
  EXPECT_EQ(megatax_index_save(h.p, bad_dir.c_str()), MEGATAX_IO_ERROR);
  EXPECT_TRUE(has(megatax_last_error(), bad_dir)) << megatax_last_error();
}

TEST(CApi, LastErrorIsPerThread) {
  Handle h;
  ASSERT_EQ(megatax_index_create(2, MEGATAX_METRIC_L2, MEGATAX_DTYPE_F32, &h.p), MEGATAX_OK);
  EXPECT_EQ(megatax_index_add(h.p, 1, nullptr), MEGATAX_INVALID_ARGUMENT);
  const std::string mine = megatax_last_error();
  std::string other = "unset";
  std::thread t([&] {
    other = megatax_last_error();
    float dist;
    std::int64_t id;
    const float q[2] = {0, 0};
    (void)megatax_index_search(h.p, 1, q, 0, &dist, &id, nullptr);  // fails on this thread
  });
  t.join();
  EXPECT_EQ(other, "");
  EXPECT_EQ(std::string(megatax_last_error()), mine);
}

}  // namespace
