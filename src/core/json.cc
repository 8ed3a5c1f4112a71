#include "core/json.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <utility>

#include "megatax/error.h"

namespace megatax::json {
namespace {

// Objects with at least this many members check key uniqueness with a hash set instead of a
// linear scan (parse() and Value(Object)).
constexpr std::size_t kLinearKeyCheckLimit = 16;

// Length (2..4) of the valid UTF-8 sequence starting at s[i] (a byte >= 0x80), or 0 when it
// is not valid: a stray continuation byte, a truncated sequence, an overlong form, an encoded
// surrogate (U+D800..U+DFFF) or a code point above U+10FFFF.
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) noexcept {
  const auto byte = [&](std::size_t k) -> unsigned {
    return k < s.size() ? static_cast<unsigned char>(s[k]) : 0u;
  };
  const unsigned b0 = byte(i);
  const auto cont = [](unsigned b, unsigned lo = 0x80, unsigned hi = 0xBF) {
    return b >= lo && b <= hi;
  };
  if (b0 >= 0xC2 && b0 <= 0xDF) return cont(byte(i + 1)) ? 2 : 0;
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    const unsigned lo = b0 == 0xE0 ? 0xA0 : 0x80;  // E0: no overlong forms
    const unsigned hi = b0 == 0xED ? 0x9F : 0xBF;  // ED: no surrogates
    return cont(byte(i + 1), lo, hi) && cont(byte(i + 2)) ? 3 : 0;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    const unsigned lo = b0 == 0xF0 ? 0x90 : 0x80;  // F0: no overlong forms
    const unsigned hi = b0 == 0xF4 ? 0x8F : 0xBF;  // F4: nothing above U+10FFFF
    return cont(byte(i + 1), lo, hi) && cont(byte(i + 2)) && cont(byte(i + 3)) ? 4 : 0;
  }
  return 0;
}

void append_utf8(std::string& out, std::uint32_t cp) {
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
}

constexpr char kHexDigits[] = "0123456789abcdef";
constexpr char kUpperHexDigits[] = "0123456789ABCDEF";

void append_u00xx(std::string& out, unsigned char c) {
  out += "\\u00";
  out += kHexDigits[c >> 4];
  out += kHexDigits[c & 0xF];
}

// Appends the JSON escape of one byte that needs escaping, or the byte itself.
void append_escaped_byte(std::string& out, unsigned char c) {
  switch (c) {
    case '"': out += "\\\""; return;
    case '\\': out += "\\\\"; return;
    case '\b': out += "\\b"; return;
    case '\f': out += "\\f"; return;
    case '\n': out += "\\n"; return;
    case '\r': out += "\\r"; return;
    case '\t': out += "\\t"; return;
    default: break;
  }
  if (c < 0x20) {
    append_u00xx(out, c);
  } else {
    out += static_cast<char>(c);
  }
}

bool needs_escape(unsigned char c) noexcept { return c < 0x20 || c == '"' || c == '\\'; }

// A key or string quoted for an error message: escapes like dump() but never fails (bytes
// that are not valid UTF-8 are written as \u00XX so the message stays readable).
std::string quote_for_message(std::string_view s) {
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      append_escaped_byte(out, c);
      ++i;
    } else if (const std::size_t n = utf8_sequence_length(s, i); n != 0) {
      out.append(s, i, n);
      i += n;
    } else {
      append_u00xx(out, c);
      ++i;
    }
  }
  out += '"';
  return out;
}

[[noreturn]] void kind_error(ErrorCode code, const std::string& prefix, Kind expected, Kind found) {
  throw_error(code, prefix + "expected " + kind_name(expected) + ", found " + kind_name(found));
}

// Returns the first key that occurs twice in `members`, or nullptr.
const std::string* find_duplicate_key(const Object& members) {
  if (members.size() <= kLinearKeyCheckLimit) {
    for (std::size_t i = 0; i < members.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (members[j].first == members[i].first) return &members[i].first;
      }
    }
    return nullptr;
  }
  std::unordered_set<std::string_view> seen;
  seen.reserve(members.size());
  for (const Member& member : members) {
    if (!seen.insert(member.first).second) return &member.first;
  }
  return nullptr;
}

// ---- Parser ----------------------------------------------------------------------------

class Parser {
 public:
  Parser(std::string_view text, std::string_view what) : text_(text), what_(what) {}

