// Dataset: shards behind a glob, global ids, batch iteration, consistency checks and
// non-finite detection.
#include "megatax/dataset.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "io/fault_injection_storage.h"
#include "io/io_test_util.h"
#include "io/memory_storage.h"
#include "io/posix_storage.h"
#include "megatax/error.h"
#include "megatax/storage.h"
#include "megatax/vector_format.h"

namespace megatax {
namespace {

using testing_io::Bytes;
using testing_io::expect_error;
using testing_io::ScratchDir;

std::vector<float> random_matrix(std::mt19937_64& rng, std::int64_t n, std::int64_t d) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(n * d));
  for (float& v : x) v = normal(rng);
  return x;
}

std::string fvecs_bytes(const std::vector<float>& x, std::int64_t d) {
  Bytes b;
  for (std::size_t i = 0; i < x.size(); i += static_cast<std::size_t>(d)) {
    b.i32(static_cast<std::int32_t>(d));
    for (std::int64_t j = 0; j < d; ++j) b.f32(x[i + j]);
  }
  return b.str();
}

std::string fbin_bytes(const std::vector<float>& x, std::int64_t d) {
  Bytes b;
  b.u32(static_cast<std::uint32_t>(x.size() / d)).u32(static_cast<std::uint32_t>(d));
  for (float v : x) b.f32(v);
  return b.str();
}

// Shards in mixed formats (npy f32, npy f16, fbin, fvecs, empty ones), globbed out of
// order; every row comes back once, in global-id order, with the right values.
TEST(DatasetTest, GlobSortedShardsGlobalIdsAndBatches) {
  MEGATAX_SEEDED_RNG(rng);
  ScratchDir dir;
  const std::int64_t d = 1 + static_cast<std::int64_t>(rng() % 70);
  struct Shard {
    std::string name;
    std::int64_t rows;
  };
  // Names chosen so that creation order differs from sorted order.
  const std::vector<Shard> plan = {
      {"part-03.fvecs", static_cast<std::int64_t>(rng() % 300)},
      {"part-00.npy", 1 + static_cast<std::int64_t>(rng() % 500)},
      {"part-02.fbin", static_cast<std::int64_t>(rng() % 400)},
      {"part-01.npy", 0},                                           // empty shard
      {"part-04.npy", 1 + static_cast<std::int64_t>(rng() % 200)},  // stored as f16
      {"part-05.fvecs", 0},                                         // empty, no dim recorded
  };
  io::PosixStorage posix;
  std::map<std::string, std::vector<float>> want;  // f32 values as read back
  for (const Shard& sh : plan) {
    std::vector<float> x = random_matrix(rng, sh.rows, d);
    const std::string path = dir / ("shards/" + sh.name);
    const std::array<std::int64_t, 2> shape{sh.rows, d};
    if (sh.name == "part-04.npy") {
      write_npy(posix, path, MatrixView(x.data(), sh.rows, d, DType::kF32), NpyType::kF16);
      for (float& v : x) v = f16_to_f32(f32_to_f16(v));
    } else if (sh.name.ends_with(".npy")) {
      write_npy(posix, path, std::span<const float>(x), shape);
    } else if (sh.name.ends_with(".fbin")) {
      posix.write_atomic(path, fbin_bytes(x, d));
    } else {
      posix.write_atomic(path, fvecs_bytes(x, d));
    }
    want[path] = std::move(x);
  }
  posix.write_atomic(dir / "shards/README.txt", "not a shard");  // outside the glob

  const Dataset ds = Dataset::open("file://" + dir.path() + "/shards/part-*");
  ASSERT_EQ(ds.shards().size(), plan.size());
  EXPECT_EQ(ds.dim(), d);
  EXPECT_EQ(ds.dtype(), DType::kF32);  // f32 and f16 mixed
  std::int64_t offset = 0;
  for (std::size_t s = 0; s < ds.shards().size(); ++s) {
    const ShardInfo& info = ds.shards()[s];
    // Sorted by name: shard s is "<dir>/shards/part-0<s>.<ext>".
    EXPECT_EQ(info.path.substr(0, info.path.rfind('.')),
              dir / ("shards/part-0" + std::to_string(s)));
    EXPECT_EQ(info.global_begin, offset);
    EXPECT_EQ(info.dim, d);
    EXPECT_EQ(static_cast<std::size_t>(info.rows * d), want[info.path].size());
    offset += info.rows;
  }
  EXPECT_EQ(ds.rows(), offset);
  EXPECT_EQ(ds.shards()[4].dtype, DType::kF16);
  EXPECT_EQ(ds.shards()[2].format, VectorFormat::kFbin);

  // Stream everything with a random batch size.
  const std::int64_t batch_rows = 1 + static_cast<std::int64_t>(rng() % 130);
  Id expect_id = 0;
  for (std::size_t s = 0; s < ds.shards().size(); ++s) {
    const std::vector<float>& x = want[ds.shards()[s].path];
    BatchReader reader(ds, s, batch_rows);
    Batch batch;
    std::int64_t local = 0;
    while (reader.next(&batch)) {
      ASSERT_EQ(batch.global_begin, expect_id);
      ASSERT_EQ(batch.local_begin, local);
      ASSERT_EQ(batch.shard, s);
      ASSERT_GE(batch.view.rows, 1);
      ASSERT_LE(batch.view.rows, batch_rows);
      ASSERT_EQ(batch.view.dim, d);
      ASSERT_EQ(batch.view.dtype, DType::kF32);
      ASSERT_EQ(batch.view.data, batch.data);
      ASSERT_EQ(std::memcmp(batch.data, &x[local * d], batch.view.rows * d * 4), 0)
          << "shard " << s << " rows from " << local;
      check_finite(batch, ds);
      expect_id += batch.view.rows;
      local += batch.view.rows;
    }
    EXPECT_EQ(local, ds.shards()[s].rows);
    EXPECT_EQ(reader.remaining(), 0);
  }
  EXPECT_EQ(expect_id, ds.rows());

  // locate() agrees with the offsets; empty shards are skipped.
  for (int trial = 0; trial < 200; ++trial) {
    const Id id = static_cast<Id>(rng() % static_cast<std::uint64_t>(ds.rows()));
    const ShardRow where = ds.locate(id);
    const ShardInfo& info = ds.shards()[where.shard];
    ASSERT_GT(info.rows, 0);
    ASSERT_EQ(info.global_begin + where.row, id);
    ASSERT_LT(where.row, info.rows);
  }
  expect_error([&] { ds.locate(ds.rows()); }, ErrorCode::kOutOfRange, {"global id"});

  // A sub-range of one shard.
  const std::int64_t r0 = ds.shards()[0].rows;
  BatchReader part(ds, 0, 7, r0 / 3, r0 / 2);
  Batch b;
  std::int64_t seen = 0;
  while (part.next(&b)) {
    EXPECT_EQ(b.local_begin, r0 / 3 + seen);
    seen += b.view.rows;
  }
  EXPECT_EQ(seen, r0 / 2 - r0 / 3);
}

