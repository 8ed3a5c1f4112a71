// Tests of core/json.h:
//  - round trips: random nested documents (strings with every kind of code point, int64 and
//    double extremes) through dump -> parse, compact and pretty;
//  - doubles bit-exact over random bit patterns; int64 extremes exact;
//  - an independent reference, Python's json module: Python writes documents that we parse,
//    and loads what we dump (strict, type-aware comparison on its side, then re-dumps it for
//    us to parse back). python3 must be installed: without it these tests fail;
//  - error cases with their exact messages (document:line:column), nesting limits;
//  - the Value and View accessors and their errors.
#include "core/json.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "megatax/error.h"

namespace megatax::json {
namespace {

using namespace std::string_literals;

constexpr std::int64_t kInt64Min = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();

// ---- helpers ---------------------------------------------------------------------------

// Runs fn, which must throw Error(code); returns its message ("" and a failure otherwise).
std::string error_message(const std::function<void()>& fn, ErrorCode code) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << error_code_name(e.code()) << ": " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no megatax::Error thrown";
  return "";
}

// The message of parse(text, "t"), which must fail with kDataLoss.
std::string parse_error(std::string_view text) {
  return error_message([&] { (void)parse(text, "t"); }, ErrorCode::kDataLoss);
}

// Test-local UTF-8 encoder (independent of the library's).
std::string utf8(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

double random_finite_double(std::mt19937_64& rng) {
  while (true) {
    const double d = std::bit_cast<double>(rng());
    if (std::isfinite(d)) return d;
  }
}

class RandomDocuments {
 public:
  explicit RandomDocuments(std::uint64_t seed) : rng_(seed) {}

  Value value(int depth) {
    const int kind = static_cast<int>(rng_() % (depth >= 5 ? 6 : 8));
    switch (kind) {
      case 0: return Value();
      case 1: return Value(rng_() % 2 == 0);
      case 2: return Value(integer());
      case 3: return Value(floating());
      case 4:
      case 5: return Value(string());
      case 6: {
        Value array = Value::array();
        const std::size_t n = rng_() % 6;
        for (std::size_t i = 0; i < n; ++i) array.push_back(value(depth + 1));
        return array;
      }
      default: {
        Value object = Value::object();
        const std::size_t n = rng_() % 6;
        for (std::size_t i = 0; i < n; ++i) {
          object.set(string(), value(depth + 1));  // a repeated key replaces: keys stay unique
        }
        return object;
      }
    }
  }

  std::int64_t integer() {
    switch (rng_() % 5) {
      case 0: return kInt64Min + static_cast<std::int64_t>(rng_() % 3);
      case 1: return kInt64Max - static_cast<std::int64_t>(rng_() % 3);
      case 2: return static_cast<std::int64_t>(rng_() % 201) - 100;
      case 3: return static_cast<std::int64_t>(rng_() >> (rng_() % 64)) * (rng_() % 2 ? 1 : -1);
      default: return static_cast<std::int64_t>(rng_());
    }
  }

  double floating() {
    static constexpr double kSpecial[] = {0.0,
                                          -0.0,
                                          1.0,
                                          100.0,
                                          0.1,
                                          1e21,
                                          1e-7,
                                          std::numeric_limits<double>::denorm_min(),
                                          std::numeric_limits<double>::min(),
                                          std::numeric_limits<double>::max(),
                                          -std::numeric_limits<double>::max(),
                                          9007199254740993.0};
    if (rng_() % 4 == 0) return kSpecial[rng_() % std::size(kSpecial)];
    return random_finite_double(rng_);
  }

  std::string string() {
    std::string s;
    const std::size_t n = rng_() % 10;
    for (std::size_t i = 0; i < n; ++i) {
      switch (rng_() % 7) {
        case 0: s += static_cast<char>(rng_() % 0x20); break;  // control characters, NUL too
        case 1: s += "\"\\/"[rng_() % 3]; break;
        case 2: s += utf8(static_cast<char32_t>(0x80 + rng_() % (0x800 - 0x80))); break;
        case 3: {
          char32_t cp = static_cast<char32_t>(0x800 + rng_() % (0x10000 - 0x800));
          if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;  // no surrogates in UTF-8
          s += utf8(cp);
          break;
        }
        case 4: s += utf8(static_cast<char32_t>(0x10000 + rng_() % (0x110000 - 0x10000))); break;
        default: s += static_cast<char>(0x20 + rng_() % (0x7F - 0x20)); break;
      }
    }
    return s;
  }

 private:
  std::mt19937_64 rng_;
};

// A fresh directory under the system temp directory, removed with the object.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("megatax_json_test_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

void write_file(const std::string& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  EXPECT_TRUE(in.good() || in.eof()) << path;
  return ss.str();
}

// Runs `python3 <script> <args>`; returns its exit status (127 when python3 is missing).
int run_python(const TempDir& dir, std::string_view script, const std::string& args) {
  const std::string script_path = dir.file("reference.py");
  write_file(script_path, script);
  const std::string command = "python3 '" + script_path + "' " + args;
  const int status = std::system(command.c_str());
  if (status == -1) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

// The reference document, once as a Python literal (kPythonScript) and once built here.
Value reference_document() {
  Value doc = Value::object();
  doc.set("format_version", 1);
  doc.set("int64_max", kInt64Max);
  doc.set("int64_min", kInt64Min);
  doc.set("zero", 0);
  doc.set("neg", -42);
  doc.set("pi", 3.141592653589793);
  doc.set("tenth", 0.1);
  doc.set("big", 1e300);
  doc.set("tiny", 5e-324);
  doc.set("neg_zero", -0.0);
  doc.set("hundred", 100.0);
  doc.set("e21", 1e21);
  doc.set("t", true);
  doc.set("f", false);
  doc.set("none", nullptr);
  doc.set("ascii", "plain");
  doc.set("escapes", "quote\" backslash\\ slash/ \b\f\n\r\t \x00 \x1f \x7f"s);
  doc.set("unicode", "h" + utf8(0xE9) + "llo " + utf8(0x2028) + " " + utf8(0x4E2D) + utf8(0x6587) +
                         " " + utf8(0x1F600) + " " + utf8(0x10FFFF));
  Value level0 = Value::object();
  level0.set("k", 10);
  level0.set("counts", Value(Array{1, 2, 3}));
  Value level1 = Value::object();
  level1.set("k", 100);
  level1.set("counts", Value::array());
  doc.set("levels", Value(Array{level0, level1}));
  doc.set("empty_obj", Value::object());
  doc.set("empty_arr", Value::array());
  doc.set("nested", Value(Array{Value(Array{Value(Array{Value::array()})})}));
  doc.set("", "empty key");
  return doc;
}

// Python side of the reference tests.
//   write DIR: writes DIR/py_ascii.json (ensure_ascii, compact) and DIR/py_pretty.json (raw
//              UTF-8, indent=2) holding DOC.
//   check DIR: loads DIR/ours_compact.json and DIR/ours_pretty.json (our dumps of DOC) and
//              asserts they equal DOC strictly (types, order, sign of zero); loads
//              DIR/ours_random.json (an array of our random documents) and writes it back to
//              DIR/py_random.json (ensure_ascii, so non-ASCII comes back as \u escapes).
constexpr std::string_view kPythonScript = R"PY(
import json, math, sys

DOC = {
    "format_version": 1,
    "int64_max": 9223372036854775807,
    "int64_min": -9223372036854775808,
    "zero": 0,
    "neg": -42,
    "pi": 3.141592653589793,
    "tenth": 0.1,
    "big": 1e300,
    "tiny": 5e-324,
    "neg_zero": -0.0,
    "hundred": 100.0,
    "e21": 1e21,
    "t": True,
    "f": False,
    "none": None,
    "ascii": "plain",
    "escapes": "quote\" backslash\\ slash/ \b\f\n\r\t \x00 \x1f \x7f",
    "unicode": "h\u00e9llo \u2028 \u4e2d\u6587 \U0001F600 \U0010FFFF",
    "levels": [{"k": 10, "counts": [1, 2, 3]}, {"k": 100, "counts": []}],
    "empty_obj": {},
    "empty_arr": [],
    "nested": [[[[]]]],
    "": "empty key",
}

def same(a, b, path="$"):
    if type(a) is not type(b):
        raise AssertionError(f"{path}: {type(a).__name__} != {type(b).__name__}")
    if isinstance(a, float):
        if a != b or math.copysign(1.0, a) != math.copysign(1.0, b):
            raise AssertionError(f"{path}: {a!r} != {b!r}")
    elif isinstance(a, list):
        if len(a) != len(b):
            raise AssertionError(f"{path}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        if list(a) != list(b):
            raise AssertionError(f"{path}: keys {list(a)!r} != {list(b)!r}")
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif a != b:
        raise AssertionError(f"{path}: {a!r} != {b!r}")

def no_constant(name):
    raise ValueError(f"non-JSON constant {name}")

def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_constant=no_constant)

mode, d = sys.argv[1], sys.argv[2]
if mode == "write":
    with open(f"{d}/py_ascii.json", "w", encoding="utf-8") as f:
        json.dump(DOC, f, ensure_ascii=True, separators=(",", ":"))
    with open(f"{d}/py_pretty.json", "w", encoding="utf-8") as f:
        json.dump(DOC, f, ensure_ascii=False, indent=2)
elif mode == "check":
    same(load(f"{d}/ours_compact.json"), DOC)
    same(load(f"{d}/ours_pretty.json"), DOC)
    # Our pretty layout is Python's: byte-identical where number formats agree.
    with open(f"{d}/ours_pretty_layout.json", encoding="utf-8") as f:
        ours = f.read()
    layout = {"a": [1, {"b": None, "c": []}, {}], "d": "x\n\u00e9", "e": {"f": True}}
    if ours != json.dumps(layout, indent=3, ensure_ascii=False):
        raise AssertionError(f"layout differs: {ours!r}")
    docs = load(f"{d}/ours_random.json")
    with open(f"{d}/py_random.json", "w", encoding="utf-8") as f:
        json.dump(docs, f, ensure_ascii=True)
else:
    sys.exit(f"unknown mode {mode}")
)PY";

// ---- round trips -----------------------------------------------------------------------

TEST(JsonRoundTrip, RandomDocuments) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  RandomDocuments gen(seed);
  for (int i = 0; i < 300; ++i) {
    const Value doc = gen.value(0);
    const int indent = i % 3 == 0 ? -1 : i % 5;
    const std::string text = dump(doc, indent);
    const Value back = parse(text, "random");
    ASSERT_TRUE(back == doc) << "document " << i << " indent " << indent << ": " << text;
    ASSERT_EQ(dump(back, indent), text);  // deterministic
    ASSERT_EQ(dump(back), dump(doc));
  }
}

TEST(JsonRoundTrip, Int64ExtremesExact) {
  for (const std::int64_t v :
       {kInt64Min, kInt64Min + 1, std::int64_t{-1}, std::int64_t{0}, std::int64_t{1},
        std::int64_t{1} << 53, (std::int64_t{1} << 53) + 1, kInt64Max - 1, kInt64Max}) {
    const std::string text = dump(Value(v));
    EXPECT_EQ(text, std::to_string(v));
    const Value back = parse(text);
    ASSERT_TRUE(back.is_int()) << text;
    EXPECT_EQ(back.as_int(), v);
  }
  EXPECT_EQ(parse("-9223372036854775808").as_int(), kInt64Min);
  EXPECT_EQ(parse("9223372036854775807").as_int(), kInt64Max);
  EXPECT_EQ(parse("-0").as_int(), 0);
  // Beyond int64: the nearest double.
  const Value above = parse("9223372036854775808");
  ASSERT_TRUE(above.is_double());
  EXPECT_EQ(above.as_double(), 9223372036854775808.0);
  const Value below = parse("-9223372036854775809");
  ASSERT_TRUE(below.is_double());
  EXPECT_EQ(below.as_double(), -9223372036854775808.0);
  EXPECT_EQ(parse("18446744073709551615").as_double(), 18446744073709551615.0);
}

TEST(JsonRoundTrip, IntegerTypesAndUnsignedRange) {
  EXPECT_EQ(Value(static_cast<unsigned char>(200)).as_int(), 200);
  EXPECT_EQ(Value(static_cast<short>(-5)).as_int(), -5);
  EXPECT_EQ(Value(3u).as_int(), 3);
  EXPECT_EQ(Value(std::uint64_t{kInt64Max}).as_int(), kInt64Max);
  EXPECT_EQ(Value(std::size_t{7}).as_int(), 7);
  const std::string message =
      error_message([] { (void)Value(std::uint64_t{kInt64Max} + 1); }, ErrorCode::kOutOfRange);
  EXPECT_NE(message.find("9223372036854775808"), std::string::npos) << message;
}

TEST(JsonRoundTrip, DoublesBitExact) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<double> values = {0.0,
                                -0.0,
                                1.0,
                                -1.0,
                                100.0,
                                0.1,
                                1.0 / 3.0,
                                1e15,
                                1e16,
                                1e21,
                                1e22,
                                123456789012.0,
                                9007199254740993.0,
                                5e-324,
                                -5e-324,
                                std::numeric_limits<double>::min(),
                                std::numeric_limits<double>::epsilon(),
                                std::numeric_limits<double>::max(),
                                std::numeric_limits<double>::lowest()};
  for (int i = 0; i < 100000; ++i) values.push_back(random_finite_double(rng));
  for (const double d : values) {
    const std::string text = dump(Value(d));
    const Value back = parse(text);
    ASSERT_TRUE(back.is_double()) << text;
    ASSERT_EQ(std::bit_cast<std::uint64_t>(back.as_double()), std::bit_cast<std::uint64_t>(d))
        << text;
  }
}

