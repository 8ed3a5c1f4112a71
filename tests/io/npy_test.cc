// .npy reader and writer, checked against numpy (the independent reference): numpy writes
// files (versions 1.0, 2.0, 3.0; f32, f16, u8) that we read; we write files that numpy
// loads and compares. Plus hand-made corrupt and unsupported files with their messages.
#include "io/npy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "io/fault_injection_storage.h"
#include "io/format.h"
#include "io/io_test_util.h"
#include "io/memory_storage.h"
#include "io/posix_storage.h"
#include "megatax/dtype.h"
#include "megatax/error.h"
#include "megatax/storage.h"
#include "megatax/vector_format.h"

namespace megatax {
namespace {

using testing_io::expect_error;
using testing_io::run_python;
using testing_io::ScratchDir;

// Random elements of `dtype` as raw bytes: f32 in [-1000, 1000) with some tiny and large
// magnitudes; f16 any finite bit pattern (subnormals included); u8 any byte.
std::string random_bytes(std::mt19937_64& rng, DType dtype, std::size_t n) {
  std::string out(n * dtype_size(dtype), '\0');
  std::uniform_real_distribution<float> uni(-1000.0f, 1000.0f);
  for (std::size_t i = 0; i < n; ++i) {
    if (dtype == DType::kF32) {
      float v = uni(rng);
      if (i % 11 == 3) v *= 1e-30f;
      if (i % 13 == 5) v *= 1e30f;
      std::memcpy(&out[i * 4], &v, 4);
    } else if (dtype == DType::kF16) {
      std::uint16_t h;
      do {
        h = static_cast<std::uint16_t>(rng());
      } while ((h & 0x7C00u) == 0x7C00u);  // no inf/NaN
      std::memcpy(&out[i * 2], &h, 2);
    } else {
      out[i] = static_cast<char>(rng());
    }
  }
  return out;
}

// Reads the whole file through random-size batches with read() and read_f32() and
// compares with the raw bytes it should hold.
void expect_reads_match(const VectorReader& r, const std::string& raw, std::mt19937_64& rng) {
  const std::int64_t n = r.rows(), d = r.dim();
  const std::size_t es = dtype_size(r.dtype());
  ASSERT_EQ(raw.size(), static_cast<std::size_t>(n * d) * es);
  std::vector<float> want_f32(static_cast<std::size_t>(n * d));
  if (!want_f32.empty()) convert_to_f32(r.dtype(), raw.data(), want_f32.size(), want_f32.data());
  std::int64_t row = 0;
  while (row < n) {
    const std::int64_t k =
        std::min<std::int64_t>(n - row, 1 + static_cast<std::int64_t>(rng() % 97));
    std::string got(static_cast<std::size_t>(k * d) * es, '\0');
    r.read(row, k, got.data());
    ASSERT_EQ(std::memcmp(got.data(), raw.data() + row * d * es, got.size()), 0)
        << r.path() << " rows [" << row << ", " << row + k << ")";
    std::vector<float> f(static_cast<std::size_t>(k * d));
    r.read_f32(row, k, f.data());
    ASSERT_EQ(std::memcmp(f.data(), want_f32.data() + row * d, f.size() * 4), 0)
        << r.path() << " read_f32 rows [" << row << ", " << row + k << ")";
    row += k;
  }
}

TEST(NpyReadTest, FilesWrittenByNumpyAllVersionsAndDtypes) {
  MEGATAX_SEEDED_RNG(rng);
  ScratchDir dir;
  struct Case {
    std::string name;
    DType dtype;
    const char* descr;
    std::int64_t rows, dim;
    int version;
    std::string raw;
  };
  std::vector<Case> cases;
  const std::pair<DType, const char*> dtypes[] = {
      {DType::kF32, "<f4"}, {DType::kF16, "<f2"}, {DType::kU8, "|u1"}};
  int id = 0;
  for (const auto& [dtype, descr] : dtypes) {
    for (int version = 1; version <= 3; ++version) {
      const std::pair<std::int64_t, std::int64_t> shapes[] = {
          {0, 7},
          {1, 1},
          {1 + static_cast<std::int64_t>(rng() % 300), 1 + static_cast<std::int64_t>(rng() % 200)},
      };
      for (const auto& [n, d] : shapes) {
        Case c{std::string(1, 'c'), dtype, descr, n, d, version, ""};
        c.name += std::to_string(id++);
        c.raw = random_bytes(rng, dtype, static_cast<std::size_t>(n * d));
        testing_io::write_file(dir / (c.name + ".raw"), c.raw);
        cases.push_back(std::move(c));
      }
    }
  }
  std::string script =
      "from numpy.lib import format as fmt\n"
      "cases = [\n";
  for (const Case& c : cases) {
    script += "  ('" + c.name + "', '" + c.descr + "', " + std::to_string(c.rows) + ", " +
              std::to_string(c.dim) + ", (" + std::to_string(c.version) + ", 0)),\n";
  }
  script +=
      "]\n"
      "for name, descr, n, d, ver in cases:\n"
      "    x = np.fromfile(name + '.raw', dtype=descr).reshape(n, d)\n"
      "    with open(name + '.npy', 'wb') as f:\n"
      "        fmt.write_array(f, x, version=ver)\n";
  ASSERT_TRUE(run_python(dir.path(), script));

  io::PosixStorage storage;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name + " " + c.descr + " v" + std::to_string(c.version) + " shape (" +
                 std::to_string(c.rows) + ", " + std::to_string(c.dim) + ")");
    const std::string path = dir / (c.name + ".npy");
    const io::NpyHeader h = io::read_npy_header(storage, path, storage.size(path));
    EXPECT_EQ(h.major, c.version);
    const auto r = open_vector_file(storage, path);
    EXPECT_EQ(r->format(), VectorFormat::kNpy);
    EXPECT_EQ(r->rows(), c.rows);
    EXPECT_EQ(r->dim(), c.dim);
    EXPECT_EQ(r->dtype(), c.dtype);
    expect_reads_match(*r, c.raw, rng);
    // The rows in place (the file's kept mapping): numpy's bytes, header skipped.
    const VectorReader::InPlaceRows in_place = r->rows_in_place();
    ASSERT_NE(in_place.data, nullptr);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(in_place.data), c.raw.size()), c.raw);
  }
}

