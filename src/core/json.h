// core/json.h -- a small, strict JSON library: the taxonomy manifest (taxonomy.json) and the
// tools' `--json` output. No third-party dependency.
//
// A json::Value is one of: null, bool, integer (std::int64_t), double, string (UTF-8 bytes in
// a std::string), array (std::vector<Value>) or object (members kept in insertion order, no two
// with the same key). Integers and doubles are distinct kinds and stay distinct through
// dump() and parse(): an integer is written without '.', 'e' or 'E' and read back as the same
// std::int64_t; a double is always written with a '.' or an exponent ("100.0", "-0.0",
// "1e+21") and read back as the same bits (NaN and infinities cannot be written).
//
// Reading: parse() accepts exactly RFC 8259 JSON (see its comment) and throws Error(kDataLoss)
// naming the document, line, column and what was expected. Accessors that find the wrong kind
// or a missing key throw Error(kDataLoss): a document without the shape its reader expects is
// corrupt input. Read through a json::View to have those errors name the key path
// ("taxonomy.json: .levels[2].counts: expected an integer, found a string").
//
// Writing: build with the constructors, Value::array()/object(), set() and push_back(); dump()
// writes deterministic text (members in insertion order, shortest round-trip doubles).
// Misuse of the building API (set() on a non-object, a uint64 above INT64_MAX) throws
// Error(kInvalidArgument / kOutOfRange).
//
// Thread-safety: Values are plain values (deep copies, no sharing, no hidden state). Concurrent
// const use of one Value is safe; mutation needs exclusive access. parse() and dump() are pure.
// Views borrow the Value they look at (it must outlive them) and are const-only.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace megatax::json {

class Value;

using Array = std::vector<Value>;
using Member = std::pair<std::string, Value>;
// Object members in insertion order; keys are unique.
using Object = std::vector<Member>;

// Nesting limit of parse() and dump(): at most this many arrays/objects inside each other
// (a scalar has depth 0, "[]" and {"a":1} depth 1, "[[1]]" depth 2).
inline constexpr int kMaxDepth = 256;

namespace detail {
// The integer types a Value accepts: not bool, not the character types.
template <typename T>
concept Integer = std::integral<T> && !std::same_as<T, bool> && !std::same_as<T, char> &&
                  !std::same_as<T, char8_t> && !std::same_as<T, char16_t> &&
                  !std::same_as<T, char32_t> && !std::same_as<T, wchar_t>;
}  // namespace detail

enum class Kind : std::uint8_t { kNull, kBool, kInt, kDouble, kString, kArray, kObject };

// "null", "a bool", "an integer", "a double", "a string", "an array", "an object" (used in
// error messages).
const char* kind_name(Kind kind) noexcept;

class Value {
 public:
  // Null.
  Value() noexcept = default;
  // The constructors are implicit on purpose, so that obj.set("count", 3) and
  // arr.push_back("name") read naturally.
  Value(std::nullptr_t) noexcept {}
  Value(bool b) noexcept : data_(std::in_place_type<bool>, b) {}
  // Any integer type except bool and the character types. Signed values are stored exactly;
  // unsigned values above INT64_MAX throw Error(kOutOfRange) rather than silently become an
  // inexact double (ids and counts must round-trip exactly).
  template <detail::Integer T>
  Value(T v) : data_(std::in_place_type<std::int64_t>, checked_int(v)) {}
  // Any double (a float converts exactly). NaN and infinities are stored, but dump() refuses
  // them: JSON cannot hold them.
  Value(double d) noexcept : data_(std::in_place_type<double>, d) {}
  // Strings are stored as given; dump() requires valid UTF-8 (parse() only produces that).
  Value(const char* s) : data_(std::in_place_type<std::string>, s) {}
  Value(std::string s) noexcept : data_(std::in_place_type<std::string>, std::move(s)) {}
  Value(std::string_view s) : data_(std::in_place_type<std::string>, s) {}
  // Catches other pointers, which would otherwise silently convert to bool.
  Value(const void*) = delete;
  Value(Array a) noexcept : data_(std::in_place_type<Array>, std::move(a)) {}
  // Throws Error(kInvalidArgument) naming the key when two members share a key.
  Value(Object o);

