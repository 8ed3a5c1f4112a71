// Storage helpers shared by every implementation: glob matching, URI dispatch, read_all.
#include "megatax/storage.h"

#include <cctype>
#include <string>

#include "io/arrow_storage.h"
#include "io/memory_storage.h"
#include "io/path.h"
#include "io/posix_storage.h"
#include "megatax/error.h"

namespace megatax {

void Storage::read_ranges(const std::string& path, std::span<const ReadRequest> requests) const {
  for (const ReadRequest& r : requests) read_range(path, r.offset, r.length, r.dst);
}

std::shared_ptr<const Storage::MappedBytes> Storage::map_read_only(const std::string& path) const {
  (void)size(path);  // its errors (a missing path: kNotFound); no mapping here
  return nullptr;
}

void Storage::write_atomic_stream(const std::string& path, const PieceSource& next) {
  std::vector<ByteSpan> pieces;
  ByteSpan piece;
  while (next(&piece)) pieces.push_back(piece);
  write_atomic_gather(path, pieces);
}

void Storage::write_atomic(const std::string& path, const void* data, std::uint64_t size) {
  const ByteSpan piece{data, size};
  write_atomic_gather(path, std::span<const ByteSpan>(&piece, 1));
}

std::string read_all(const Storage& storage, const std::string& path) {
  const std::uint64_t size = storage.size(path);
  if (size > static_cast<std::uint64_t>(std::string().max_size())) {
    throw_error(ErrorCode::kResourceExhausted,
                "file " + path + ": " + std::to_string(size) + " bytes do not fit in memory");
  }
  std::string bytes(static_cast<std::size_t>(size), '\0');
  storage.read_range(path, 0, size, bytes.data());
  return bytes;
}

namespace {

// Matches the bracket expression that starts at pattern[open] == '[' against c.
// Returns 1 (match) or 0 (no match) and sets *next past the closing ']', or -1 if the
// expression is unterminated (then '[' is an ordinary character).
int match_bracket(std::string_view pattern, std::size_t open, char c, std::size_t* next) {
  std::size_t j = open + 1;
  bool negate = false;
  if (j < pattern.size() && (pattern[j] == '!' || pattern[j] == '^')) {
    negate = true;
    ++j;
  }
  bool matched = false;
  bool first = true;
  const auto uc = static_cast<unsigned char>(c);
  while (j < pattern.size()) {
    char lo = pattern[j];
    if (lo == ']' && !first) {
      *next = j + 1;
      if (c == '/') return 0;
      return matched != negate ? 1 : 0;
    }
    first = false;
    if (lo == '\\' && j + 1 < pattern.size()) lo = pattern[++j];
    ++j;
    char hi = lo;
    if (j + 1 < pattern.size() && pattern[j] == '-' && pattern[j + 1] != ']') {
      j += 1;
      hi = pattern[j];
      if (hi == '\\' && j + 1 < pattern.size()) hi = pattern[++j];
      ++j;
    }
    if (static_cast<unsigned char>(lo) <= uc && uc <= static_cast<unsigned char>(hi)) {
      matched = true;
    }
  }
  return -1;
}

bool is_scheme(std::string_view s) {
  if (s.empty() || !std::isalpha(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s) {
    const auto uc = static_cast<unsigned char>(c);
    if (!std::isalnum(uc) && c != '+' && c != '-' && c != '.') return false;
  }
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view text, std::string_view uri) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    const int hi = i + 1 < text.size() ? hex_value(text[i + 1]) : -1;
    const int lo = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      throw_error(ErrorCode::kInvalidArgument,
                  "URI '" + std::string(uri) + "': bad percent escape at character " +
                      std::to_string(i) + " (expected %XX with two hex digits)");
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

bool has_glob_wildcard(std::string_view text) noexcept {
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\') {
      ++i;
      continue;
    }
    if (text[i] == '*' || text[i] == '?' || text[i] == '[') return true;
  }
  return false;
}

bool glob_match(std::string_view pattern, std::string_view name) noexcept {
  // A leading '.' of the name must be matched by a literal '.' (shell rule).
  if (!name.empty() && name[0] == '.') {
    const bool literal_dot = (!pattern.empty() && pattern[0] == '.') ||
                             (pattern.size() >= 2 && pattern[0] == '\\' && pattern[1] == '.');
    if (!literal_dot) return false;
  }
  constexpr std::size_t kNone = std::string_view::npos;
  std::size_t p = 0;
  std::size_t n = 0;
  std::size_t star_p = kNone;  // pattern position just after the last '*'
  std::size_t star_n = 0;      // name position that '*' is currently matched up to
  while (n < name.size()) {
    bool advanced = false;
    if (p < pattern.size()) {
      const char pc = pattern[p];
      if (pc == '*') {
        star_p = ++p;
        star_n = n;
        continue;
      }
      if (pc == '?') {
        if (name[n] != '/') {
          ++p;
          ++n;
          advanced = true;
        }
      } else if (pc == '[') {
        std::size_t next = 0;
        const int r = match_bracket(pattern, p, name[n], &next);
        if (r == 1) {
          p = next;
          ++n;
          advanced = true;
        } else if (r == -1 && name[n] == '[') {
          ++p;
          ++n;
          advanced = true;
        }
      } else if (pc == '\\' && p + 1 < pattern.size()) {
        if (name[n] == pattern[p + 1]) {
          p += 2;
          ++n;
          advanced = true;
        }
      } else if (pc == name[n]) {
        ++p;
        ++n;
        advanced = true;
      }
    }
    if (advanced) continue;
    // Mismatch: let the last '*' swallow one more character, if it can.
    if (star_p != kNone && name[star_n] != '/') {
      ++star_n;
      n = star_n;
      p = star_p;
      continue;
    }
    return false;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

namespace io {

std::string_view base_name(std::string_view path) noexcept {
  const std::size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::string parent_dir(std::string_view path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return "";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

GlobPattern parse_glob_pattern(const std::string& pattern) {
  const std::size_t slash = pattern.rfind('/');
  GlobPattern g;
  if (slash == std::string::npos) {
    g = GlobPattern{std::string(1, '.'), std::string(), pattern, false};
  } else {
    g = GlobPattern{slash == 0 ? std::string(1, '/') : pattern.substr(0, slash),
                    pattern.substr(0, slash + 1), pattern.substr(slash + 1), false};
  }
  if (has_glob_wildcard(g.prefix)) {
    throw_error(
        ErrorCode::kInvalidArgument,
        "glob pattern '" + pattern + "': wildcards are supported in the last path component only");
  }
  if (g.name_pattern.empty()) {
    throw_error(ErrorCode::kInvalidArgument,
                "glob pattern '" + pattern + "': empty file-name part (ends with '/')");
  }
  g.literal = !has_glob_wildcard(g.name_pattern) && g.name_pattern.find('\\') == std::string::npos;
  return g;
}

}  // namespace io

std::unique_ptr<Storage> open_storage_for_uri(std::string_view uri, std::string* path) {
  if (uri.empty()) throw_error(ErrorCode::kInvalidArgument, "empty storage URI or path");
  const std::size_t sep = uri.find("://");
  if (sep == std::string_view::npos || !is_scheme(uri.substr(0, sep))) {
    if (path != nullptr) *path = std::string(uri);
    return std::make_unique<io::PosixStorage>();
  }
  const std::string scheme = lower(uri.substr(0, sep));
  const std::string_view rest = uri.substr(sep + 3);
  if (scheme == "file") {
    std::string_view host;
    std::string_view local = rest;
    if (rest.empty() || rest[0] != '/') {
      const std::size_t slash = rest.find('/');
      host = rest.substr(0, slash);
      local = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
    }
    if (!host.empty() && lower(host) != "localhost") {
      throw_error(ErrorCode::kInvalidArgument,
                  "URI '" + std::string(uri) + "': file URIs name local files only (host '" +
                      std::string(host) + "'); expected file:///absolute/path");
    }
    if (local.empty()) {
      throw_error(ErrorCode::kInvalidArgument,
                  "URI '" + std::string(uri) + "': no path; expected file:///absolute/path");
    }
    std::string decoded = percent_decode(local, uri);  // validates even when unused
    if (path != nullptr) *path = std::move(decoded);
    return std::make_unique<io::PosixStorage>();
  }
  if (scheme == "mem") {
    if (path != nullptr) *path = std::string(rest);
    return std::make_unique<io::MemoryStorage>();
  }
  if (scheme == "s3" || scheme == "gs" || scheme == "gcs" || scheme == "hdfs" ||
      scheme == "viewfs" || scheme == "abfs" || scheme == "abfss" || scheme == "az") {
    return io::open_arrow_storage(uri, path);  // kUnimplemented when built without Arrow
  }
  throw_error(ErrorCode::kInvalidArgument,
              "URI '" + std::string(uri) + "': unknown scheme '" + scheme +
                  "'; expected a plain path, file://, mem://, s3://, gs:// or hdfs://");
}

}  // namespace megatax