TEST(JsonRoundTrip, DoubleFormatting) {
  EXPECT_EQ(dump(Value(100.0)), "100.0");
  EXPECT_EQ(dump(Value(-0.0)), "-0.0");
  EXPECT_EQ(dump(Value(0.0)), "0.0");
  EXPECT_EQ(dump(Value(0.1)), "0.1");
  EXPECT_EQ(dump(Value(1e21)), "1e+21");
  EXPECT_EQ(dump(Value(5e-324)), "5e-324");
  EXPECT_EQ(dump(Value(1.5f)), "1.5");
  EXPECT_TRUE(std::signbit(parse("-0.0").as_double()));
  EXPECT_TRUE(parse("1.0").is_double());
  EXPECT_TRUE(parse("1e2").is_double());
  EXPECT_TRUE(parse("1E2").is_double());
  EXPECT_EQ(parse("1E+2").as_double(), 100.0);
  EXPECT_EQ(parse("-12.5e-1").as_double(), -1.25);
  // Underflow becomes zero (keeping the sign); overflow is an error.
  EXPECT_EQ(std::bit_cast<std::uint64_t>(parse("1e-400").as_double()), 0u);
  EXPECT_TRUE(std::signbit(parse("-1e-400").as_double()));
  EXPECT_EQ(parse("0.0000000000001e-99999999999999999999").as_double(), 0.0);
  EXPECT_EQ(parse("0e999999999999").as_double(), 0.0);
  EXPECT_EQ(parse("4.9406564584124654e-324").as_double(), 5e-324);
  EXPECT_EQ(parse_error("1e400"), "t:1:1: number out of the range of a double");
  EXPECT_EQ(parse_error("[-1.8e308]"), "t:1:2: number out of the range of a double");
  EXPECT_EQ(parse_error("1e99999999999999999999"), "t:1:1: number out of the range of a double");
  EXPECT_EQ(parse_error("0.001e99999"), "t:1:1: number out of the range of a double");
  // NaN and infinities cannot be written.
  for (const double bad :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
        -std::numeric_limits<double>::infinity()}) {
    const Value doc(Array{1, Value(Array{bad})});
    const std::string message =
        error_message([&] { (void)dump(doc); }, ErrorCode::kInvalidArgument);
    EXPECT_NE(message.find(std::isnan(bad) ? "NaN" : "infinity"), std::string::npos) << message;
  }
}