  // An empty array / object.
  static Value array() { return Value(Array{}); }
  static Value object() { return Value(Object{}); }

  Kind kind() const noexcept { return static_cast<Kind>(data_.index()); }
  bool is_null() const noexcept { return kind() == Kind::kNull; }
  bool is_bool() const noexcept { return kind() == Kind::kBool; }
  bool is_int() const noexcept { return kind() == Kind::kInt; }
  bool is_double() const noexcept { return kind() == Kind::kDouble; }
  bool is_number() const noexcept { return is_int() || is_double(); }
  bool is_string() const noexcept { return kind() == Kind::kString; }
  bool is_array() const noexcept { return kind() == Kind::kArray; }
  bool is_object() const noexcept { return kind() == Kind::kObject; }

  // Typed reads. Each throws Error(kDataLoss, "expected <kind>, found <kind>") when the value
  // has another kind. as_int() does not accept a double, even an integral one (no silent
  // rounding); as_double() accepts an integer and converts it (exact up to 2^53).
  bool as_bool() const;
  std::int64_t as_int() const;
  double as_double() const;
  const std::string& as_string() const;
  const Array& as_array() const;
  Array& as_array();
  const Object& as_object() const;
  // Mutable members: the caller keeps the keys unique (prefer set()).
  Object& as_object();

  // Object member lookup, O(members) (objects are meant to be records, not big maps).
  // operator[] throws Error(kDataLoss) naming the key when it is missing, or when this is not
  // an object; find() returns nullptr in both cases; contains() == (find() != nullptr).
  const Value& operator[](std::string_view key) const;
  const Value* find(std::string_view key) const noexcept;
  Value* find(std::string_view key) noexcept;
  bool contains(std::string_view key) const noexcept { return find(key) != nullptr; }
  // Array element; throws Error(kDataLoss) when this is not an array or index >= size().
  const Value& operator[](std::size_t index) const;

  // Sets member `key`: replaces the value in place when the key exists (its position is
  // kept), else appends. Throws Error(kInvalidArgument) when this is not an object.
  void set(std::string_view key, Value value);
  // Appends to an array. Throws Error(kInvalidArgument) when this is not an array.
  void push_back(Value value);
  // Elements of an array or members of an object; throws Error(kDataLoss) for other kinds.
  std::size_t size() const;

  // Deep equality: same kind and equal contents. An integer never equals a double (1 != 1.0);
  // doubles compare with == (0.0 == -0.0, NaN != NaN); objects compare member by member in
  // order, so the same members in another order are not equal (dump() would differ).
  friend bool operator==(const Value& a, const Value& b);

 private:
  template <typename T>
  static std::int64_t checked_int(T v) {
    if constexpr (std::is_unsigned_v<T>) {
      if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        uint_out_of_range(v);
      }
    }
    return static_cast<std::int64_t>(v);
  }
  [[noreturn]] static void uint_out_of_range(unsigned long long v);

  // Alternative order matches Kind.
  std::variant<std::nullptr_t, bool, std::int64_t, double, std::string, Array, Object> data_;
};

