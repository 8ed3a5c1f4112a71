// .npy: header parser, 2-D reader and writer. Format: docs/formats.md, constants: io/format.h.
#include "io/npy.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <limits>
#include <vector>

#include "io/dense_vector_reader.h"
#include "io/format.h"
#include "megatax/error.h"

namespace megatax {
namespace io {
namespace {

// A Python literal as it appears in an .npy header.
struct PyValue {
  enum class Kind : std::uint8_t { kString, kInt, kBool, kNone, kTuple, kList };
  Kind kind = Kind::kNone;
  std::string str;
  std::int64_t integer = 0;
  bool boolean = false;
  std::vector<PyValue> items;
};

const char* kind_name(PyValue::Kind kind) {
  switch (kind) {
    case PyValue::Kind::kString: return "a string";
    case PyValue::Kind::kInt: return "an integer";
    case PyValue::Kind::kBool: return "a boolean";
    case PyValue::Kind::kNone: return "None";
    case PyValue::Kind::kTuple: return "a tuple";
    case PyValue::Kind::kList: return "a list";
  }
  return "?";
}

// Printable excerpt of header text for error messages (non-printables as '?').
std::string excerpt(std::string_view text) {
  constexpr std::size_t kMax = 120;
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    out.push_back(c >= 0x20 && c < 0x7F ? static_cast<char>(c) : '?');
  }
  if (text.size() > kMax) out += "...";
  return out;
}

// Recursive-descent parser for the subset of Python literals numpy writes in headers:
// dict of string keys; values: strings, ints, True/False/None, tuples and lists.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& path) : text_(text), path_(path) {}