  Value parse_document() {
    skip_whitespace();
    if (text_.substr(0, 3) == "\xEF\xBB\xBF") fail_at(0, "expected a value, found a UTF-8 BOM");
    Value value = parse_value(0);
    skip_whitespace();
    if (pos_ != text_.size()) fail("expected end of input after the value, found " + found());
    return value;
  }

 private:
  bool at_end() const noexcept { return pos_ >= text_.size(); }
  char peek() const noexcept { return at_end() ? '\0' : text_[pos_]; }

  void skip_whitespace() noexcept {
    while (!at_end()) {
      const char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  // What is at `pos`, for messages: 'c', "end of input", "control character U+000A", "byte
  // 0xC3".
  std::string found_at(std::size_t pos) const {
    if (pos >= text_.size()) return "end of input";
    const auto c = static_cast<unsigned char>(text_[pos]);
    if (c >= 0x20 && c < 0x7F) return std::string("'") + static_cast<char>(c) + "'";
    std::string out = c < 0x20 || c == 0x7F ? "control character U+00" : "byte 0x";
    out += kUpperHexDigits[c >> 4];
    out += kUpperHexDigits[c & 0xF];
    return out;
  }
  std::string found() const { return found_at(pos_); }

  [[noreturn]] void fail_at(std::size_t pos, const std::string& message) const {
    throw_error(ErrorCode::kDataLoss, std::string(what_) + ":" + position(pos) + ": " + message);
  }
  [[noreturn]] void fail(const std::string& message) const { fail_at(pos_, message); }

  Value parse_value(int depth) {
    switch (peek()) {
      case '{': return parse_object(depth + 1);
      case '[': return parse_array(depth + 1);
      case '"': return Value(parse_string());
      case 't': return parse_literal("true", Value(true));
      case 'f': return parse_literal("false", Value(false));
      case 'n': return parse_literal("null", Value());
      case 'N':
      case 'I': fail("expected a value, found " + found() + " (NaN and Infinity are not JSON)");
      default: break;
    }
    const char c = peek();
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
    fail("expected a value, found " + found());
  }

  Value parse_literal(std::string_view word, Value value) {
    if (text_.substr(pos_, word.size()) != word) {
      fail("expected a value, found " + found() + " (not 'true', 'false' or 'null')");
    }
    pos_ += word.size();
    return value;
  }

  void check_depth(int depth) const {
    if (depth > kMaxDepth) {
      fail("nesting deeper than " + std::to_string(kMaxDepth) + " arrays/objects");
    }
  }

  Value parse_array(int depth) {
    check_depth(depth);
    ++pos_;  // '['
    Array elements;
    skip_whitespace();
    if (peek() == ']') {
      ++pos_;
      return Value(std::move(elements));
    }
    while (true) {
      elements.push_back(parse_value(depth));
      skip_whitespace();
      if (peek() == ']') {
        ++pos_;
        return Value(std::move(elements));
      }
      if (peek() != ',') fail("expected ',' or ']', found " + found());
      ++pos_;
      skip_whitespace();
      if (peek() == ']') fail("expected a value, found ']' (trailing commas are not allowed)");
    }
  }

  Value parse_object(int depth) {
    check_depth(depth);
    ++pos_;  // '{'
    Value result = Value::object();
    Object& members = result.as_object();
    std::unordered_set<std::string> keys;  // filled once the object is large
    skip_whitespace();
    if (peek() == '}') {
      ++pos_;
      return result;
    }
    while (true) {
      if (peek() != '"') {
        fail("expected '\"' to start a key, found " + found() +
             (peek() == '}' ? " (trailing commas are not allowed)" : ""));
      }
      const std::size_t key_pos = pos_;
      std::string key = parse_string();
      bool duplicate = false;
      if (members.size() < kLinearKeyCheckLimit) {
        for (const Member& member : members) duplicate = duplicate || member.first == key;
      } else {
        if (keys.empty()) {
          for (const Member& member : members) keys.insert(member.first);
        }
        duplicate = !keys.insert(key).second;
      }
      if (duplicate) fail_at(key_pos, "duplicate key " + quote_for_message(key));
      skip_whitespace();
      if (peek() != ':') fail("expected ':' after the key, found " + found());
      ++pos_;
      skip_whitespace();
      Value value = parse_value(depth);
      members.emplace_back(std::move(key), std::move(value));
      skip_whitespace();
      if (peek() == '}') {
        ++pos_;
        return result;
      }
      if (peek() != ',') fail("expected ',' or '}', found " + found());
      ++pos_;
      skip_whitespace();
    }
  }

  // Four hex digits at pos_ (after "\u"); advances past them.
  std::uint32_t parse_hex4() {
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = peek();
      std::uint32_t d = 0;
      if (c >= '0' && c <= '9') {
        d = static_cast<std::uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<std::uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<std::uint32_t>(c - 'A' + 10);
      } else {
        fail("expected 4 hex digits after \\u, found " + found());
      }
      v = v * 16 + d;
      ++pos_;
    }
    return v;
  }

  // A string at pos_ (on its opening quote); returns its decoded UTF-8 bytes.
  std::string parse_string() {
    const std::size_t open = pos_;
    ++pos_;  // '"'
    std::string out;
    while (true) {
      // Copy the run of plain ASCII characters in one go.
      const std::size_t run = pos_;
      while (!at_end()) {
        const auto c = static_cast<unsigned char>(text_[pos_]);
        if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') break;
        ++pos_;
      }
      out.append(text_, run, pos_ - run);
      if (at_end()) {
        fail("expected '\"' to close the string opened at " + position(open) +
             ", found end of input");
      }
      const auto c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20)
        fail("expected a character of the string, found " + found() +
             " (control characters must be escaped)");
      if (c >= 0x80) {
        const std::size_t n = utf8_sequence_length(text_, pos_);
        if (n == 0) fail("invalid UTF-8 in string at " + found());
        out.append(text_, pos_, n);
        pos_ += n;
        continue;
      }
      // A backslash.
      const std::size_t escape = pos_;
      ++pos_;
      if (at_end()) fail("expected an escape character after '\\', found end of input");
      const char e = text_[pos_];
      ++pos_;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          std::uint32_t cp = parse_hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail_at(escape, "unpaired surrogate " + escape_text(escape, 6) +
                                " (a low surrogate must follow a high one)");
          }
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (text_.substr(pos_, 2) != "\\u") {
              fail_at(escape, "unpaired surrogate " + escape_text(escape, 6) +
                                  " (expected a \\uDC00-\\uDFFF escape after it)");
            }
            pos_ += 2;
            const std::uint32_t low = parse_hex4();
            if (low < 0xDC00 || low > 0xDFFF) {
              fail_at(escape, "unpaired surrogate " + escape_text(escape, 6) +
                                  " (expected a \\uDC00-\\uDFFF escape after it)");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          pos_ = escape;
          fail("invalid escape " + escape_text(escape, 2) +
               " (expected one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)");
      }
    }
  }

  // The source text [pos, pos + n) for a message (clipped at the end of the text).
  std::string escape_text(std::size_t pos, std::size_t n) const {
    std::string s(text_.substr(pos, n));
    for (char& c : s) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7F) c = '?';
    }
    return "'" + s + "'";
  }

  // "line:column" of `pos`, both from 1; the column counts UTF-8 characters (bytes that are
  // not continuation bytes).
  std::string position(std::size_t pos) const {
    std::size_t line = 1;
    std::size_t column = 1;
    for (std::size_t i = 0; i < pos && i < text_.size(); ++i) {
      const auto c = static_cast<unsigned char>(text_[i]);
      if (c == '\n') {
        ++line;
        column = 1;
      } else if ((c & 0xC0) != 0x80) {
        ++column;
      }
    }
    return std::to_string(line) + ":" + std::to_string(column);
  }

  bool digit_at_pos() const noexcept { return peek() >= '0' && peek() <= '9'; }

  Value parse_number() {
    const std::size_t start = pos_;
    if (peek() == '-') {
      ++pos_;
      if (peek() == 'I') {
        fail("expected a digit after '-', found " + found() + " (NaN and Infinity are not JSON)");
      }
    }
    // Integer part: "0" or [1-9][0-9]*.
    const std::size_t int_begin = pos_;
    if (peek() == '0') {
      ++pos_;
      if (digit_at_pos()) fail_at(int_begin, "leading zeros are not allowed in numbers");
    } else if (digit_at_pos()) {
      while (digit_at_pos()) ++pos_;
    } else {
      fail("expected a digit after '-', found " + found());
    }
    const std::size_t int_end = pos_;
    bool is_integer = true;
    std::size_t frac_begin = pos_;
    std::size_t frac_end = pos_;
    if (peek() == '.') {
      is_integer = false;
      ++pos_;
      if (!digit_at_pos()) fail("expected a digit after '.', found " + found());
      frac_begin = pos_;
      while (digit_at_pos()) ++pos_;
      frac_end = pos_;
    }
    // Exponent, saturated at +-1e9 (only its sign matters once it is that large).
    long long exponent = 0;
    if (peek() == 'e' || peek() == 'E') {
      is_integer = false;
      ++pos_;
      bool negative = false;
      if (peek() == '+' || peek() == '-') {
        negative = peek() == '-';
        ++pos_;
      }
      if (!digit_at_pos()) fail("expected a digit in the exponent, found " + found());
      while (digit_at_pos()) {
        exponent = std::min(exponent * 10 + (peek() - '0'), 1000000000LL);
        ++pos_;
      }
      if (negative) exponent = -exponent;
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    if (is_integer) {
      std::int64_t v = 0;
      const auto [ptr, ec] = std::from_chars(first, last, v);
      if (ec == std::errc() && ptr == last) return Value(v);
      // Out of int64 range: falls through to the nearest double.
    }
    double d = 0;
    const auto [ptr, ec] = std::from_chars(first, last, d, std::chars_format::general);
    if (ec == std::errc() && ptr == last) return Value(d);
    if (ec != std::errc::result_out_of_range) {
      fail_at(start, "internal error: std::from_chars rejected a valid number");
    }
    // Out of range: overflow when the magnitude is >= 1, else underflow to zero. The decimal
    // exponent of the first non-zero digit decides.
    long long lead = 0;
    if (text_[int_begin] != '0') {
      lead = static_cast<long long>(int_end - int_begin) - 1;
    } else {
      std::size_t k = frac_begin;
      while (k < frac_end && text_[k] == '0') ++k;
      lead = -static_cast<long long>(k - frac_begin) - 1;
    }
    if (lead + exponent >= 0) fail_at(start, "number out of the range of a double");
    return Value(text_[start] == '-' ? -0.0 : 0.0);
  }

  std::string_view text_;
  std::string_view what_;
  std::size_t pos_ = 0;
};