// rows_in_place: none from a storage that cannot map (in memory), none once the file opened
// was replaced by one of another size; the rows held stay readable after the replacement.
TEST(NpyReadTest, RowsInPlaceOnlyForTheFileOpenedAndMappable) {
  MEGATAX_SEEDED_RNG(rng);
  ScratchDir dir;
  io::PosixStorage s;
  std::vector<float> x(37 * 5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (float& v : x) v = normal(rng);
  const std::int64_t shape[] = {37, 5};
  const std::string npy = io::make_npy_header("<f4", shape) +
                          std::string(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float));
  const std::string path = dir / "x.npy";
  s.write_atomic(path, npy);
  const auto r = open_vector_file(s, path);
  const VectorReader::InPlaceRows held = r->rows_in_place();
  ASSERT_NE(held.data, nullptr);
  EXPECT_EQ(std::memcmp(held.data, x.data(), x.size() * sizeof(float)), 0);
  const std::int64_t longer[] = {38, 5};
  s.write_atomic(path, io::make_npy_header("<f4", longer) + std::string(38 * 5 * sizeof(float), '\1'));
  EXPECT_EQ(r->rows_in_place().data, nullptr);  // not the file opened: read() it instead
  EXPECT_EQ(std::memcmp(held.data, x.data(), x.size() * sizeof(float)), 0);
  io::MemoryStorage mem;
  mem.write_atomic("m.npy", npy);
  EXPECT_EQ(open_vector_file(mem, "m.npy")->rows_in_place().data, nullptr);
}