// ---- strings ---------------------------------------------------------------------------

TEST(JsonStrings, EscapesOnOutput) {
  EXPECT_EQ(dump(Value(std::string("a\"b\\c/d", 7))), R"("a\"b\\c/d")");
  EXPECT_EQ(dump(Value(std::string("\x00\x01\x1f\x7f", 4))), R"("\u0000\u0001\u001f)"
                                                             "\x7f\"");
  EXPECT_EQ(dump(Value("\b\f\n\r\t")), R"("\b\f\n\r\t")");
  EXPECT_EQ(dump(Value(utf8(0xE9) + utf8(0x1F600))), "\"" + utf8(0xE9) + utf8(0x1F600) + "\"");
  // Invalid UTF-8 cannot be written (the output would not be JSON).
  for (const std::string& bad :
       {std::string("\xC3"), std::string("\xC0\xAF"), std::string("\xED\xA0\x80"),
        std::string("\xF4\x90\x80\x80"), std::string("a\x80")}) {
    error_message([&] { (void)dump(Value(bad)); }, ErrorCode::kInvalidArgument);
    Value object = Value::object();
    object.set(bad, 1);
    error_message([&] { (void)dump(object); }, ErrorCode::kInvalidArgument);
  }
}

TEST(JsonStrings, EscapesOnInput) {
  EXPECT_EQ(parse(R"("\"\\\/\b\f\n\r\t")").as_string(), "\"\\/\b\f\n\r\t");
  EXPECT_EQ(parse(R"("\u0000")").as_string(), std::string(1, '\0'));
  EXPECT_EQ(parse(R"("\u00e9\u00E9")").as_string(), utf8(0xE9) + utf8(0xE9));
  EXPECT_EQ(parse(R"("\u4e2d")").as_string(), utf8(0x4E2D));
  EXPECT_EQ(parse(R"("\ud83d\ude00")").as_string(), utf8(0x1F600));
  EXPECT_EQ(parse(R"("\uD800\uDC00")").as_string(), utf8(0x10000));
  EXPECT_EQ(parse(R"("\uDBFF\uDFFF")").as_string(), utf8(0x10FFFF));
  EXPECT_EQ(parse("\"" + utf8(0x10FFFF) + utf8(0x7FF) + "\"").as_string(),
            utf8(0x10FFFF) + utf8(0x7FF));
}