// Parses one JSON text (RFC 8259, strict):
//  - exactly one value, surrounded only by JSON whitespace (space, tab, LF, CR); no BOM;
//  - no comments, trailing commas, single quotes, NaN/Infinity, leading '+' or leading zeros;
//  - strings must be valid UTF-8 without raw control characters (< 0x20); escapes \" \\ \/
//    \b \f \n \r \t and \uXXXX are decoded to UTF-8, surrogate pairs to one code point, and an
//    unpaired surrogate is an error;
//  - object keys are unique (after decoding escapes);
//  - at most kMaxDepth nested arrays/objects;
//  - numbers: an integer literal (no '.', 'e', 'E') in int64 range becomes an integer;
//    every other number becomes the nearest double (so integers beyond int64 lose precision);
//    a number too large for a double is an error, one too small becomes a subnormal or +-0.
// Throws Error(kDataLoss, "<what>:<line>:<column>: <problem>"), e.g. "taxonomy.json:3:14:
// expected ',' or '}', found '\"'", where line and column start at 1, the column counts UTF-8
// characters and points at the offending character (for a bad escape, duplicate key or
// out-of-range number: at its start). `what` names the document in messages (a file name).
// `text` is only read during the call.
Value parse(std::string_view text, std::string_view what = "json");

// Writes `value` as JSON text (valid UTF-8, no trailing newline). indent < 0: compact, no
// whitespace at all. indent >= 0: one element or member per line, nested levels indented by
// `indent` more spaces, ": " between key and value, empty containers as "[]" and "{}" (the
// layout of Python's json.dumps(indent=...)). Doubles use the shortest text that reads back to
// the same bits (std::to_chars), with ".0" added when that text would look like an integer.
// Strings: '"' and '\\' escaped, control characters as \b \f \n \r \t or \u00XX, everything
// else (including non-ASCII UTF-8) written as is. Throws Error(kInvalidArgument) for a NaN or
// infinite double, a string or key that is not valid UTF-8, or nesting deeper than kMaxDepth
// (so parse(dump(v)) == v holds for whatever dump() accepts, as long as keys written through
// the mutable as_object() stayed unique).
std::string dump(const Value& value, int indent = -1);

// A read-only view of a Value inside a document that remembers how it was reached, so that
// errors name the document and the path:
//   json::View root(manifest, "taxonomy.json");
//   std::int64_t n = root["levels"][2]["count"].as_int();
//   // throws Error(kDataLoss, "taxonomy.json: .levels[2].count: expected an integer, found a
//   // string") or "taxonomy.json: .levels[2]: missing key \"count\"".
// Paths use .key for identifier-like keys, ["key"] (JSON-escaped) otherwise, [i] for array
// elements, and "." for the root. All errors are Error(kDataLoss).
// Thread-safety: a plain value; borrows `value`, which must outlive the View and its children.
class View {
 public:
  // `document` names the document in messages (e.g. "taxonomy.json").
  View(const Value& value, std::string_view document);
  View(Value&&, std::string_view) = delete;  // would dangle

  const Value& value() const noexcept { return *value_; }
  // The path from the root, e.g. ".levels[2].count" ("." for the root).
  std::string path() const { return path_.empty() ? std::string(".") : path_; }

  Kind kind() const noexcept { return value_->kind(); }
  bool is_null() const noexcept { return value_->is_null(); }
  bool is_bool() const noexcept { return value_->is_bool(); }
  bool is_int() const noexcept { return value_->is_int(); }
  bool is_double() const noexcept { return value_->is_double(); }
  bool is_number() const noexcept { return value_->is_number(); }
  bool is_string() const noexcept { return value_->is_string(); }
  bool is_array() const noexcept { return value_->is_array(); }
  bool is_object() const noexcept { return value_->is_object(); }

  // As Value's, with the path in the message.
  bool as_bool() const;
  std::int64_t as_int() const;
  double as_double() const;
  const std::string& as_string() const;
  View operator[](std::string_view key) const;
  View operator[](std::size_t index) const;
  bool contains(std::string_view key) const noexcept { return value_->contains(key); }
  std::size_t size() const;

 private:
  View(const Value& value, std::string document, std::string path)
      : value_(&value), document_(std::move(document)), path_(std::move(path)) {}
  [[noreturn]] void fail(const std::string& message) const;
  void expect(Kind kind) const;

  const Value* value_;
  std::string document_;
  std::string path_;  // "" for the root
};

}  // namespace megatax::json