// ---- Writer ----------------------------------------------------------------------------

class Writer {
 public:
  explicit Writer(int indent) : indent_(indent) {}

  void write(const Value& value, int depth) {
    switch (value.kind()) {
      case Kind::kNull: out_ += "null"; return;
      case Kind::kBool: out_ += value.as_bool() ? "true" : "false"; return;
      case Kind::kInt: write_int(value.as_int()); return;
      case Kind::kDouble: write_double(value.as_double()); return;
      case Kind::kString: write_string(value.as_string()); return;
      case Kind::kArray: write_array(value.as_array(), depth + 1); return;
      case Kind::kObject: write_object(value.as_object(), depth + 1); return;
    }
  }

  std::string take() { return std::move(out_); }

 private:
  void write_int(std::int64_t v) {
    char buf[24];
    const auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out_.append(buf, ptr);
  }

  void write_double(double d) {
    if (!std::isfinite(d)) {
      throw_error(ErrorCode::kInvalidArgument, std::string("json::dump: cannot write ") +
                                                   (std::isnan(d) ? "NaN" : "infinity") +
                                                   ": JSON has no representation for it");
    }
    char buf[40];
    const auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, d);
    const std::string_view text(buf, static_cast<std::size_t>(ptr - buf));
    out_ += text;
    // Keep the double a double when read back: "100" -> "100.0", "-0" -> "-0.0".
    if (text.find_first_of(".eE") == std::string_view::npos) out_ += ".0";
  }

  void write_string(std::string_view s) {
    out_ += '"';
    std::size_t run = 0;
    for (std::size_t i = 0; i < s.size();) {
      const auto c = static_cast<unsigned char>(s[i]);
      if (c < 0x80) {
        if (needs_escape(c)) {
          out_.append(s, run, i - run);
          append_escaped_byte(out_, c);
          run = i + 1;
        }
        ++i;
        continue;
      }
      const std::size_t n = utf8_sequence_length(s, i);
      if (n == 0) {
        throw_error(ErrorCode::kInvalidArgument, "json::dump: string is not valid UTF-8 (byte " +
                                                     std::to_string(i) + " of " +
                                                     quote_for_message(s) + ")");
      }
      i += n;
    }
    out_.append(s, run, s.size() - run);
    out_ += '"';
  }

  void check_depth(int depth) const {
    if (depth > kMaxDepth) {
      throw_error(ErrorCode::kInvalidArgument, "json::dump: nesting deeper than " +
                                                   std::to_string(kMaxDepth) + " arrays/objects");
    }
  }

  void newline(int depth) {
    if (indent_ < 0) return;
    out_ += '\n';
    out_.append(static_cast<std::size_t>(indent_) * static_cast<std::size_t>(depth), ' ');
  }

  void write_array(const Array& elements, int depth) {
    check_depth(depth);
    out_ += '[';
    for (std::size_t i = 0; i < elements.size(); ++i) {
      if (i > 0) out_ += ',';
      newline(depth);
      write(elements[i], depth);
    }
    if (!elements.empty()) newline(depth - 1);
    out_ += ']';
  }

  void write_object(const Object& members, int depth) {
    check_depth(depth);
    out_ += '{';
    for (std::size_t i = 0; i < members.size(); ++i) {
      if (i > 0) out_ += ',';
      newline(depth);
      write_string(members[i].first);
      out_ += indent_ < 0 ? ":" : ": ";
      write(members[i].second, depth);
    }
    if (!members.empty()) newline(depth - 1);
    out_ += '}';
  }

  int indent_;
  std::string out_;
};