  void parse_dict(NpyHeader* header) {
    skip_ws();
    expect('{');
    bool have_descr = false, have_order = false, have_shape = false;
    while (true) {
      skip_ws();
      if (peek() == '}') {
        ++pos_;
        break;
      }
      const PyValue key = parse_value(0);
      if (key.kind != PyValue::Kind::kString) fail("a dict key is not a string");
      skip_ws();
      expect(':');
      const PyValue value = parse_value(0);
      if (key.str == "descr") {
        if (have_descr) fail("duplicate key 'descr'");
        have_descr = true;
        if (value.kind != PyValue::Kind::kString) {
          invalid("'descr' is " + std::string(kind_name(value.kind)) +
                  " (a structured/record dtype); expected a plain dtype such as '<f4'");
        }
        header->descr = value.str;
      } else if (key.str == "fortran_order") {
        if (have_order) fail("duplicate key 'fortran_order'");
        have_order = true;
        if (value.kind != PyValue::Kind::kBool) fail("'fortran_order' is not True or False");
        header->fortran_order = value.boolean;
      } else if (key.str == "shape") {
        if (have_shape) fail("duplicate key 'shape'");
        have_shape = true;
        if (value.kind != PyValue::Kind::kTuple) {
          fail("'shape' is " + std::string(kind_name(value.kind)) + "; expected a tuple");
        }
        header->shape.clear();
        for (const PyValue& item : value.items) {
          if (item.kind != PyValue::Kind::kInt || item.integer < 0) {
            fail("'shape' holds something other than a non-negative integer");
          }
          header->shape.push_back(item.integer);
        }
      }  // other keys: ignored
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_ws();
      if (peek() == '}') {
        ++pos_;
        break;
      }
      fail("expected ',' or '}'");
    }
    skip_ws();
    if (pos_ != text_.size()) fail("unexpected text after the closing '}'");
    if (!have_descr) fail("the key 'descr' is missing");
    if (!have_order) fail("the key 'fortran_order' is missing");
    if (!have_shape) fail("the key 'shape' is missing");
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw_error(ErrorCode::kDataLoss, "file " + path_ + ": bad .npy header: " + what +
                                          " (at header character " + std::to_string(pos_) +
                                          "; header: \"" + excerpt(text_) + "\")");
  }
  [[noreturn]] void invalid(const std::string& what) const {
    throw_error(ErrorCode::kInvalidArgument, "file " + path_ + ": " + what);
  }

  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void skip_ws() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }
  void expect(char c) {
    if (peek() != c || pos_ >= text_.size()) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  bool consume_word(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    const std::size_t end = pos_ + word.size();
    if (end < text_.size() &&
        (std::isalnum(static_cast<unsigned char>(text_[end])) || text_[end] == '_')) {
      return false;
    }
    pos_ = end;
    return true;
  }

  PyValue parse_value(int depth) {
    if (depth > kNpyMaxNesting) fail("values nested too deeply");
    skip_ws();
    PyValue v;
    const char c = peek();
    if (pos_ >= text_.size()) fail("unexpected end of header");
    if (c == '\'' || c == '"') {
      v.kind = PyValue::Kind::kString;
      v.str = parse_string();
    } else if (c == '(' || c == '[') {
      const char close = c == '(' ? ')' : ']';
      ++pos_;
      bool saw_comma = false;
      while (true) {
        skip_ws();
        if (peek() == close && pos_ < text_.size()) {
          ++pos_;
          break;
        }
        v.items.push_back(parse_value(depth + 1));
        skip_ws();
        if (peek() == ',' && pos_ < text_.size()) {
          ++pos_;
          saw_comma = true;
          continue;
        }
        if (peek() == close && pos_ < text_.size()) {
          ++pos_;
          break;
        }
        fail(std::string("expected ',' or '") + close + "'");
      }
      if (c == '(' && v.items.size() == 1 && !saw_comma) {
        PyValue inner = std::move(v.items[0]);  // "(x)" is just x in Python
        return inner;
      }
      v.kind = c == '(' ? PyValue::Kind::kTuple : PyValue::Kind::kList;
    } else if (c == '-' || c == '+' || (c >= '0' && c <= '9')) {
      v.kind = PyValue::Kind::kInt;
      v.integer = parse_int();
    } else if (consume_word("True")) {
      v.kind = PyValue::Kind::kBool;
      v.boolean = true;
    } else if (consume_word("False")) {
      v.kind = PyValue::Kind::kBool;
      v.boolean = false;
    } else if (consume_word("None")) {
      v.kind = PyValue::Kind::kNone;
    } else {
      fail(std::string("unexpected character '") + excerpt(text_.substr(pos_, 1)) + "'");
    }
    return v;
  }

  std::string parse_string() {
    const char quote = text_[pos_++];
    std::string out;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\') {
        ++pos_;
        if (pos_ >= text_.size()) break;
      }
      out.push_back(text_[pos_++]);
    }
    if (pos_ >= text_.size()) fail("unterminated string");
    ++pos_;  // closing quote
    return out;
  }

  std::int64_t parse_int() {
    bool negative = false;
    if (peek() == '-' || peek() == '+') {
      negative = peek() == '-';
      ++pos_;
    }
    if (pos_ >= text_.size() || text_[pos_] < '0' || text_[pos_] > '9') fail("bad integer");
    std::uint64_t value = 0;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      const auto digit = static_cast<std::uint64_t>(text_[pos_] - '0');
      if (value >
          (static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) - digit) / 10) {
        fail("integer too large for 64 bits");
      }
      value = value * 10 + digit;
      ++pos_;
    }
    if (peek() == 'L' && pos_ < text_.size()) ++pos_;  // Python 2 long suffix
    const auto result = static_cast<std::int64_t>(value);
    return negative ? -result : result;
  }

  std::string_view text_;
  const std::string& path_;
  std::size_t pos_ = 0;
};

std::string shape_text(std::span<const std::int64_t> shape) {
  std::string out = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  if (shape.size() == 1) out += ",";
  return out + ")";
}

// The reader's dtypes. Byte order must be little ('<'); '|', '<', '>', '=' are all fine
// for one-byte types.
bool descr_to_dtype(const std::string& descr, DType* dtype) {
  if (descr == "<f4") {
    *dtype = DType::kF32;
    return true;
  }
  if (descr == "<f2") {
    *dtype = DType::kF16;
    return true;
  }
  if (descr == "|u1" || descr == "<u1" || descr == ">u1" || descr == "=u1" || descr == "u1") {
    *dtype = DType::kU8;
    return true;
  }
  return false;
}

}  // namespace

void parse_npy_header_dict(std::string_view text, const std::string& path, NpyHeader* header) {
  HeaderParser(text, path).parse_dict(header);
}