// Concurrent read_f32 calls on one reader return the same as sequential ones.
TEST(NpyReadTest, ConcurrentReadsOfOneReader) {
  MEGATAX_SEEDED_RNG(rng);
  io::MemoryStorage storage;
  const std::int64_t n = 2000, d = 33;
  const std::string raw = random_bytes(rng, DType::kF16, n * d);
  const std::array<std::int64_t, 2> shape{n, d};
  write_npy(storage, "x.npy", raw.data(), NpyType::kF16, shape);
  const auto r = open_vector_file(storage, "x.npy");
  std::vector<float> want(n * d);
  convert_to_f32(DType::kF16, raw.data(), want.size(), want.data());
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<float> got(n * d);
      for (std::int64_t row = t; row < n; row += 128) {
        const std::int64_t k = std::min<std::int64_t>(100, n - row);
        r->read_f32(row, k, got.data() + row * d);
      }
      bool same = true;
      for (std::int64_t row = t; row < n; row += 128) {
        const std::int64_t k = std::min<std::int64_t>(100, n - row);
        same = same && std::memcmp(got.data() + row * d, want.data() + row * d, k * d * 4) == 0;
      }
      ok[t] = same ? 1 : 0;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok, std::vector<int>(4, 1));
}

TEST(NpyReadTest, UnsupportedFilesFromNumpyHaveClearErrors) {
  ScratchDir dir;
  ASSERT_TRUE(run_python(dir.path(), R"(
np.save('fortran.npy', np.asfortranarray(np.arange(12, dtype='<f4').reshape(3, 4)))
np.save('rank3.npy', np.zeros((2, 3, 4), dtype='<f4'))
np.save('rank1.npy', np.zeros(5, dtype='<f4'))
np.save('f8.npy', np.zeros((2, 3), dtype='<f8'))
np.save('bigendian.npy', np.zeros((2, 3), dtype='>f4'))
np.save('i4.npy', np.zeros((2, 3), dtype='<i4'))
np.save('struct.npy', np.zeros(3, dtype=[('a', '<f4'), ('b', '<i4')]))
np.save('dim0.npy', np.zeros((4, 0), dtype='<f4'))
np.save('good.npy', np.arange(80, dtype='<f4').reshape(10, 8))
)"));
  io::PosixStorage s;
  auto open = [&](const std::string& name) {
    return [&s, &dir, name] { open_vector_file(s, dir / name); };
  };
  expect_error(open("fortran.npy"), ErrorCode::kInvalidArgument,
               {dir / "fortran.npy", "Fortran", "expected C order"});
  expect_error(open("rank3.npy"), ErrorCode::kInvalidArgument,
               {dir / "rank3.npy", "shape (2, 3, 4) has 3 dimensions; expected 2 (rows, dim)"});
  expect_error(open("rank1.npy"), ErrorCode::kInvalidArgument,
               {"shape (5,) has 1 dimension; expected 2"});
  expect_error(open("f8.npy"), ErrorCode::kInvalidArgument,
               {dir / "f8.npy",
                "dtype '<f8' is not supported; expected '<f4' (float32), "
                "'<f2' (float16) or '|u1' (uint8)"});
  expect_error(open("bigendian.npy"), ErrorCode::kInvalidArgument, {"dtype '>f4'"});
  expect_error(open("i4.npy"), ErrorCode::kInvalidArgument, {"dtype '<i4'"});
  expect_error(open("struct.npy"), ErrorCode::kInvalidArgument, {"structured"});
  expect_error(open("dim0.npy"), ErrorCode::kInvalidArgument, {"dim 0"});

  // Truncated and padded copies of a good file: 128 header + 10 x 8 x 4 = 448 bytes.
  const std::string good = testing_io::read_file(dir / "good.npy");
  ASSERT_EQ(good.size(), 448u);
  testing_io::write_file(dir / "trunc.npy", good.substr(0, 443));
  expect_error(open("trunc.npy"), ErrorCode::kDataLoss,
               {"file " + dir / "trunc.npy", "expected 448 bytes, found 443",
                "10 rows x 8 x 4 bytes", "truncated"});
  testing_io::write_file(dir / "long.npy", good + "abcd");
  expect_error(open("long.npy"), ErrorCode::kDataLoss,
               {"expected 448 bytes, found 452", "trailing bytes"});
  std::string bad_magic = good;
  bad_magic[1] = 'M';
  testing_io::write_file(dir / "magic.npy", bad_magic);
  expect_error(open("magic.npy"), ErrorCode::kDataLoss,
               {dir / "magic.npy", "not an .npy file (bad magic"});
  testing_io::write_file(dir / "headeronly.npy", good.substr(0, 60));
  expect_error(open("headeronly.npy"), ErrorCode::kDataLoss,
               {dir / "headeronly.npy", "expected at least 128 bytes (the .npy header), found 60"});
  testing_io::write_file(dir / "tiny.npy", good.substr(0, 8));
  expect_error(open("tiny.npy"), ErrorCode::kDataLoss, {"truncated .npy header (8 bytes)"});
  std::string v4 = good;
  v4[6] = 4;
  testing_io::write_file(dir / "v4.npy", v4);
  expect_error(open("v4.npy"), ErrorCode::kDataLoss,
               {"unsupported .npy format version 4.0; expected 1.0, 2.0 or 3.0"});
  // The file works when intact.
  EXPECT_EQ(open_vector_file(s, dir / "good.npy")->rows(), 10);
}

// Hand-made headers (no numpy): what the parser accepts and refuses.
std::string npy_v1(const std::string& dict, const std::string& data = "") {
  testing_io::Bytes b;
  b.raw(std::string("\x93NUMPY\x01\x00", 8))
      .u16(static_cast<std::uint16_t>(dict.size()))
      .raw(dict)
      .raw(data);
  return b.str();
}

TEST(NpyReadTest, HeaderParserAcceptsNumpyVariantsAndRefusesGarbage) {
  io::MemoryStorage s;
  auto put = [&](const std::string& name, const std::string& bytes) {
    s.write_atomic(name, bytes);
    return name;
  };
  const std::string two_u8(6, '\x07');
  // '<u1', double quotes, no trailing comma, extra key, extra spaces, Python-2 'L'.
  auto r = open_vector_file(
      s, put("a.npy", npy_v1("{\"descr\": \"<u1\", \"shape\": (2L, 3L), \"fortran_order\": "
                             "False, 'extra': [1, (2, None)]}   \n",
                             two_u8)));
  EXPECT_EQ(r->dtype(), DType::kU8);
  EXPECT_EQ(r->rows(), 2);
  EXPECT_EQ(r->dim(), 3);

  struct Bad {
    std::string dict;
    std::string expect;
  };
  const Bad bad[] = {
      {"", "expected '{'"},
      {"{'descr': '<f4', 'fortran_order': False}\n", "the key 'shape' is missing"},
      {"{'descr': '<f4', 'shape': (1, 1)}\n", "the key 'fortran_order' is missing"},
      {"{'fortran_order': False, 'shape': (1, 1)}\n", "the key 'descr' is missing"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (1, 1)}\n", "not True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, -1)}\n", "non-negative"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': 5}\n", "'shape' is an integer"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 1)}\n",
       "too large for 64 bits"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), 'shape': (1, 1)}\n",
       "duplicate key 'shape'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1)} x\n",
       "unexpected text after the closing '}'"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (1, 1)}\n", "expected ',' or '}'"},
      {"{'descr' '<f4', 'fortran_order': False, 'shape': (1, 1)}\n", "expected ':'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1)", "expected ',' or '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': " + std::string(40, '(') + "1" +
           std::string(40, ')') + "}\n",
       "nested too deeply"},
      {"{'descr': '<f4', 'fortran_order': Falsey, 'shape': (1, 1)}\n", "unexpected character"},
      {"{1: 2}\n", "a dict key is not a string"},
  };
  int i = 0;
  for (const Bad& b : bad) {
    const std::string name = "bad" + std::to_string(i++) + ".npy";
    SCOPED_TRACE(b.dict);
    expect_error([&] { open_vector_file(s, put(name, npy_v1(b.dict, std::string(4, '\0')))); },
                 ErrorCode::kDataLoss, {"file " + name, "bad .npy header", b.expect});
  }
  // A header length past the limit (v2: u32 length).
  testing_io::Bytes huge;
  huge.raw(std::string("\x93NUMPY\x02\x00", 8)).u32(0x7FFFFFFF).raw(std::string(100, ' '));
  expect_error([&] { open_vector_file(s, put("huge.npy", huge.str())); }, ErrorCode::kDataLoss,
               {"header length 2147483647 exceeds the limit"});
  // Shape whose byte size overflows 64 bits.
  expect_error(
      [&] {
        open_vector_file(s, put("ovf.npy", npy_v1("{'descr': '<f4', 'fortran_order': False, "
                                                  "'shape': (9223372036854775807, 1000)}\n")));
      },
      ErrorCode::kDataLoss, {"too large for a 64-bit file size"});
}