TEST(DatasetTest, DimAndDtypeMismatchAndEmptyDatasets) {
  io::MemoryStorage s;
  const std::vector<float> a(2 * 1024, 0.0f), b(3 * 768, 0.0f);
  const std::array<std::int64_t, 2> sa{2, 1024}, sb{3, 768};
  write_npy(s, "/d/a.npy", std::span<const float>(a), sa);
  write_npy(s, "/d/b.npy", std::span<const float>(b), sb);
  expect_error([&] { Dataset::open(s, "/d/*.npy"); }, ErrorCode::kInvalidArgument,
               {"shard /d/b.npy: dim 768, expected 1024 (from /d/a.npy)"});

  const std::vector<std::uint8_t> u(2 * 1024, 1);
  write_npy(s, "/e/a.npy", std::span<const float>(a), sa);
  write_npy(s, "/e/b.npy", MatrixView(u.data(), 2, 1024, DType::kU8));
  expect_error(
      [&] { Dataset::open(s, "/e/*.npy"); }, ErrorCode::kInvalidArgument,
      {"shard /e/b.npy: dtype u8, expected a floating-point dtype like f32 (from /e/a.npy)"});

  expect_error([&] { Dataset::open(s, "/nowhere/part-*.npy"); }, ErrorCode::kNotFound,
               {"no files match '/nowhere/part-*.npy'"});
  ScratchDir dir;
  expect_error([&] { Dataset::open(dir / "part-*.npy"); }, ErrorCode::kNotFound,
               {"no files match '" + dir / "part-*.npy'"});

  const std::array<std::int64_t, 2> empty{0, 16};
  write_npy(s, "/f/a.npy", nullptr, NpyType::kF32, empty);
  s.write_atomic("/f/b.fvecs", "");
  expect_error([&] { Dataset::open(s, "/f/*"); }, ErrorCode::kInvalidArgument,
               {"dataset '/f/*': all 2 shard(s) are empty (0 rows)"});

  // A bad shard's own error names it.
  s.write_atomic("/g/a.npy", "garbage");
  expect_error([&] { Dataset::open(s, "/g/*.npy"); }, ErrorCode::kDataLoss,
               {"file /g/a.npy: not an .npy file"});

#ifndef MEGATAX_HAVE_ARROW  // with Arrow: tests/s3/s3_storage_test.cc
  expect_error([&] { Dataset::open("s3://bucket/emb/*.npy"); }, ErrorCode::kUnimplemented,
               {"Arrow filesystem backend (not built)"});
#endif
}

TEST(DatasetTest, U8DatasetAndBatchArguments) {
  io::MemoryStorage s;
  std::vector<std::uint8_t> u(5 * 3);
  for (std::size_t i = 0; i < u.size(); ++i) u[i] = static_cast<std::uint8_t>(250 + i % 6);
  write_npy(s, "u/a.npy", MatrixView(u.data(), 5, 3, DType::kU8));
  s.write_atomic("u/b.u8bin", Bytes().u32(1).u32(3).u8(1).u8(2).u8(3).str());
  const Dataset ds = Dataset::open(s, "u/*");
  EXPECT_EQ(ds.dtype(), DType::kU8);
  EXPECT_EQ(ds.rows(), 6);
  BatchReader r(ds, 1, 100);
  Batch b;
  ASSERT_TRUE(r.next(&b));
  EXPECT_EQ(b.global_begin, 5);
  EXPECT_EQ(b.data[2], 3.0f);
  EXPECT_FALSE(r.next(&b));
  expect_error([&] { BatchReader(ds, 0, 0); }, ErrorCode::kInvalidArgument,
               {"shard u/a.npy: batch_rows 0 must be >= 1"});
  expect_error([&] { BatchReader(ds, 0, 4, 2, 9); }, ErrorCode::kOutOfRange,
               {"shard u/a.npy: row range [2, 9) is not inside [0, 5)"});
  expect_error([&] { BatchReader(ds, 2, 4); }, ErrorCode::kOutOfRange, {"shard index 2"});
}