NpyHeader read_npy_header(const Storage& storage, const std::string& path,
                          std::uint64_t file_size) {
  std::array<unsigned char, kNpyPrefixBytesV2> prefix{};
  const std::uint64_t head = std::min<std::uint64_t>(file_size, prefix.size());
  storage.read_range(path, 0, head, prefix.data());
  if (head < kNpyMagicBytes || std::memcmp(prefix.data(), kNpyMagic, kNpyMagicBytes) != 0) {
    throw_error(ErrorCode::kDataLoss, "file " + path +
                                          ": not an .npy file (bad magic; expected the 6 bytes "
                                          "\\x93NUMPY at offset 0)");
  }
  NpyHeader header;
  if (head < kNpyPrefixBytesV1) {
    throw_error(ErrorCode::kDataLoss, "file " + path + ": truncated .npy header (" +
                                          std::to_string(file_size) + " bytes)");
  }
  header.major = prefix[6];
  header.minor = prefix[7];
  if (header.major < 1 || header.major > 3 || header.minor != 0) {
    throw_error(ErrorCode::kDataLoss, "file " + path + ": unsupported .npy format version " +
                                          std::to_string(header.major) + "." +
                                          std::to_string(header.minor) +
                                          "; expected 1.0, 2.0 or 3.0");
  }
  std::uint64_t prefix_bytes = kNpyPrefixBytesV1;
  std::uint64_t header_len = load_u16_le(prefix.data() + 8);
  if (header.major >= 2) {
    prefix_bytes = kNpyPrefixBytesV2;
    if (head < kNpyPrefixBytesV2) {
      throw_error(ErrorCode::kDataLoss, "file " + path + ": truncated .npy header (" +
                                            std::to_string(file_size) + " bytes)");
    }
    header_len = load_u32_le(prefix.data() + 8);
  }
  if (header_len > kNpyMaxHeaderBytes) {
    throw_error(ErrorCode::kDataLoss, "file " + path + ": .npy header length " +
                                          std::to_string(header_len) + " exceeds the limit of " +
                                          std::to_string(kNpyMaxHeaderBytes) + " bytes");
  }
  if (prefix_bytes + header_len > file_size) {
    throw_error(ErrorCode::kDataLoss, "file " + path + ": expected at least " +
                                          std::to_string(prefix_bytes + header_len) +
                                          " bytes (the .npy header), found " +
                                          std::to_string(file_size) + ": truncated");
  }
  std::string text(static_cast<std::size_t>(header_len), '\0');
  storage.read_range(path, prefix_bytes, header_len, text.data());
  parse_npy_header_dict(text, path, &header);
  header.data_offset = prefix_bytes + header_len;
  return header;
}

std::unique_ptr<VectorReader> open_npy(const Storage& storage, const std::string& path) {
  const std::uint64_t file_size = storage.size(path);
  const NpyHeader h = read_npy_header(storage, path, file_size);
  DType dtype = DType::kF32;
  if (!descr_to_dtype(h.descr, &dtype)) {
    throw_error(ErrorCode::kInvalidArgument,
                "file " + path + ": dtype '" + excerpt(h.descr) +
                    "' is not supported; expected '<f4' (float32), '<f2' (float16) or '|u1' "
                    "(uint8)");
  }
  if (h.fortran_order) {
    throw_error(ErrorCode::kInvalidArgument,
                "file " + path +
                    ": array is in Fortran (column-major) order; expected C "
                    "order (save np.ascontiguousarray(x) instead)");
  }
  if (h.shape.size() != 2) {
    throw_error(ErrorCode::kInvalidArgument,
                "file " + path + ": shape " + shape_text(h.shape) + " has " +
                    std::to_string(h.shape.size()) +
                    (h.shape.size() == 1 ? " dimension" : " dimensions") +
                    "; expected 2 (rows, dim)");
  }
  const std::int64_t rows = h.shape[0];
  const std::int64_t dim = h.shape[1];
  if (dim < 1 || dim > kMaxDim) {
    throw_error(ErrorCode::kInvalidArgument,
                "file " + path + ": shape " + shape_text(h.shape) + ": dim " + std::to_string(dim) +
                    " is outside [1, " + std::to_string(kMaxDim) + "]");
  }
  std::uint64_t data_bytes = 0;
  std::uint64_t expected = 0;
  if (!checked_mul(static_cast<std::uint64_t>(rows), static_cast<std::uint64_t>(dim),
                   &data_bytes) ||
      !checked_mul(data_bytes, dtype_size(dtype), &data_bytes) ||
      !checked_add(data_bytes, h.data_offset, &expected) ||
      expected > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    throw_error(ErrorCode::kDataLoss, "file " + path + ": shape " + shape_text(h.shape) +
                                          " is too large for a 64-bit file size");
  }
  check_file_size(path, expected, file_size,
                  std::to_string(h.data_offset) + " header + " + std::to_string(rows) + " rows x " +
                      std::to_string(dim) + " x " + std::to_string(dtype_size(dtype)) + " bytes");
  return std::make_unique<DenseVectorReader>(storage, path, VectorFormat::kNpy, h.data_offset, rows,
                                             dim, dtype);
}

