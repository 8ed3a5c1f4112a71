// .fvecs / .bvecs: files built byte by byte here (independently of our code), read back;
// rows with inconsistent dims are reported by row.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "io/io_test_util.h"
#include "io/memory_storage.h"
#include "io/posix_storage.h"
#include "megatax/error.h"
#include "megatax/vector_format.h"

namespace megatax {
namespace {

using testing_io::Bytes;
using testing_io::expect_error;
using testing_io::ScratchDir;

TEST(VecsTest, ReadsFvecsAndBvecsInBatches) {
  MEGATAX_SEEDED_RNG(rng);
  ScratchDir dir;
  io::PosixStorage s;
  // Sometimes large enough that a read needs several scratch chunks (1 MiB).
  const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 3000);
  const std::int64_t d = 1 + static_cast<std::int64_t>(rng() % 300);
  std::uniform_real_distribution<float> uni(-5.0f, 5.0f);
  std::vector<float> f(static_cast<std::size_t>(n * d));
  for (float& v : f) v = uni(rng);
  std::vector<std::uint8_t> u(static_cast<std::size_t>(n * d));
  for (auto& v : u) v = static_cast<std::uint8_t>(rng());
  Bytes fb, bb;
  for (std::int64_t i = 0; i < n; ++i) {
    fb.i32(static_cast<std::int32_t>(d));
    bb.i32(static_cast<std::int32_t>(d));
    for (std::int64_t j = 0; j < d; ++j) {
      fb.f32(f[i * d + j]);
      bb.u8(u[i * d + j]);
    }
  }
  testing_io::write_file(dir / "x.fvecs", fb.str());
  testing_io::write_file(dir / "x.bvecs", bb.str());
  const auto rf = open_vector_file(s, dir / "x.fvecs");
  const auto rb = open_vector_file(s, dir / "x.bvecs");
  EXPECT_EQ(rf->format(), VectorFormat::kFvecs);
  EXPECT_EQ(rb->format(), VectorFormat::kBvecs);
  EXPECT_EQ(rf->dtype(), DType::kF32);
  EXPECT_EQ(rb->dtype(), DType::kU8);
  EXPECT_EQ(rf->rows(), n);
  EXPECT_EQ(rb->rows(), n);
  EXPECT_EQ(rf->dim(), d);
  EXPECT_EQ(rb->dim(), d);
  // One read of everything (several scratch chunks when large), then random batches.
  std::vector<float> all(f.size());
  rf->read(0, n, all.data());
  EXPECT_EQ(all, f);
  std::vector<float> all_b(f.size());
  rb->read_f32(0, n, all_b.data());
  for (std::size_t i = 0; i < u.size(); ++i) ASSERT_EQ(all_b[i], static_cast<float>(u[i]));
  for (std::int64_t row = 0; row < n;) {
    const std::int64_t k =
        std::min<std::int64_t>(n - row, 1 + static_cast<std::int64_t>(rng() % 50));
    std::vector<std::uint8_t> got(static_cast<std::size_t>(k * d));
    rb->read(row, k, got.data());
    ASSERT_EQ(std::memcmp(got.data(), &u[row * d], got.size()), 0) << "bvecs row " << row;
    row += k;
  }
}

TEST(VecsTest, InconsistentRowDimIsReportedByRow) {
  io::MemoryStorage s;
  // 6 rows of dim 4 f32 (20 bytes each) except row 3, whose header says 5 -- the total
  // size is still a multiple of the row size, so open() passes and read() catches it.
  Bytes b;
  for (int i = 0; i < 6; ++i) {
    b.i32(i == 3 ? 5 : 4);
    for (int j = 0; j < 4; ++j) b.f32(static_cast<float>(i * 10 + j));
  }
  s.write_atomic("bad.fvecs", b.str());
  const auto r = open_vector_file(s, "bad.fvecs");
  EXPECT_EQ(r->rows(), 6);
  std::vector<float> buf(24);
  r->read(0, 3, buf.data());  // rows 0..2 are fine
  EXPECT_EQ(buf[8], 20.0f);
  r->read(4, 2, buf.data());
  expect_error([&] { r->read(2, 3, buf.data()); }, ErrorCode::kDataLoss,
               {"file bad.fvecs: row 3 has dim 5, expected 4 (from row 0)"});
  expect_error([&] { r->read_f32(0, 6, buf.data()); }, ErrorCode::kDataLoss, {"row 3 has dim 5"});

  // A bad last row is caught on open.
  Bytes last;
  for (int i = 0; i < 3; ++i) {
    last.i32(i == 2 ? 7 : 2);
    last.u8(1).u8(2);
  }
  s.write_atomic("last.bvecs", last.str());
  expect_error([&] { open_vector_file(s, "last.bvecs"); }, ErrorCode::kDataLoss,
               {"file last.bvecs: row 2 has dim 7, expected 2 (from row 0)"});
}

TEST(VecsTest, SizesAndHeaders) {
  io::MemoryStorage s;
  s.write_atomic("empty.fvecs", "");
  const auto r = open_vector_file(s, "empty.fvecs");
  EXPECT_EQ(r->rows(), 0);
  EXPECT_EQ(r->dim(), 0);
  r->read(0, 0, nullptr);

  // 2 rows of dim 3 f32 = 2 x 16 bytes, truncated by 2.
  Bytes b;
  for (int i = 0; i < 2; ++i) b.i32(3).f32(1).f32(2).f32(3);
  s.write_atomic("trunc.fvecs", b.str().substr(0, 30));
  expect_error([&] { open_vector_file(s, "trunc.fvecs"); }, ErrorCode::kDataLoss,
               {"file trunc.fvecs: expected a multiple of 16 bytes (rows of 4 + 3 x 4 bytes, "
                "dim from row 0), found 30"});
  s.write_atomic("neg.fvecs", Bytes().i32(-3).str());
  expect_error([&] { open_vector_file(s, "neg.fvecs"); }, ErrorCode::kDataLoss,
               {"file neg.fvecs: row 0 has dim -3; expected >= 1"});
  s.write_atomic("tiny.bvecs", "ab");
  expect_error([&] { open_vector_file(s, "tiny.bvecs"); }, ErrorCode::kDataLoss,
               {"file tiny.bvecs: expected at least 4 bytes", "found 2"});
  s.write_atomic("big.fvecs", Bytes().i32(0x7FFFFFFF).str());
  expect_error([&] { open_vector_file(s, "big.fvecs"); }, ErrorCode::kDataLoss,
               {"expected a multiple of 8589934592 bytes"});
}

}  // namespace
}  // namespace megatax