TEST(DatasetTest, NonFiniteRowsAreNamed) {
  MEGATAX_SEEDED_RNG(rng);
  io::MemoryStorage s;
  const std::int64_t d = 8;
  std::vector<float> a = random_matrix(rng, 10, d), b = random_matrix(rng, 20, d);
  const std::int64_t bad_row = 3 + static_cast<std::int64_t>(rng() % 15);
  b[bad_row * d + 5] = std::numeric_limits<float>::quiet_NaN();
  const std::array<std::int64_t, 2> sa{10, d}, sb{20, d};
  write_npy(s, "x/a.npy", std::span<const float>(a), sa);
  write_npy(s, "x/b.npy", std::span<const float>(b), sb);
  const Dataset ds = Dataset::open(s, "x/*.npy");
  BatchReader r(ds, 1, 64);
  Batch batch;
  ASSERT_TRUE(r.next(&batch));
  expect_error([&] { check_finite(batch, ds); }, ErrorCode::kDataLoss,
               {"shard x/b.npy: row " + std::to_string(bad_row) + " (global id " +
                std::to_string(10 + bad_row) + ") has a non-finite value (nan) in column 5"});
  // Inf, and f16 / bf16 views.
  b[bad_row * d + 5] = -std::numeric_limits<float>::infinity();
  expect_error([&] { check_finite(f32_view(b.data(), 20, d), "f.npy", 0, 100); },
               ErrorCode::kDataLoss, {"row " + std::to_string(bad_row), "(-inf) in column 5"});
  std::vector<std::uint16_t> h(2 * d, f32_to_f16(1.0f));
  check_finite(MatrixView(h.data(), 2, d, DType::kF16), "h.npy", 0, 0);
  h[d + 1] = 0x7C00;  // +inf
  expect_error([&] { check_finite(MatrixView(h.data(), 2, d, DType::kF16), "h.npy", 7, 70); },
               ErrorCode::kDataLoss, {"shard h.npy: row 8 (global id 71)", "(inf) in column 1"});
  std::vector<std::uint16_t> bf(d, f32_to_bf16(2.0f));
  bf[0] = 0x7FC0;  // NaN
  expect_error([&] { check_finite(MatrixView(bf.data(), 1, d, DType::kBF16), "bf", 0, 0); },
               ErrorCode::kDataLoss, {"(nan) in column 0"});
}

// keep_stored_dtype into the caller's buffer: the same bytes as the vector form, checked
// for non-finite values while read (Batch::checked), the first bad row of the batch named
// even when a later 16 MiB piece also has one; a buffer too small is refused.
TEST(DatasetTest, BatchesIntoTheCallersBufferAreCheckedWhileRead) {
  MEGATAX_SEEDED_RNG(rng);
  io::MemoryStorage s;
  const std::int64_t d = 512, n = 20000;  // 1 KiB rows: two pieces of 16 MiB per batch
  std::vector<float> x = random_matrix(rng, n, d);
  write_npy(s, "c/clean.npy", MatrixView(x.data(), n, d, DType::kF32), NpyType::kF16);
  const std::int64_t late = 16384 + static_cast<std::int64_t>(rng() % 3000), early = rng() % 16000;
  const std::int64_t col = static_cast<std::int64_t>(rng() % d);
  x[static_cast<std::size_t>(late * d + col)] = std::numeric_limits<float>::quiet_NaN();
  write_npy(s, "l/late.npy", MatrixView(x.data(), n, d, DType::kF32), NpyType::kF16);
  x[static_cast<std::size_t>(early * d + 3)] = -std::numeric_limits<float>::infinity();
  write_npy(s, "l/z_late_and_early.npy", MatrixView(x.data(), n, d, DType::kF32), NpyType::kF16);

  const Dataset clean = Dataset::open(s, "c/*.npy");
  std::vector<unsigned char> buf(static_cast<std::size_t>(n * d * 2)), raw;
  BatchReader a(clean, 0, n), b(clean, 0, n);
  a.keep_stored_dtype(buf.data(), buf.size());
  b.keep_stored_dtype(&raw);
  Batch ba, bb;
  ASSERT_TRUE(a.next(&ba));
  ASSERT_TRUE(b.next(&bb));
  EXPECT_TRUE(ba.checked);
  EXPECT_FALSE(bb.checked);
  EXPECT_EQ(ba.view.data, buf.data());
  EXPECT_EQ(std::memcmp(ba.view.data, bb.view.data, buf.size()), 0);

  const Dataset bad = Dataset::open(s, "l/*.npy");
  BatchReader r_late(bad, 0, n), r_both(bad, 1, n);
  r_late.keep_stored_dtype(buf.data(), buf.size());
  r_both.keep_stored_dtype(buf.data(), buf.size());
  Batch batch;
  expect_error([&] { r_late.next(&batch); }, ErrorCode::kDataLoss,
               {"late.npy: row " + std::to_string(late) + " ", "(nan) in column " + std::to_string(col)});
  expect_error([&] { r_both.next(&batch); }, ErrorCode::kDataLoss,
               {"row " + std::to_string(early) + " ", "(-inf) in column 3"});

  BatchReader small(clean, 0, 1000);
  expect_error([&] { small.keep_stored_dtype(buf.data(), 1000 * d * 2 - 1); }, ErrorCode::kInvalidArgument,
               {"clean.npy", "a batch needs 1024000 bytes"});
}