std::string make_npy_header(std::string_view descr, std::span<const std::int64_t> shape) {
  const std::string dict = "{'descr': '" + std::string(descr) +
                           "', 'fortran_order': False, 'shape': " + shape_text(shape) + ", }";
  std::uint64_t prefix = kNpyPrefixBytesV1;
  if (dict.size() + 1 + kNpyAlign > 0xFFFF) prefix = kNpyPrefixBytesV2;
  const std::uint64_t unpadded = prefix + dict.size() + 1;  // + '\n'
  const std::uint64_t pad = (kNpyAlign - unpadded % kNpyAlign) % kNpyAlign;
  const std::uint64_t header_len = dict.size() + pad + 1;
  std::string out(kNpyMagic, kNpyMagicBytes);
  out.push_back(static_cast<char>(prefix == kNpyPrefixBytesV1 ? 1 : 2));
  out.push_back(0);
  const int len_bytes = prefix == kNpyPrefixBytesV1 ? 2 : 4;
  for (int i = 0; i < len_bytes; ++i) {
    out.push_back(static_cast<char>((header_len >> (8 * i)) & 0xFF));
  }
  out += dict;
  out.append(static_cast<std::size_t>(pad), ' ');
  out.push_back('\n');
  return out;
}

}  // namespace io

// ---- write_npy ------------------------------------------------------------------------

std::size_t npy_type_size(NpyType type) noexcept {
  switch (type) {
    case NpyType::kF32: return 4;
    case NpyType::kF16: return 2;
    case NpyType::kU8: return 1;
    case NpyType::kI32: return 4;
    case NpyType::kI64: return 8;
  }
  return 0;
}

const char* npy_type_descr(NpyType type) noexcept {
  switch (type) {
    case NpyType::kF32: return "<f4";
    case NpyType::kF16: return "<f2";
    case NpyType::kU8: return "|u1";
    case NpyType::kI32: return "<i4";
    case NpyType::kI64: return "<i8";
  }
  return "?";
}

namespace {

// Checks the shape and returns the number of elements.
std::uint64_t checked_elements(const std::string& path, std::span<const std::int64_t> shape,
                               NpyType type) {
  if (shape.size() != 1 && shape.size() != 2) {
    throw_error(ErrorCode::kInvalidArgument, "write_npy " + path + ": shape has " +
                                                 std::to_string(shape.size()) +
                                                 " dimensions; expected 1 or 2");
  }
  std::uint64_t elements = 1;
  for (const std::int64_t extent : shape) {
    if (extent < 0) {
      throw_error(ErrorCode::kInvalidArgument, "write_npy " + path + ": negative extent " +
                                                   std::to_string(extent) + " in shape " +
                                                   io::shape_text(shape));
    }
    std::uint64_t bytes = 0;
    if (!io::checked_mul(elements, static_cast<std::uint64_t>(extent), &elements) ||
        !io::checked_mul(elements, npy_type_size(type), &bytes) ||
        bytes > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      throw_error(ErrorCode::kInvalidArgument,
                  "write_npy " + path + ": shape " + io::shape_text(shape) + " is too large");
    }
  }
  return elements;
}

NpyType npy_type_of(DType dtype, const std::string& path) {
  switch (dtype) {
    case DType::kF32: return NpyType::kF32;
    case DType::kF16: return NpyType::kF16;
    case DType::kU8: return NpyType::kU8;
    case DType::kBF16: break;
  }
  throw_error(ErrorCode::kInvalidArgument,
              "write_npy " + path + ": numpy has no bf16 dtype; pass NpyType::kF32 or kF16");
}

}  // namespace

