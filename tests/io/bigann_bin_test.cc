// .fbin / .u8bin: files built byte by byte here (independently of our code), read back.
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

TEST(BigAnnBinTest, ReadsFbinAndU8binInBatches) {
  MEGATAX_SEEDED_RNG(rng);
  ScratchDir dir;
  io::PosixStorage s;
  const std::uint32_t n = 1 + static_cast<std::uint32_t>(rng() % 1000);
  const std::uint32_t d = 1 + static_cast<std::uint32_t>(rng() % 200);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> f(static_cast<std::size_t>(n) * d);
  for (float& v : f) v = normal(rng);
  std::vector<std::uint8_t> u(static_cast<std::size_t>(n) * d);
  for (auto& v : u) v = static_cast<std::uint8_t>(rng());
  Bytes fb, ub;
  fb.u32(n).u32(d);
  for (float v : f) fb.f32(v);
  ub.u32(n).u32(d);
  for (auto v : u) ub.u8(v);
  testing_io::write_file(dir / "base.fbin", fb.str());
  testing_io::write_file(dir / "base.u8bin", ub.str());

  const auto rf = open_vector_file(s, dir / "base.fbin");
  EXPECT_EQ(rf->format(), VectorFormat::kFbin);
  EXPECT_EQ(rf->dtype(), DType::kF32);
  EXPECT_EQ(rf->rows(), n);
  EXPECT_EQ(rf->dim(), d);
  const auto ru = open_vector_file(s, dir / "base.u8bin");
  EXPECT_EQ(ru->format(), VectorFormat::kU8bin);
  EXPECT_EQ(ru->dtype(), DType::kU8);
  EXPECT_EQ(ru->rows(), n);
  EXPECT_EQ(ru->dim(), d);

  for (std::int64_t row = 0; row < n;) {
    const std::int64_t k =
        std::min<std::int64_t>(n - row, 1 + static_cast<std::int64_t>(rng() % 64));
    std::vector<float> got(static_cast<std::size_t>(k) * d);
    rf->read(row, k, got.data());
    ASSERT_EQ(std::memcmp(got.data(), &f[row * d], got.size() * 4), 0) << "fbin row " << row;
    std::vector<std::uint8_t> got_u(static_cast<std::size_t>(k) * d);
    ru->read(row, k, got_u.data());
    ASSERT_EQ(std::memcmp(got_u.data(), &u[row * d], got_u.size()), 0) << "u8bin row " << row;
    ru->read_f32(row, k, got.data());
    for (std::size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], static_cast<float>(u[row * d + i])) << "u8bin read_f32 row " << row;
    }
    row += k;
  }
  // The rows in place (the files' kept mappings), header skipped.
  const VectorReader::InPlaceRows fp = rf->rows_in_place(), up = ru->rows_in_place();
  ASSERT_NE(fp.data, nullptr);
  ASSERT_NE(up.data, nullptr);
  EXPECT_EQ(std::memcmp(fp.data, f.data(), f.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(up.data, u.data(), u.size()), 0);
}

TEST(BigAnnBinTest, EmptyFileAndBadHeaders) {
  io::MemoryStorage s;
  s.write_atomic("empty.fbin", Bytes().u32(0).u32(96).str());
  const auto r = open_vector_file(s, "empty.fbin");
  EXPECT_EQ(r->rows(), 0);
  EXPECT_EQ(r->dim(), 96);

  // 3 rows x 4 dims of f32 = 8 + 48 bytes; truncated by 5.
  Bytes good;
  good.u32(3).u32(4);
  for (int i = 0; i < 12; ++i) good.f32(static_cast<float>(i));
  s.write_atomic("trunc.fbin", good.str().substr(0, 51));
  expect_error([&] { open_vector_file(s, "trunc.fbin"); }, ErrorCode::kDataLoss,
               {"file trunc.fbin: expected 56 bytes, found 51", "8 header + 3 rows x 4 x 4 bytes",
                "truncated"});
  s.write_atomic("long.u8bin", Bytes().u32(2).u32(3).raw("abcdefg").str());
  expect_error([&] { open_vector_file(s, "long.u8bin"); }, ErrorCode::kDataLoss,
               {"file long.u8bin: expected 14 bytes, found 15", "trailing bytes"});
  s.write_atomic("dim0.fbin", Bytes().u32(5).u32(0).str());
  expect_error([&] { open_vector_file(s, "dim0.fbin"); }, ErrorCode::kDataLoss,
               {"file dim0.fbin: header says dim 0"});
  s.write_atomic("short.fbin", "abc");
  expect_error([&] { open_vector_file(s, "short.fbin"); }, ErrorCode::kDataLoss,
               {"file short.fbin: expected at least 8 bytes", "found 3"});
  // Headers claiming absurd sizes: a clean error, no overflow.
  s.write_atomic("huge.fbin", Bytes().u32(0xFFFFFFFFu).u32(0x7FFFFFFFu).str());
  expect_error([&] { open_vector_file(s, "huge.fbin"); }, ErrorCode::kDataLoss,
               {"file huge.fbin: header says 4294967295 rows x 2147483647 dims, more than "
                "2^64 bytes"});
  s.write_atomic("huge.u8bin", Bytes().u32(0xFFFFFFFFu).u32(0x7FFFFFFFu).str());
  expect_error([&] { open_vector_file(s, "huge.u8bin"); }, ErrorCode::kDataLoss,
               {"expected 9223372030412324873 bytes, found 8"});
  s.write_atomic("bigdim.fbin", Bytes().u32(1).u32(0x80000000u).str());
  expect_error([&] { open_vector_file(s, "bigdim.fbin"); }, ErrorCode::kDataLoss,
               {"header says dim 2147483648; expected 1 to 2147483647"});
}

}  // namespace
}  // namespace megatax