// on_rows_landed: every row of every batch is handed on exactly once, with the batch's
// place in the shard, and its bytes are in the buffer when the call comes (a copy taken in
// the callback equals the finished batch); a range holding a non-finite value is not handed
// on, and the batch fails.
TEST(DatasetTest, LandedRowsCoverEachBatchOnceAndAreInPlace) {
  MEGATAX_SEEDED_RNG(rng);
  io::MemoryStorage s;
  const std::int64_t d = 256, n = 70000 + static_cast<std::int64_t>(rng() % 5000);  // 512-byte f16 rows
  const std::int64_t batch_rows = 40000;  // two batches, each of several 16 MiB ranges
  std::vector<float> x = random_matrix(rng, n, d);
  write_npy(s, "c/clean.npy", MatrixView(x.data(), n, d, DType::kF32), NpyType::kF16);
  const Dataset clean = Dataset::open(s, "c/*.npy");
  std::vector<unsigned char> buf(static_cast<std::size_t>(batch_rows * d * 2)), copy(buf.size());
  BatchReader r(clean, 0, batch_rows);
  r.keep_stored_dtype(buf.data(), buf.size());
  std::mutex mu;
  std::vector<std::int64_t> hits;
  std::int64_t seen_begin = -1, seen_rows = -1;
  r.on_rows_landed([&](std::int64_t b0, std::int64_t rows, std::int64_t first, std::int64_t count) {
    std::lock_guard<std::mutex> lock(mu);
    seen_begin = b0;
    seen_rows = rows;
    for (std::int64_t i = first; i < first + count; ++i) ++hits[static_cast<std::size_t>(i)];
    std::memcpy(copy.data() + first * d * 2, buf.data() + first * d * 2, static_cast<std::size_t>(count * d * 2));
  });
  Batch batch;
  for (std::int64_t b0 = 0; b0 < n; b0 += batch_rows) {
    const std::int64_t rows = std::min(batch_rows, n - b0);
    hits.assign(static_cast<std::size_t>(rows), 0);
    ASSERT_TRUE(r.next(&batch));
    EXPECT_EQ(seen_begin, b0);
    EXPECT_EQ(seen_rows, rows);
    EXPECT_EQ(std::count(hits.begin(), hits.end(), 1), rows) << "batch at row " << b0;
    EXPECT_EQ(std::memcmp(copy.data(), batch.view.data, static_cast<std::size_t>(rows * d * 2)), 0);
  }
  EXPECT_FALSE(r.next(&batch));

  const std::int64_t bad_row = static_cast<std::int64_t>(rng() % batch_rows);
  x[static_cast<std::size_t>(bad_row * d + 7)] = std::numeric_limits<float>::infinity();
  write_npy(s, "b/bad.npy", MatrixView(x.data(), n, d, DType::kF32), NpyType::kF16);
  const Dataset bad = Dataset::open(s, "b/*.npy");
  BatchReader rb(bad, 0, batch_rows);
  rb.keep_stored_dtype(buf.data(), buf.size());
  std::int64_t handed = 0;
  bool bad_handed = false;
  rb.on_rows_landed([&](std::int64_t, std::int64_t, std::int64_t first, std::int64_t count) {
    std::lock_guard<std::mutex> lock(mu);
    handed += count;
    if (bad_row >= first && bad_row < first + count) bad_handed = true;
  });
  expect_error([&] { rb.next(&batch); }, ErrorCode::kDataLoss, {"row " + std::to_string(bad_row) + " "});
  EXPECT_FALSE(bad_handed);
  EXPECT_LT(handed, batch_rows);
}