bool is_identifier(std::string_view key) noexcept {
  if (key.empty()) return false;
  for (std::size_t i = 0; i < key.size(); ++i) {
    const char c = key[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!alpha && !(digit && i > 0)) return false;
  }
  return true;
}

}  // namespace

const char* kind_name(Kind kind) noexcept {
  switch (kind) {
    case Kind::kNull: return "null";
    case Kind::kBool: return "a bool";
    case Kind::kInt: return "an integer";
    case Kind::kDouble: return "a double";
    case Kind::kString: return "a string";
    case Kind::kArray: return "an array";
    case Kind::kObject: return "an object";
  }
  return "an unknown kind";
}

// ---- Value -----------------------------------------------------------------------------

Value::Value(Object o) : data_(std::in_place_type<Object>, std::move(o)) {
  if (const std::string* key = find_duplicate_key(std::get<Object>(data_))) {
    throw_error(ErrorCode::kInvalidArgument,
                "json::Value: duplicate key " + quote_for_message(*key) + " in object");
  }
}

void Value::uint_out_of_range(unsigned long long v) {
  throw_error(ErrorCode::kOutOfRange, "json::Value: integer " + std::to_string(v) +
                                          " is above INT64_MAX (JSON integers here are int64)");
}

bool Value::as_bool() const {
  if (!is_bool()) kind_error(ErrorCode::kDataLoss, "", Kind::kBool, kind());
  return std::get<bool>(data_);
}