// ---- errors ----------------------------------------------------------------------------

TEST(JsonErrors, MessagesNameLineAndColumn) {
  const std::pair<std::string, std::string> cases[] = {
      {"", "t:1:1: expected a value, found end of input"},
      {"  \n ", "t:2:2: expected a value, found end of input"},
      {"[1,]", "t:1:4: expected a value, found ']' (trailing commas are not allowed)"},
      {"[1,\n 2,\n ]", "t:3:2: expected a value, found ']' (trailing commas are not allowed)"},
      {R"({"a":1,})",
       "t:1:8: expected '\"' to start a key, found '}' (trailing commas are not "
       "allowed)"},
      {R"({,})", "t:1:2: expected '\"' to start a key, found ','"},
      {"[1 2]", "t:1:4: expected ',' or ']', found '2'"},
      {"[1", "t:1:3: expected ',' or ']', found end of input"},
      {R"({"a" 1})", "t:1:6: expected ':' after the key, found '1'"},
      {R"({"a":1 "b":2})", "t:1:8: expected ',' or '}', found '\"'"},
      {R"({a:1})", "t:1:2: expected '\"' to start a key, found 'a'"},
      {"01", "t:1:1: leading zeros are not allowed in numbers"},
      {"-01", "t:1:2: leading zeros are not allowed in numbers"},
      {"[00]", "t:1:2: leading zeros are not allowed in numbers"},
      {"1.", "t:1:3: expected a digit after '.', found end of input"},
      {"1.e5", "t:1:3: expected a digit after '.', found 'e'"},
      {"1e", "t:1:3: expected a digit in the exponent, found end of input"},
      {"1e+", "t:1:4: expected a digit in the exponent, found end of input"},
      {"-", "t:1:2: expected a digit after '-', found end of input"},
      {"+1", "t:1:1: expected a value, found '+'"},
      {".5", "t:1:1: expected a value, found '.'"},
      {"0x10", "t:1:2: expected end of input after the value, found 'x'"},
      {"NaN", "t:1:1: expected a value, found 'N' (NaN and Infinity are not JSON)"},
      {"Infinity", "t:1:1: expected a value, found 'I' (NaN and Infinity are not JSON)"},
      {"[-Infinity]",
       "t:1:3: expected a digit after '-', found 'I' (NaN and Infinity are not "
       "JSON)"},
      {"tru", "t:1:1: expected a value, found 't' (not 'true', 'false' or 'null')"},
      {"nul", "t:1:1: expected a value, found 'n' (not 'true', 'false' or 'null')"},
      {"True", "t:1:1: expected a value, found 'T'"},
      {"truex", "t:1:5: expected end of input after the value, found 'x'"},
      {"1 2", "t:1:3: expected end of input after the value, found '2'"},
      {"[1]]", "t:1:4: expected end of input after the value, found ']'"},
      {"// c\n1", "t:1:1: expected a value, found '/'"},
      {"'a'", "t:1:1: expected a value, found '''"},
      {std::string("[\0]", 3), "t:1:2: expected a value, found control character U+0000"},
      {"\xEF\xBB\xBF{}", "t:1:1: expected a value, found a UTF-8 BOM"},
      {"\"abc", "t:1:5: expected '\"' to close the string opened at 1:1, found end of input"},
      {"[\"a\nb\"]",
       "t:1:4: expected a character of the string, found control character "
       "U+000A (control characters must be escaped)"},
      {"\"\t\"",
       "t:1:2: expected a character of the string, found control character U+0009 "
       "(control characters must be escaped)"},
      {R"("\x")",
       "t:1:2: invalid escape '\\x' (expected one of \\\" \\\\ \\/ \\b \\f \\n \\r "
       "\\t \\uXXXX)"},
      {R"("\U0041")",
       "t:1:2: invalid escape '\\U' (expected one of \\\" \\\\ \\/ \\b \\f \\n "
       "\\r \\t \\uXXXX)"},
      {"\"\\", "t:1:3: expected an escape character after '\\', found end of input"},
      {R"("\u12G4")", "t:1:6: expected 4 hex digits after \\u, found 'G'"},
      {R"("\u12")", "t:1:6: expected 4 hex digits after \\u, found '\"'"},
      {R"("\uD800")",
       "t:1:2: unpaired surrogate '\\uD800' (expected a \\uDC00-\\uDFFF escape "
       "after it)"},
      {R"("\uD800x")",
       "t:1:2: unpaired surrogate '\\uD800' (expected a \\uDC00-\\uDFFF escape "
       "after it)"},
      {R"("ab\uD83D\u0041")",
       "t:1:4: unpaired surrogate '\\uD83D' (expected a \\uDC00-\\uDFFF "
       "escape after it)"},
      {R"("\uD800\uD800")",
       "t:1:2: unpaired surrogate '\\uD800' (expected a \\uDC00-\\uDFFF "
       "escape after it)"},
      {R"("\uDC00")",
       "t:1:2: unpaired surrogate '\\uDC00' (a low surrogate must follow a high "
       "one)"},
      {R"("\udfff\ud800")",
       "t:1:2: unpaired surrogate '\\udfff' (a low surrogate must follow a "
       "high one)"},
      {R"({"a":1,"a":2})", "t:1:8: duplicate key \"a\""},
      {R"({"a":1,"\u0061":2})", "t:1:8: duplicate key \"a\""},
      {"\"\xC3\x28\"", "t:1:2: invalid UTF-8 in string at byte 0xC3"},
      {"\"\xC0\xAF\"", "t:1:2: invalid UTF-8 in string at byte 0xC0"},
      {"\"\xED\xA0\x80\"", "t:1:2: invalid UTF-8 in string at byte 0xED"},
      {"\"\xF4\x90\x80\x80\"", "t:1:2: invalid UTF-8 in string at byte 0xF4"},
      {"\"\xE2\x82\"", "t:1:2: invalid UTF-8 in string at byte 0xE2"},
      {"\"\x80\"", "t:1:2: invalid UTF-8 in string at byte 0x80"},
      {"\"\xF0\x9F\x98", "t:1:2: invalid UTF-8 in string at byte 0xF0"},
      {"[\xC3\xA9]", "t:1:2: expected a value, found byte 0xC3"},
      // Columns count characters: 'x' is the 7th character but the 8th byte.
      {"[\"\xC3\xA9\", x]", "t:1:7: expected a value, found 'x'"},
  };
  for (const auto& [text, expected] : cases) {
    EXPECT_EQ(parse_error(text), expected) << "input: " << text;
  }
}