// keep_stored_dtype: f16 shards come as stored (bytes of the file, no float32 copy); f32
// shards too (the same floats, in the caller's buffer, data pointing at them, checked while
// read into a buffer the caller owns); the 16-bit finite check names the row and column past
// the vectorised blocks of 64.
TEST(DatasetTest, BatchesKeepTheStoredDtypeOnRequest) {
  MEGATAX_SEEDED_RNG(rng);
  io::MemoryStorage s;
  const std::int64_t d = 100, n = 300;
  std::vector<float> x = random_matrix(rng, n, d);
  write_npy(s, "k/a.npy", MatrixView(x.data(), n, d, DType::kF32), NpyType::kF16);
  const std::array<std::int64_t, 2> shape{n, d};
  write_npy(s, "k/b.npy", std::span<const float>(x), shape);
  const Dataset ds = Dataset::open(s, "k/*.npy");
  std::vector<unsigned char> raw;
  BatchReader r(ds, 0, 128);
  r.keep_stored_dtype(&raw);
  Batch batch;
  std::int64_t seen = 0;
  while (r.next(&batch)) {
    ASSERT_EQ(batch.view.dtype, DType::kF16);
    EXPECT_EQ(batch.data, nullptr);
    EXPECT_EQ(batch.local_begin, seen);
    for (std::int64_t i = 0; i < batch.view.rows; ++i) {
      const auto* row = static_cast<const std::uint16_t*>(batch.view.row(i));
      for (std::int64_t j = 0; j < d; ++j)
        ASSERT_EQ(row[j], f32_to_f16(x[static_cast<std::size_t>((seen + i) * d + j)]));
    }
    seen += batch.view.rows;
  }
  EXPECT_EQ(seen, n);
  BatchReader r32(ds, 1, 1000);
  r32.keep_stored_dtype(&raw);
  ASSERT_TRUE(r32.next(&batch));
  EXPECT_EQ(batch.view.dtype, DType::kF32);
  EXPECT_EQ(batch.view.data, raw.data());
  ASSERT_EQ(batch.data, reinterpret_cast<float*>(raw.data()));
  EXPECT_EQ(std::memcmp(batch.data, x.data(), x.size() * sizeof(float)), 0);
  EXPECT_FALSE(batch.checked);

  // f32 into the caller's buffer: checked while read; a NaN names its row and column.
  std::vector<unsigned char> own(static_cast<std::size_t>(n * d) * sizeof(float));
  BatchReader o32(ds, 1, n);
  o32.keep_stored_dtype(own.data(), own.size());
  ASSERT_TRUE(o32.next(&batch));
  EXPECT_TRUE(batch.checked);
  ASSERT_EQ(batch.data, reinterpret_cast<float*>(own.data()));
  EXPECT_EQ(std::memcmp(batch.data, x.data(), x.size() * sizeof(float)), 0);
  const std::int64_t nan_row = static_cast<std::int64_t>(rng() % n), nan_col = rng() % d;
  x[static_cast<std::size_t>(nan_row * d + nan_col)] = std::numeric_limits<float>::quiet_NaN();
  write_npy(s, "n/c.npy", std::span<const float>(x), shape);
  const Dataset with_nan = Dataset::open(s, "n/*.npy");
  BatchReader n32(with_nan, 0, n);
  n32.keep_stored_dtype(own.data(), own.size());
  expect_error([&] { n32.next(&batch); }, ErrorCode::kDataLoss,
               {"c.npy: row " + std::to_string(nan_row) + " ", "(nan) in column " + std::to_string(nan_col)});

  const std::int64_t wide = 150, bad_col = 64 + static_cast<std::int64_t>(rng() % 86);
  std::vector<std::uint16_t> h(3 * wide, f32_to_f16(0.5f)), bf(3 * wide, f32_to_bf16(0.5f));
  check_finite(MatrixView(h.data(), 3, wide, DType::kF16), "h", 0, 0);
  check_finite(MatrixView(bf.data(), 3, wide, DType::kBF16), "bf", 0, 0);
  h[static_cast<std::size_t>(2 * wide + bad_col)] = 0xFC00;  // -inf
  bf[static_cast<std::size_t>(wide + bad_col)] = 0x7F81;     // nan
  expect_error([&] { check_finite(MatrixView(h.data(), 3, wide, DType::kF16), "h", 0, 0); },
               ErrorCode::kDataLoss, {"row 2", "(-inf) in column " + std::to_string(bad_col)});
  expect_error([&] { check_finite(MatrixView(bf.data(), 3, wide, DType::kBF16), "bf", 0, 0); },
               ErrorCode::kDataLoss, {"row 1", "(nan) in column " + std::to_string(bad_col)});
}

// Reading through a failing storage surfaces the error; a retry of next() continues.
TEST(DatasetTest, ReadFaultsPropagateAndNextCanBeRetried) {
  io::MemoryStorage mem;
  std::vector<float> x(40 * 4);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
  const std::array<std::int64_t, 2> shape{40, 4};
  write_npy(mem, "y/a.npy", std::span<const float>(x), shape);
  io::FaultInjectionStorage faulty(mem);
  const Dataset ds = Dataset::open(faulty, "y/*.npy");
  BatchReader r(ds, 0, 16);
  Batch b;
  ASSERT_TRUE(r.next(&b));
  faulty.fail_read(1, io::ReadFault::kError, ErrorCode::kUnavailable);
  expect_error([&] { r.next(&b); }, ErrorCode::kUnavailable, {"injected fault", "y/a.npy"});
  ASSERT_TRUE(r.next(&b));
  EXPECT_EQ(b.local_begin, 16);
  EXPECT_EQ(b.data[0], 64.0f);
  ASSERT_TRUE(r.next(&b));
  EXPECT_EQ(b.view.rows, 8);
  EXPECT_FALSE(r.next(&b));
}