std::int64_t Value::as_int() const {
  if (!is_int()) kind_error(ErrorCode::kDataLoss, "", Kind::kInt, kind());
  return std::get<std::int64_t>(data_);
}

double Value::as_double() const {
  if (is_int()) return static_cast<double>(std::get<std::int64_t>(data_));
  if (!is_double()) kind_error(ErrorCode::kDataLoss, "", Kind::kDouble, kind());
  return std::get<double>(data_);
}

const std::string& Value::as_string() const {
  if (!is_string()) kind_error(ErrorCode::kDataLoss, "", Kind::kString, kind());
  return std::get<std::string>(data_);
}

const Array& Value::as_array() const {
  if (!is_array()) kind_error(ErrorCode::kDataLoss, "", Kind::kArray, kind());
  return std::get<Array>(data_);
}

Array& Value::as_array() {
  if (!is_array()) kind_error(ErrorCode::kDataLoss, "", Kind::kArray, kind());
  return std::get<Array>(data_);
}

const Object& Value::as_object() const {
  if (!is_object()) kind_error(ErrorCode::kDataLoss, "", Kind::kObject, kind());
  return std::get<Object>(data_);
}

Object& Value::as_object() {
  if (!is_object()) kind_error(ErrorCode::kDataLoss, "", Kind::kObject, kind());
  return std::get<Object>(data_);
}