TEST(NpyReadTest, ReadsOutOfRangeAreRefused) {
  io::MemoryStorage s;
  const std::vector<float> x(12, 1.0f);
  const std::array<std::int64_t, 2> shape{4, 3};
  write_npy(s, "m.npy", std::span<const float>(x), shape);
  const auto r = open_vector_file(s, "m.npy");
  std::vector<float> buf(12);
  expect_error([&] { r->read_f32(3, 2, buf.data()); }, ErrorCode::kOutOfRange,
               {"file m.npy", "cannot read rows [3, 3 + 2)", "it has 4 rows"});
  expect_error([&] { r->read(-1, 1, buf.data()); }, ErrorCode::kOutOfRange, {"m.npy"});
  expect_error([&] { r->read(0, 1, nullptr); }, ErrorCode::kInvalidArgument, {"null"});
  r->read(4, 0, nullptr);  // empty read at the end: fine
  expect_error([&] { open_vector_file(s, "m.txt"); }, ErrorCode::kInvalidArgument,
               {"file m.txt", "unknown vector file extension '.txt'",
                "expected .npy, .fbin, .u8bin, .fvecs or .bvecs"});
}

// ---- Writer: numpy loads what we write ---------------------------------------------

TEST(NpyWriteTest, NumpyLoadsWhatWeWrite) {
  MEGATAX_SEEDED_RNG(rng);
  ScratchDir dir;
  io::PosixStorage s;
  const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 500);
  const std::int64_t d = 1 + static_cast<std::int64_t>(rng() % 130);
  std::string checks;  // python lines: (name, descr, shape, expected-raw-file or expression)
  auto add_check = [&](const std::string& name, const std::string& descr, const std::string& shape,
                       const std::string& raw_file, const std::string& raw_descr) {
    checks += "  ('" + name + "', '" + descr + "', " + shape + ", '" + raw_file + "', '" +
              raw_descr + "'),\n";
  };
  const std::string shape2 = "(" + std::to_string(n) + ", " + std::to_string(d) + ")";

  // f32 2-D through the typed span overload.
  const std::string f32 = random_bytes(rng, DType::kF32, n * d);
  testing_io::write_file(dir / "f32.raw", f32);
  const std::array<std::int64_t, 2> shape{n, d};
  write_npy(s, dir / "f32.npy",
            std::span<const float>(reinterpret_cast<const float*>(f32.data()), n * d), shape);
  add_check("f32.npy", "<f4", shape2, "f32.raw", "<f4");

  // f16 2-D through a MatrixView in its own dtype.
  const std::string f16 = random_bytes(rng, DType::kF16, n * d);
  testing_io::write_file(dir / "f16.raw", f16);
  write_npy(s, dir / "f16.npy", MatrixView(f16.data(), n, d, DType::kF16));
  add_check("f16.npy", "<f2", shape2, "f16.raw", "<f2");

  // f32 view converted to f16 on the way: numpy's own float16 rounding is the reference.
  write_npy(s, dir / "f32_as_f16.npy", MatrixView(f32.data(), n, d, DType::kF32), NpyType::kF16);
  add_check("f32_as_f16.npy", "<f2", shape2, "f32.raw", "<f4");

  // A strided view (every other row of a 2n x d buffer viewed with stride 2d... here the
  // first d of 2d columns): written row by row.
  std::vector<float> wide(static_cast<std::size_t>(n * 2 * d));
  for (std::int64_t i = 0; i < n; ++i) {
    std::memcpy(&wide[i * 2 * d], f32.data() + i * d * 4, d * 4);
    for (std::int64_t j = d; j < 2 * d; ++j) wide[i * 2 * d + j] = -7.0f;
  }
  write_npy(s, dir / "strided.npy", MatrixView(wide.data(), n, d, DType::kF32, 2 * d));
  add_check("strided.npy", "<f4", shape2, "f32.raw", "<f4");

  // u8 2-D.
  const std::string u8 = random_bytes(rng, DType::kU8, n * d);
  testing_io::write_file(dir / "u8.raw", u8);
  write_npy(s, dir / "u8.npy", MatrixView(u8.data(), n, d, DType::kU8));
  add_check("u8.npy", "|u1", shape2, "u8.raw", "|u1");

  // int32 1-D, int64 1-D and 2-D, empty arrays.
  std::vector<std::int32_t> i32(static_cast<std::size_t>(n));
  for (auto& v : i32) v = static_cast<std::int32_t>(rng());
  testing_io::write_file(dir / "i32.raw", i32.data(), i32.size() * 4);
  const std::array<std::int64_t, 1> shape1{n};
  write_npy(s, dir / "i32.npy", std::span<const std::int32_t>(i32), shape1);
  add_check("i32.npy", "<i4", "(" + std::to_string(n) + ",)", "i32.raw", "<i4");

  std::vector<std::int64_t> i64(static_cast<std::size_t>(2 * n));
  for (auto& v : i64) v = static_cast<std::int64_t>(rng());
  testing_io::write_file(dir / "i64.raw", i64.data(), i64.size() * 8);
  const std::array<std::int64_t, 1> shape1b{2 * n};
  write_npy(s, dir / "i64_1d.npy", std::span<const std::int64_t>(i64), shape1b);
  add_check("i64_1d.npy", "<i8", "(" + std::to_string(2 * n) + ",)", "i64.raw", "<i8");
  const std::array<std::int64_t, 2> shape_n2{n, 2};
  write_npy(s, dir / "i64_2d.npy", std::span<const std::int64_t>(i64), shape_n2);
  add_check("i64_2d.npy", "<i8", "(" + std::to_string(n) + ", 2)", "i64.raw", "<i8");

  testing_io::write_file(dir / "empty.raw", "");
  const std::array<std::int64_t, 2> shape_empty{0, d};
  write_npy(s, dir / "empty.npy", nullptr, NpyType::kF32, shape_empty);
  add_check("empty.npy", "<f4", "(0, " + std::to_string(d) + ")", "empty.raw", "<f4");
  const std::array<std::int64_t, 1> shape_empty1{0};
  write_npy(s, dir / "empty1.npy", std::span<const std::int64_t>(), shape_empty1);
  add_check("empty1.npy", "<i8", "(0,)", "empty.raw", "<i8");

  ASSERT_TRUE(run_python(dir.path(), "checks = [\n" + checks + R"(]
for name, descr, shape, raw, raw_descr in checks:
    a = np.load(name, allow_pickle=False)
    assert a.dtype == np.dtype(descr), (name, a.dtype, descr)
    assert a.shape == shape, (name, a.shape, shape)
    assert a.flags.c_contiguous, name
    want = np.fromfile(raw, dtype=raw_descr).astype(descr)
    assert a.tobytes() == want.tobytes(), (name, 'values differ')
    with open(name, 'rb') as f:
        major = f.read(8)[6]
        assert major == 1, (name, 'version', major)
    data_offset = len(open(name, 'rb').read()) - a.nbytes
    assert data_offset % 64 == 0, (name, 'unaligned data offset', data_offset)
print('ok', len(checks))
)"));

  // And our own reader reads what our writer wrote.
  const auto r = open_vector_file(s, dir / "f16.npy");
  expect_reads_match(*r, f16, rng);
}