TEST(JsonErrors, NamesTheDocument) {
  const std::string text = "{\n  \"version\": 1,\n  \"config\": 7\"levels\": []\n}";
  EXPECT_EQ(error_message([&] { (void)parse(text, "taxonomy.json"); }, ErrorCode::kDataLoss),
            "taxonomy.json:3:14: expected ',' or '}', found '\"'");
  EXPECT_EQ(error_message([] { (void)parse("["); }, ErrorCode::kDataLoss),
            "json:1:2: expected a value, found end of input");
}

TEST(JsonErrors, DuplicateKeysInLargeObjects) {
  std::string text = "{";
  for (int i = 0; i < 40; ++i) text += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + ",";
  const std::size_t column = text.size() + 1;
  EXPECT_EQ(parse(text + "\"k40\":40}").size(), 41u);
  EXPECT_EQ(parse_error(text + "\"k5\":1}"),
            "t:1:" + std::to_string(column) + ": duplicate key \"k5\"");
  Object members;
  for (int i = 0; i < 40; ++i) members.emplace_back("k" + std::to_string(i), i);
  EXPECT_EQ(Value(members).size(), 40u);
  members.emplace_back("k7", 0);
  error_message([&] { (void)Value(members); }, ErrorCode::kInvalidArgument);
  error_message([] { (void)Value(Object{{"a", 1}, {"a", 2}}); }, ErrorCode::kInvalidArgument);
}