void write_npy(Storage& storage, const std::string& path, const void* data, NpyType type,
               std::span<const std::int64_t> shape) {
  const std::uint64_t elements = checked_elements(path, shape, type);
  if (elements > 0 && data == nullptr) {
    throw_error(ErrorCode::kInvalidArgument,
                "write_npy " + path + ": null data for shape " + io::shape_text(shape));
  }
  const std::string header = io::make_npy_header(npy_type_descr(type), shape);
  const std::array<ByteSpan, 2> pieces{ByteSpan{header.data(), header.size()},
                                       ByteSpan{data, elements * npy_type_size(type)}};
  storage.write_atomic_gather(path, pieces);
}

namespace {
template <typename T>
void write_typed(Storage& storage, const std::string& path, std::span<const T> data, NpyType type,
                 std::span<const std::int64_t> shape) {
  const std::uint64_t elements = checked_elements(path, shape, type);
  if (elements != data.size()) {
    throw_error(ErrorCode::kInvalidArgument,
                "write_npy " + path + ": shape " + io::shape_text(shape) + " holds " +
                    std::to_string(elements) + " elements but data has " +
                    std::to_string(data.size()));
  }
  write_npy(storage, path, data.data(), type, shape);
}
}  // namespace

void write_npy(Storage& storage, const std::string& path, std::span<const float> data,
               std::span<const std::int64_t> shape) {
  write_typed(storage, path, data, NpyType::kF32, shape);
}
void write_npy(Storage& storage, const std::string& path, std::span<const std::int32_t> data,
               std::span<const std::int64_t> shape) {
  write_typed(storage, path, data, NpyType::kI32, shape);
}
void write_npy(Storage& storage, const std::string& path, std::span<const std::int64_t> data,
               std::span<const std::int64_t> shape) {
  write_typed(storage, path, data, NpyType::kI64, shape);
}

void write_npy(Storage& storage, const std::string& path, const MatrixView& matrix,
               std::optional<NpyType> type) {
  validate_view(matrix, ("write_npy " + path).c_str());
  const NpyType out_type = type ? *type : npy_type_of(matrix.dtype, path);
  if (out_type != NpyType::kF32 && out_type != NpyType::kF16 && out_type != NpyType::kU8) {
    throw_error(ErrorCode::kInvalidArgument, "write_npy " + path +
                                                 ": a matrix is written as f32, f16 or u8, not " +
                                                 npy_type_descr(out_type));
  }
  const std::array<std::int64_t, 2> shape{matrix.rows, matrix.dim};
  const std::uint64_t elements = checked_elements(path, shape, out_type);
  const std::string header = io::make_npy_header(npy_type_descr(out_type), shape);
  const std::uint64_t row_bytes = static_cast<std::uint64_t>(matrix.dim) * npy_type_size(out_type);
  const bool same_type = (out_type == NpyType::kF32 && matrix.dtype == DType::kF32) ||
                         (out_type == NpyType::kF16 && matrix.dtype == DType::kF16) ||
                         (out_type == NpyType::kU8 && matrix.dtype == DType::kU8);
  std::vector<ByteSpan> pieces;
  pieces.push_back(ByteSpan{header.data(), header.size()});
  std::vector<unsigned char> converted;
  if (same_type && (matrix.stride == matrix.dim || matrix.rows <= 1)) {
    pieces.push_back(ByteSpan{matrix.data, elements * npy_type_size(out_type)});
  } else if (same_type) {
    pieces.reserve(static_cast<std::size_t>(matrix.rows) + 1);
    for (std::int64_t i = 0; i < matrix.rows; ++i) {
      pieces.push_back(ByteSpan{matrix.row(i), row_bytes});
    }
  } else {
    const DType out_dtype = out_type == NpyType::kF32   ? DType::kF32
                            : out_type == NpyType::kF16 ? DType::kF16
                                                        : DType::kU8;
    converted.resize(static_cast<std::size_t>(elements * npy_type_size(out_type)));
    std::vector<float> row_f32(static_cast<std::size_t>(matrix.dim));
    for (std::int64_t i = 0; i < matrix.rows; ++i) {
      convert_to_f32(matrix.dtype, matrix.row(i), row_f32.size(), row_f32.data());
      convert_from_f32(row_f32.data(), row_f32.size(), out_dtype,
                       converted.data() + static_cast<std::uint64_t>(i) * row_bytes);
    }
    pieces.push_back(ByteSpan{converted.data(), converted.size()});
  }
  storage.write_atomic_gather(path, pieces);
}

}  // namespace megatax