const Value* Value::find(std::string_view key) const noexcept {
  const Object* members = std::get_if<Object>(&data_);
  if (members == nullptr) return nullptr;
  for (const Member& member : *members) {
    if (member.first == key) return &member.second;
  }
  return nullptr;
}

Value* Value::find(std::string_view key) noexcept {
  return const_cast<Value*>(std::as_const(*this).find(key));
}

const Value& Value::operator[](std::string_view key) const {
  if (!is_object()) {
    kind_error(ErrorCode::kDataLoss, "looking up key " + quote_for_message(key) + ": ",
               Kind::kObject, kind());
  }
  const Value* value = find(key);
  if (value == nullptr) throw_error(ErrorCode::kDataLoss, "missing key " + quote_for_message(key));
  return *value;
}

const Value& Value::operator[](std::size_t index) const {
  const Array& elements = as_array();
  if (index >= elements.size()) {
    throw_error(ErrorCode::kDataLoss, "index " + std::to_string(index) +
                                          " is past the end of an array of " +
                                          std::to_string(elements.size()));
  }
  return elements[index];
}

void Value::set(std::string_view key, Value value) {
  if (!is_object()) {
    kind_error(ErrorCode::kInvalidArgument,
               "json::Value::set(" + quote_for_message(key) + "): ", Kind::kObject, kind());
  }
  if (Value* existing = find(key)) {
    *existing = std::move(value);
    return;
  }
  std::get<Object>(data_).emplace_back(std::string(key), std::move(value));
}

void Value::push_back(Value value) {
  if (!is_array()) {
    kind_error(ErrorCode::kInvalidArgument, "json::Value::push_back: ", Kind::kArray, kind());
  }
  std::get<Array>(data_).push_back(std::move(value));
}

std::size_t Value::size() const {
  if (is_array()) return std::get<Array>(data_).size();
  if (is_object()) return std::get<Object>(data_).size();
  throw_error(ErrorCode::kDataLoss,
              std::string("expected an array or an object, found ") + kind_name(kind()));
}

bool operator==(const Value& a, const Value& b) { return a.data_ == b.data_; }

// ---- parse / dump ----------------------------------------------------------------------

Value parse(std::string_view text, std::string_view what) {
  return Parser(text, what).parse_document();
}

std::string dump(const Value& value, int indent) {
  Writer writer(indent);
  writer.write(value, 0);
  return writer.take();
}

// ---- View ------------------------------------------------------------------------------

View::View(const Value& value, std::string_view document) : value_(&value), document_(document) {}

void View::fail(const std::string& message) const {
  throw_error(ErrorCode::kDataLoss, document_ + ": " + path() + ": " + message);
}

void View::expect(Kind kind) const {
  if (value_->kind() != kind) {
    fail(std::string("expected ") + kind_name(kind) + ", found " + kind_name(value_->kind()));
  }
}

bool View::as_bool() const {
  expect(Kind::kBool);
  return value_->as_bool();
}

std::int64_t View::as_int() const {
  expect(Kind::kInt);
  return value_->as_int();
}

double View::as_double() const {
  if (!value_->is_int()) expect(Kind::kDouble);
  return value_->as_double();
}

const std::string& View::as_string() const {
  expect(Kind::kString);
  return value_->as_string();
}

View View::operator[](std::string_view key) const {
  if (!value_->is_object()) {
    fail("looking up key " + quote_for_message(key) + ": expected an object, found " +
         kind_name(value_->kind()));
  }
  const Value* member = value_->find(key);
  if (member == nullptr) fail("missing key " + quote_for_message(key));
  std::string path = path_;
  if (is_identifier(key)) {
    path += '.';
    path += key;
  } else {
    path += (path_.empty() ? ".[" : "[") + quote_for_message(key) + ']';
  }
  return View(*member, document_, std::move(path));
}

View View::operator[](std::size_t index) const {
  expect(Kind::kArray);
  const Array& elements = value_->as_array();
  if (index >= elements.size()) {
    fail("index " + std::to_string(index) + " is past the end of an array of " +
         std::to_string(elements.size()));
  }
  return View(elements[index], document_,
              path_ + (path_.empty() ? ".[" : "[") + std::to_string(index) + ']');
}

std::size_t View::size() const {
  if (!value_->is_array() && !value_->is_object()) {
    fail(std::string("expected an array or an object, found ") + kind_name(value_->kind()));
  }
  return value_->size();
}

}  // namespace megatax::json