// Batches converted to f32 are read in ranges of 16 MiB of stored rows on parallel threads:
// a batch of several ranges holds every row's converted values in place (f16 and u8), and a
// storage fault while they are read fails that next() and leaves the reader where it was.
TEST(DatasetTest, ConvertedBatchesOfManyRangesHoldEveryRow) {
  MEGATAX_SEEDED_RNG(rng);
  io::MemoryStorage mem;
  const std::int64_t d = 1024, n = 20000 + static_cast<std::int64_t>(rng() % 3000);  // f16: 8192 rows a range
  std::vector<float> x = random_matrix(rng, n, d);
  write_npy(mem, "h/a.npy", MatrixView(x.data(), n, d, DType::kF32), NpyType::kF16);
  std::vector<std::uint8_t> u(static_cast<std::size_t>(n * 2 * d));
  for (auto& v : u) v = static_cast<std::uint8_t>(rng());
  const std::array<std::int64_t, 2> ushape{n, 2 * d};  // u8: 8192 rows a range as well
  write_npy(mem, "u/a.npy", u.data(), NpyType::kU8, ushape);
  for (const std::int64_t batch_rows : {n, std::int64_t{17000}}) {
    const Dataset h = Dataset::open(mem, "h/*.npy");
    BatchReader r(h, 0, batch_rows);
    Batch b;
    std::int64_t seen = 0;
    while (r.next(&b)) {
      ASSERT_EQ(b.view.dtype, DType::kF32);
      ASSERT_EQ(b.data, b.view.data);
      for (std::int64_t i = 0; i < b.view.rows * d; ++i)
        ASSERT_EQ(b.data[i], f16_to_f32(f32_to_f16(x[static_cast<std::size_t>(seen * d + i)])))
            << "row " << seen + i / d << ", batch rows " << batch_rows;
      seen += b.view.rows;
    }
    EXPECT_EQ(seen, n);
  }
  const Dataset ud = Dataset::open(mem, "u/*.npy");
  BatchReader ru(ud, 0, n);
  Batch bu;
  ASSERT_TRUE(ru.next(&bu));
  for (std::int64_t i = 0; i < n * 2 * d; ++i)
    ASSERT_EQ(bu.data[i], static_cast<float>(u[static_cast<std::size_t>(i)])) << "element " << i;

  io::FaultInjectionStorage faulty(mem);
  const Dataset fd = Dataset::open(faulty, "h/*.npy");
  BatchReader rf(fd, 0, n);
  Batch bf;
  faulty.fail_read(3, io::ReadFault::kError, ErrorCode::kUnavailable);
  expect_error([&] { rf.next(&bf); }, ErrorCode::kUnavailable, {"injected fault", "h/a.npy"});
  ASSERT_TRUE(rf.next(&bf));
  EXPECT_EQ(bf.local_begin, 0);
  EXPECT_EQ(bf.view.rows, n);
  EXPECT_EQ(bf.data[(n - 1) * d + 5], f16_to_f32(f32_to_f16(x[static_cast<std::size_t>((n - 1) * d + 5)])));
}