TEST(NpyWriteTest, BadArgumentsAndFailedWrites) {
  io::MemoryStorage mem;
  const std::vector<float> x(6, 0.5f);
  const std::array<std::int64_t, 2> shape23{2, 3};
  const std::array<std::int64_t, 2> shape33{3, 3};
  const std::array<std::int64_t, 3> shape3d{1, 2, 3};
  const std::array<std::int64_t, 2> negative{-1, 3};
  expect_error([&] { write_npy(mem, "a.npy", std::span<const float>(x), shape33); },
               ErrorCode::kInvalidArgument,
               {"a.npy", "shape (3, 3) holds 9 elements but data has 6"});
  expect_error([&] { write_npy(mem, "a.npy", x.data(), NpyType::kF32, shape3d); },
               ErrorCode::kInvalidArgument, {"3 dimensions; expected 1 or 2"});
  expect_error([&] { write_npy(mem, "a.npy", x.data(), NpyType::kF32, negative); },
               ErrorCode::kInvalidArgument, {"negative extent -1"});
  expect_error([&] { write_npy(mem, "a.npy", nullptr, NpyType::kF32, shape23); },
               ErrorCode::kInvalidArgument, {"null data"});
  const std::vector<std::uint16_t> bf(6, 0);
  expect_error([&] { write_npy(mem, "a.npy", MatrixView(bf.data(), 2, 3, DType::kBF16)); },
               ErrorCode::kInvalidArgument, {"no bf16"});
  expect_error(
      [&] { write_npy(mem, "a.npy", MatrixView(x.data(), 2, 3, DType::kF32), NpyType::kI32); },
      ErrorCode::kInvalidArgument, {"f32, f16 or u8"});
  EXPECT_EQ(mem.file_count(), 0u);

  // bf16 converted to f32 is fine.
  write_npy(mem, "bf.npy", MatrixView(bf.data(), 2, 3, DType::kBF16), NpyType::kF32);
  EXPECT_EQ(open_vector_file(mem, "bf.npy")->dtype(), DType::kF32);

  // A failing storage: the error comes through, nothing is half-written.
  io::FaultInjectionStorage faulty(mem);
  write_npy(faulty, "c.npy", std::span<const float>(x), shape23);
  const std::string before = read_all(mem, "c.npy");
  faulty.fail_write(1, io::WriteFault::kBeforeWrite, ErrorCode::kResourceExhausted);
  const std::vector<float> y(6, 2.0f);
  expect_error([&] { write_npy(faulty, "c.npy", std::span<const float>(y), shape23); },
               ErrorCode::kResourceExhausted, {"injected fault", "c.npy"});
  EXPECT_EQ(read_all(mem, "c.npy"), before);
}

TEST(NpyWriteTest, HeaderLayout) {
  const std::array<std::int64_t, 2> shape{3, 4};
  const std::string h = io::make_npy_header("<f4", shape);
  EXPECT_EQ(h.size() % io::kNpyAlign, 0u);
  EXPECT_EQ(h.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_EQ(h.back(), '\n');
  EXPECT_NE(h.find("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"),
            std::string::npos);
  // A dict too long for a 16-bit length switches to version 2.0.
  const std::string h2 = io::make_npy_header(std::string(70000, 'x'), shape);
  EXPECT_EQ(h2[6], 2);
  EXPECT_EQ(h2.size() % io::kNpyAlign, 0u);
  EXPECT_EQ(io::load_u32_le(reinterpret_cast<const unsigned char*>(h2.data()) + 8),
            h2.size() - io::kNpyPrefixBytesV2);
}

}  // namespace
}  // namespace megatax