TEST(JsonErrors, NestingLimit) {
  const auto nested = [](int depth, std::string_view open, std::string_view close) {
    std::string text;
    for (int i = 0; i < depth; ++i) text += open;
    for (int i = 0; i < depth; ++i) text += close;
    return text;
  };
  // kMaxDepth levels parse and dump; one more is refused on both sides.
  const Value deepest = parse(nested(kMaxDepth, "[", "]"));
  EXPECT_EQ(dump(deepest), nested(kMaxDepth, "[", "]"));
  EXPECT_EQ(parse_error(nested(kMaxDepth + 1, "[", "]")),
            "t:1:257: nesting deeper than 256 arrays/objects");
  const std::string objects = nested(kMaxDepth, "{\"a\":", "}");
  EXPECT_EQ(parse(objects.substr(0, objects.size() - kMaxDepth) + "1" +
                  objects.substr(objects.size() - kMaxDepth))
                .size(),
            1u);
  EXPECT_EQ(parse_error(nested(kMaxDepth + 1, "{\"a\":", "}")),
            "t:1:1281: nesting deeper than 256 arrays/objects");
  // A hostile document fails fast instead of exhausting the stack.
  EXPECT_EQ(parse_error(std::string(1000000, '[')),
            "t:1:257: nesting deeper than 256 arrays/objects");
  Value too_deep = deepest;
  {
    Value wrapped = Value::array();
    wrapped.push_back(std::move(too_deep));
    too_deep = std::move(wrapped);
  }
  const std::string message =
      error_message([&] { (void)dump(too_deep); }, ErrorCode::kInvalidArgument);
  EXPECT_NE(message.find("nesting deeper than 256"), std::string::npos) << message;
}

// ---- the Python reference --------------------------------------------------------------

TEST(JsonPythonReference, PythonWritesWeRead) {
  TempDir dir;
  ASSERT_EQ(run_python(dir, kPythonScript, "write '" + dir.path().string() + "'"), 0)
      << "python3 (the reference) is required and must succeed";
  const Value expected = reference_document();
  for (const char* name : {"py_ascii.json", "py_pretty.json"}) {
    SCOPED_TRACE(name);
    const std::string text = read_file(dir.file(name));
    const Value doc = parse(text, name);
    EXPECT_TRUE(doc == expected) << "python wrote:\n" << text << "\nwe read:\n" << dump(doc, 2);
    EXPECT_TRUE(std::signbit(doc["neg_zero"].as_double()));
  }
}