// convert_into: batches of f16 and u8 shards come as float32 in the caller's buffer (the
// values read_f32 gives), checked while read, every row handed on exactly once as its
// 2 MiB range lands (a copy taken in the callback equals the finished batch); a non-finite
// value fails the batch naming its row and column without handing its range on; a buffer
// too small or misaligned is refused; an f32 shard takes keep_stored_dtype's path.
TEST(DatasetTest, BatchesConvertedIntoTheCallersBufferLandInRanges) {
  MEGATAX_SEEDED_RNG(rng);
  io::MemoryStorage mem;
  const std::int64_t d = 384, n = 7000 + static_cast<std::int64_t>(rng() % 2500);  // 1536-byte f32 rows
  const std::int64_t batch_rows = 5000;  // two batches of several 2 MiB ranges
  std::vector<float> x = random_matrix(rng, n, d);
  write_npy(mem, "h/a.npy", MatrixView(x.data(), n, d, DType::kF32), NpyType::kF16);
  std::vector<std::uint8_t> u(static_cast<std::size_t>(n * d));
  for (auto& v : u) v = static_cast<std::uint8_t>(rng());
  const std::array<std::int64_t, 2> shape{n, d};
  write_npy(mem, "u/a.npy", u.data(), NpyType::kU8, shape);
  const std::size_t batch_bytes = static_cast<std::size_t>(batch_rows * d) * sizeof(float);
  std::vector<float> own(static_cast<std::size_t>(batch_rows * d)), copy(own.size());
  auto* buf = reinterpret_cast<unsigned char*>(own.data());
  std::mutex mu;
  for (const char* pattern : {"h/*.npy", "u/*.npy"}) {
    const Dataset ds = Dataset::open(mem, pattern);
    BatchReader r(ds, 0, batch_rows);
    r.convert_into(buf, batch_bytes);
    std::vector<std::int64_t> hits;
    std::int64_t calls = 0;
    r.on_rows_landed([&](std::int64_t, std::int64_t, std::int64_t first, std::int64_t count) {
      std::lock_guard<std::mutex> lock(mu);
      ++calls;
      for (std::int64_t i = first; i < first + count; ++i) ++hits[static_cast<std::size_t>(i)];
      std::memcpy(copy.data() + first * d, own.data() + first * d, static_cast<std::size_t>(count * d) * sizeof(float));
    });
    Batch b;
    std::int64_t seen = 0;
    while (true) {
      hits.assign(static_cast<std::size_t>(batch_rows), 0);
      calls = 0;
      if (!r.next(&b)) break;
      const std::int64_t rows = b.view.rows;
      ASSERT_EQ(b.view.dtype, DType::kF32);
      ASSERT_EQ(b.data, own.data());
      EXPECT_TRUE(b.checked);
      EXPECT_GT(calls, 1) << pattern << ": ranges of 2 MiB, rows " << rows << " at " << seen;
      EXPECT_EQ(std::count(hits.begin(), hits.begin() + rows, 1), rows) << pattern << ", batch at " << seen;
      EXPECT_EQ(std::memcmp(copy.data(), own.data(), static_cast<std::size_t>(rows * d) * sizeof(float)), 0);
      for (std::int64_t i = 0; i < rows * d; ++i) {
        const auto at = static_cast<std::size_t>(seen * d + i);
        const float want = pattern[0] == 'h' ? f16_to_f32(f32_to_f16(x[at])) : static_cast<float>(u[at]);
        ASSERT_EQ(b.data[i], want) << pattern << ": row " << seen + i / d;
      }
      seen += rows;
    }
    EXPECT_EQ(seen, n);
  }

  const std::int64_t bad_row = batch_rows + static_cast<std::int64_t>(rng() % (n - batch_rows));
  const std::int64_t bad_col = static_cast<std::int64_t>(rng() % d);
  x[static_cast<std::size_t>(bad_row * d + bad_col)] = -std::numeric_limits<float>::infinity();
  write_npy(mem, "b/bad.npy", MatrixView(x.data(), n, d, DType::kF32), NpyType::kF16);
  const Dataset bad = Dataset::open(mem, "b/*.npy");
  BatchReader rb(bad, 0, batch_rows);
  rb.convert_into(buf, batch_bytes);
  bool bad_handed = false;
  rb.on_rows_landed([&](std::int64_t b0, std::int64_t, std::int64_t first, std::int64_t count) {
    std::lock_guard<std::mutex> lock(mu);
    if (bad_row >= b0 + first && bad_row < b0 + first + count) bad_handed = true;
  });
  Batch batch;
  ASSERT_TRUE(rb.next(&batch));  // the first batch is clean
  expect_error([&] { rb.next(&batch); }, ErrorCode::kDataLoss,
               {"bad.npy: row " + std::to_string(bad_row) + " ", "(-inf) in column " + std::to_string(bad_col)});
  EXPECT_FALSE(bad_handed);

  const Dataset h = Dataset::open(mem, "h/*.npy");
  BatchReader small(h, 0, 1000);
  expect_error([&] { small.convert_into(buf, 1000 * d * 4 - 1); }, ErrorCode::kInvalidArgument,
               {"a.npy", "a batch of f32 rows needs 1536000 bytes"});
  expect_error([&] { small.convert_into(buf + 2, batch_bytes - 2); }, ErrorCode::kInvalidArgument,
               {"a.npy", "not 4-byte aligned"});
  write_npy(mem, "f/a.npy", std::span<const float>(x), shape);
  const Dataset f = Dataset::open(mem, "f/*.npy");
  BatchReader r32(f, 0, batch_rows);
  r32.convert_into(buf, batch_bytes);
  ASSERT_TRUE(r32.next(&batch));
  EXPECT_TRUE(batch.checked);
  ASSERT_EQ(batch.data, own.data());
  EXPECT_EQ(std::memcmp(batch.data, x.data(), batch_bytes), 0);
}