TEST(JsonPythonReference, WeWritePythonReads) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TempDir dir;
  const Value expected = reference_document();
  write_file(dir.file("ours_compact.json"), dump(expected));
  write_file(dir.file("ours_pretty.json"), dump(expected, 2));
  Value layout = Value::object();
  Value inner = Value::object();
  inner.set("b", nullptr);
  inner.set("c", Value::array());
  layout.set("a", Value(Array{1, inner, Value::object()}));
  layout.set("d", "x\n" + utf8(0xE9));
  Value e = Value::object();
  e.set("f", true);
  layout.set("e", e);
  write_file(dir.file("ours_pretty_layout.json"), dump(layout, 3));
  RandomDocuments gen(seed);
  Value random_docs = Value::array();
  for (int i = 0; i < 100; ++i) random_docs.push_back(gen.value(0));
  write_file(dir.file("ours_random.json"), dump(random_docs, seed % 2 == 0 ? -1 : 1));

  ASSERT_EQ(run_python(dir, kPythonScript, "check '" + dir.path().string() + "'"), 0)
      << "python3 (the reference) is required; it rejected our output (see its message above)";
  const Value back = parse(read_file(dir.file("py_random.json")), "py_random.json");
  ASSERT_EQ(back.size(), random_docs.size());
  for (std::size_t i = 0; i < back.size(); ++i) {
    ASSERT_TRUE(back[i] == random_docs[i])
        << "document " << i << "\nours:   " << dump(random_docs[i])
        << "\npython: " << dump(back[i]);
  }
}

// ---- building and reading --------------------------------------------------------------

TEST(JsonValue, BuildAndDump) {
  Value doc = Value::object();
  doc.set("format_version", 1);
  doc.set("status", "fitted");
  doc.set("levels", Value::array());
  doc.set("status", "done");  // replaced in place
  Value level = Value::object();
  level.set("k", std::int64_t{10});
  level.set("ratio", 0.5);
  level.set("ok", true);
  level.set("note", nullptr);
  doc.as_object()[2].second.push_back(level);
  EXPECT_EQ(dump(doc),
            R"({"format_version":1,"status":"done","levels":[{"k":10,"ratio":0.5,"ok":true,)"
            R"("note":null}]})");
  EXPECT_EQ(dump(doc, 2), R"({
  "format_version": 1,
  "status": "done",
  "levels": [
    {
      "k": 10,
      "ratio": 0.5,
      "ok": true,
      "note": null
    }
  ]
})");
  EXPECT_EQ(dump(Value::array(), 2), "[]");
  EXPECT_EQ(dump(Value::object(), 2), "{}");
  EXPECT_EQ(dump(Value(Array{1, 2}), 0), "[\n1,\n2\n]");
  EXPECT_EQ(dump(Value()), "null");
  EXPECT_EQ(parse(" \t\r\n[ 1 , { \"a\" : [ ] } ]\n ").size(), 2u);
}

TEST(JsonValue, AccessorsAndErrors) {
  const Value doc = parse(R"({"n": 5, "x": 2.5, "s": "str", "b": false, "a": [1, 2], "o": {}})");
  EXPECT_EQ(doc["n"].as_int(), 5);
  EXPECT_EQ(doc["n"].as_double(), 5.0);
  EXPECT_EQ(doc["x"].as_double(), 2.5);
  EXPECT_EQ(doc["s"].as_string(), "str");
  EXPECT_FALSE(doc["b"].as_bool());
  EXPECT_EQ(doc["a"].size(), 2u);
  EXPECT_EQ(doc["a"][1].as_int(), 2);
  EXPECT_EQ(doc["o"].size(), 0u);
  EXPECT_TRUE(doc.contains("n"));
  EXPECT_FALSE(doc.contains("missing"));
  EXPECT_EQ(doc.find("missing"), nullptr);
  EXPECT_EQ(doc["a"].find("n"), nullptr);  // not an object
  ASSERT_NE(doc.find("s"), nullptr);
  EXPECT_TRUE(doc.find("s")->is_string());
  EXPECT_TRUE(doc["n"].is_number() && doc["x"].is_number() && !doc["s"].is_number());

  const auto data_loss = [](const std::function<void()>& fn) {
    return error_message(fn, ErrorCode::kDataLoss);
  };
  EXPECT_EQ(data_loss([&] { (void)doc["x"].as_int(); }), "expected an integer, found a double");
  EXPECT_EQ(data_loss([&] { (void)doc["s"].as_double(); }), "expected a double, found a string");
  EXPECT_EQ(data_loss([&] { (void)doc["n"].as_string(); }), "expected a string, found an integer");
  EXPECT_EQ(data_loss([&] { (void)doc["n"].as_bool(); }), "expected a bool, found an integer");
  EXPECT_EQ(data_loss([&] { (void)doc["o"].as_array(); }), "expected an array, found an object");
  EXPECT_EQ(data_loss([&] { (void)doc["a"].as_object(); }), "expected an object, found an array");
  EXPECT_EQ(data_loss([&] { (void)doc["missing"]; }), "missing key \"missing\"");
  EXPECT_EQ(data_loss([&] { (void)doc["a"]["k"]; }),
            "looking up key \"k\": expected an object, found an array");
  EXPECT_EQ(data_loss([&] { (void)doc["a"][2]; }), "index 2 is past the end of an array of 2");
  EXPECT_EQ(data_loss([&] { (void)doc["n"].size(); }),
            "expected an array or an object, found an integer");

  Value number = 1;
  error_message([&] { number.set("k", 1); }, ErrorCode::kInvalidArgument);
  error_message([&] { number.push_back(1); }, ErrorCode::kInvalidArgument);
}