// convert_into a 16-bit dtype: f32 (and f16) shards come as bf16 / f16 rows in the caller's
// buffer, the values convert_from_f32 gives, every row handed on once as its range lands; a
// finite f32 value too large for f16 fails the batch naming its row, column and value (a
// non-finite one is named as such); a dtype other than f32 / f16 / bf16 is refused.
TEST(DatasetTest, BatchesConvertedTo16BitsAreRoundedAndCheckedForOverflow) {
  MEGATAX_SEEDED_RNG(rng);
  io::MemoryStorage mem;
  const std::int64_t d = 200, n = 12000 + static_cast<std::int64_t>(rng() % 3000);  // 400-byte 16-bit rows
  const std::int64_t batch_rows = 8000;
  std::vector<float> x = random_matrix(rng, n, d);
  for (std::size_t i = 0; i < x.size(); i += 97) x[i] *= 3000.f;  // wide values, below f16's largest
  const std::array<std::int64_t, 2> shape{n, d};
  write_npy(mem, "f/a.npy", std::span<const float>(x), shape);
  write_npy(mem, "h/a.npy", MatrixView(x.data(), n, d, DType::kF32), NpyType::kF16);
  std::vector<std::uint16_t> own(static_cast<std::size_t>(batch_rows * d)), want(own.size());
  auto* buf = reinterpret_cast<unsigned char*>(own.data());
  const std::size_t bytes = own.size() * 2;
  std::mutex mu;
  struct Case {
    const char* pattern;
    DType to;
  };
  for (const Case c : {Case{"f/*.npy", DType::kBF16}, Case{"f/*.npy", DType::kF16}, Case{"h/*.npy", DType::kBF16}}) {
    const Dataset ds = Dataset::open(mem, c.pattern);
    BatchReader r(ds, 0, batch_rows);
    r.convert_into(buf, bytes, c.to);
    std::vector<int> hits;
    r.on_rows_landed([&](std::int64_t, std::int64_t, std::int64_t first, std::int64_t count) {
      std::lock_guard<std::mutex> lock(mu);
      for (std::int64_t i = first; i < first + count; ++i) ++hits[static_cast<std::size_t>(i)];
    });
    Batch b;
    std::int64_t seen = 0;
    std::vector<float> f32(static_cast<std::size_t>(batch_rows * d));
    while (true) {
      hits.assign(static_cast<std::size_t>(batch_rows), 0);
      if (!r.next(&b)) break;
      const std::int64_t rows = b.view.rows;
      ASSERT_EQ(b.view.dtype, c.to);
      ASSERT_EQ(b.view.data, buf);
      EXPECT_EQ(b.data, nullptr);
      EXPECT_TRUE(b.checked);
      EXPECT_EQ(std::count(hits.begin(), hits.begin() + rows, 1), rows) << c.pattern;
      // The values as the data's f32 ones (f16 shards: rounded to f16 first), rounded to `to`.
      for (std::int64_t i = 0; i < rows * d; ++i) {
        const float v = x[static_cast<std::size_t>(seen * d + i)];
        f32[static_cast<std::size_t>(i)] = c.pattern[0] == 'h' ? f16_to_f32(f32_to_f16(v)) : v;
      }
      convert_from_f32(f32.data(), static_cast<std::size_t>(rows * d), c.to, want.data());
      ASSERT_EQ(std::memcmp(own.data(), want.data(), static_cast<std::size_t>(rows * d) * 2), 0)
          << c.pattern << " -> " << dtype_name(c.to) << ", batch at " << seen;
      seen += rows;
    }
    EXPECT_EQ(seen, n);
  }

  // transform_converted_rows: applied to each range's f32 rows before their conversion.
  {
    const Dataset f = Dataset::open(mem, "f/*.npy");
    BatchReader rt(f, 0, batch_rows);
    rt.convert_into(buf, bytes, DType::kBF16);
    std::atomic<std::int64_t> transformed{0};
    rt.transform_converted_rows([&](float* rows, std::int64_t count) {
      for (std::int64_t i = 0; i < count * d; ++i) rows[i] = rows[i] * 0.5f - 1.f;
      transformed += count;
    });
    Batch b;
    ASSERT_TRUE(rt.next(&b));
    EXPECT_EQ(transformed.load(), b.view.rows);
    std::vector<float> t(static_cast<std::size_t>(b.view.rows * d));
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = x[i] * 0.5f - 1.f;
    convert_from_f32(t.data(), t.size(), DType::kBF16, want.data());
    EXPECT_EQ(std::memcmp(own.data(), want.data(), t.size() * 2), 0);
  }

  const std::int64_t big_row = static_cast<std::int64_t>(rng() % n), big_col = static_cast<std::int64_t>(rng() % d);
  x[static_cast<std::size_t>(big_row * d + big_col)] = -70000.f;
  write_npy(mem, "o/a.npy", std::span<const float>(x), shape);
  const Dataset over = Dataset::open(mem, "o/*.npy");
  BatchReader ro(over, 0, n);
  std::vector<std::uint16_t> whole(static_cast<std::size_t>(n * d));
  ro.convert_into(reinterpret_cast<unsigned char*>(whole.data()), whole.size() * 2, DType::kF16);
  Batch batch;
  expect_error([&] { ro.next(&batch); }, ErrorCode::kDataLoss,
               {"a.npy: row " + std::to_string(big_row) + " ", "too large for f16 (-70000",
                "in column " + std::to_string(big_col)});
  BatchReader rb(over, 0, n);  // bf16 holds it
  rb.convert_into(reinterpret_cast<unsigned char*>(whole.data()), whole.size() * 2, DType::kBF16);
  ASSERT_TRUE(rb.next(&batch));
  EXPECT_EQ(bf16_to_f32(whole[static_cast<std::size_t>(big_row * d + big_col)]), -70144.f);  // RNE to 8 bits
  x[static_cast<std::size_t>(big_row * d + big_col)] = std::numeric_limits<float>::quiet_NaN();
  write_npy(mem, "n/a.npy", std::span<const float>(x), shape);
  const Dataset nan = Dataset::open(mem, "n/*.npy");
  BatchReader rn(nan, 0, n);
  rn.convert_into(reinterpret_cast<unsigned char*>(whole.data()), whole.size() * 2, DType::kF16);
  expect_error([&] { rn.next(&batch); }, ErrorCode::kDataLoss,
               {"row " + std::to_string(big_row) + " ", "(nan) in column " + std::to_string(big_col)});
  BatchReader ru(nan, 0, n);
  expect_error([&] { ru.convert_into(buf, bytes, DType::kU8); }, ErrorCode::kInvalidArgument,
               {"a.npy", "f32, f16 or bf16, not u8"});
}

}  // namespace
}  // namespace megatax