TEST(JsonValue, Equality) {
  EXPECT_TRUE(Value(1) == Value(std::int64_t{1}));
  EXPECT_FALSE(Value(1) == Value(1.0));  // an integer is not a double
  EXPECT_TRUE(Value(0.0) == Value(-0.0));
  EXPECT_FALSE(Value(std::numeric_limits<double>::quiet_NaN()) ==
               Value(std::numeric_limits<double>::quiet_NaN()));
  EXPECT_FALSE(Value("1") == Value(1));
  EXPECT_TRUE(Value() == Value(nullptr));
  EXPECT_FALSE(parse(R"({"a":1,"b":2})") == parse(R"({"b":2,"a":1})"));  // order matters
  EXPECT_TRUE(parse(R"({"a":[1,{"b":null}]})") == parse(R"({ "a" : [ 1 , { "b" : null } ] })"));
  EXPECT_TRUE(parse(R"("\u00e9")") == parse("\"\xC3\xA9\""));
}

TEST(JsonView, ErrorsNameThePath) {
  const Value doc = parse(R"({"levels": [{"k": 10, "count": "x"}], "weird key": {"a": 1}, "n": 3})",
                          "taxonomy.json");
  const View root(doc, "taxonomy.json");
  EXPECT_EQ(root.path(), ".");
  EXPECT_EQ(root["levels"][0]["k"].as_int(), 10);
  EXPECT_EQ(root["levels"][0]["k"].as_double(), 10.0);
  EXPECT_EQ(root["levels"][0]["count"].as_string(), "x");
  EXPECT_EQ(root["levels"][0]["count"].path(), ".levels[0].count");
  EXPECT_EQ(root["levels"].size(), 1u);
  EXPECT_TRUE(root.contains("n"));
  EXPECT_TRUE(root["weird key"].is_object());
  EXPECT_EQ(&root["n"].value(), &doc["n"]);

  const auto data_loss = [](const std::function<void()>& fn) {
    return error_message(fn, ErrorCode::kDataLoss);
  };
  EXPECT_EQ(data_loss([&] { (void)root["levels"][0]["count"].as_int(); }),
            "taxonomy.json: .levels[0].count: expected an integer, found a string");
  EXPECT_EQ(data_loss([&] { (void)root["levels"][0]["missing"]; }),
            "taxonomy.json: .levels[0]: missing key \"missing\"");
  EXPECT_EQ(data_loss([&] { (void)root["levels"][3]; }),
            "taxonomy.json: .levels: index 3 is past the end of an array of 1");
  EXPECT_EQ(data_loss([&] { (void)root["weird key"]["a"].as_string(); }),
            "taxonomy.json: .[\"weird key\"].a: expected a string, found an integer");
  EXPECT_EQ(data_loss([&] { (void)root.as_bool(); }),
            "taxonomy.json: .: expected a bool, found an object");
  EXPECT_EQ(data_loss([&] { (void)root["n"]["k"]; }),
            "taxonomy.json: .n: looking up key \"k\": expected an object, found an integer");
  EXPECT_EQ(data_loss([&] { (void)root["n"][0]; }),
            "taxonomy.json: .n: expected an array, found an integer");
  EXPECT_EQ(data_loss([&] { (void)root["n"].size(); }),
            "taxonomy.json: .n: expected an array or an object, found an integer");
  EXPECT_EQ(data_loss([&] { (void)root["levels"][0]["k"].as_bool(); }),
            "taxonomy.json: .levels[0].k: expected a bool, found an integer");

  const Value array = parse("[[1]]");
  const View top(array, "a.json");
  EXPECT_EQ(data_loss([&] { (void)top[0][0].as_string(); }),
            "a.json: .[0][0]: expected a string, found an integer");
}

}  // namespace
}  // namespace megatax::json
