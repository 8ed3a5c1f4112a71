#include "io/memory_storage.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "io/path.h"
#include "megatax/error.h"

namespace megatax::io {
namespace {

std::string normalize(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  for (char c : path) {
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out.push_back(c);
  }
  while (out.size() >= 2 && out[0] == '.' && out[1] == '/') out.erase(0, 2);
  if (out == ".") out.clear();
  if (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

// Prefix that every child key of directory `key` starts with.
std::string child_prefix(const std::string& key) {
  if (key.empty()) return "";
  if (key == "/") return "/";
  return key + "/";
}

// Ancestors of key, nearest last ("a/b/c" -> "a", "a/b"; "/a/b" -> "/", "/a").
std::vector<std::string> ancestors(const std::string& key) {
  std::vector<std::string> out;
  if (!key.empty() && key[0] == '/' && key.size() > 1) out.emplace_back("/");
  for (std::size_t pos = key.find('/', 1); pos != std::string::npos; pos = key.find('/', pos + 1)) {
    out.push_back(key.substr(0, pos));
  }
  return out;
}

}  // namespace

bool MemoryStorage::is_dir_locked(const std::string& key) const {
  if (key.empty() || key == "/") return true;
  if (dirs_.count(key) != 0) return true;
  const std::string prefix = child_prefix(key);
  const auto it = files_.lower_bound(prefix);
  return it != files_.end() && it->first.compare(0, prefix.size(), prefix) == 0;
}

const std::string* MemoryStorage::find_file_locked(const std::string& key) const {
  const auto it = files_.find(key);
  return it == files_.end() ? nullptr : it->second.get();
}

void MemoryStorage::read_range(const std::string& path, std::uint64_t offset, std::uint64_t length,
                               void* dst) const {
  const std::string key = normalize(path);
  std::shared_ptr<const std::string> value;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = files_.find(key);
    if (it == files_.end()) {
      if (is_dir_locked(key)) {
        throw_error(ErrorCode::kInvalidArgument, "cannot read " + path + ": is a directory");
      }
      throw_error(ErrorCode::kNotFound, "cannot open " + path + ": no such file (memory)");
    }
    value = it->second;
  }
  const std::uint64_t size = value->size();
  if (offset > size || length > size - offset) {
    const std::uint64_t got = offset > size ? 0 : size - offset;
    throw_error(ErrorCode::kDataLoss, "short read: file " + path + ": wanted " +
                                          std::to_string(length) + " bytes at offset " +
                                          std::to_string(offset) + ", got " + std::to_string(got) +
                                          " (file is " + std::to_string(size) + " bytes)");
  }
  if (length > 0) std::memcpy(dst, value->data() + offset, static_cast<std::size_t>(length));
}

std::uint64_t MemoryStorage::size(const std::string& path) const {
  const std::string key = normalize(path);
  std::lock_guard<std::mutex> lock(mu_);
  if (const std::string* v = find_file_locked(key)) return v->size();
  if (is_dir_locked(key)) {
    throw_error(ErrorCode::kInvalidArgument, "size of " + path + ": is a directory, not a file");
  }
  throw_error(ErrorCode::kNotFound, "cannot stat " + path + ": no such file (memory)");
}

bool MemoryStorage::exists(const std::string& path) const {
  const std::string key = normalize(path);
  std::lock_guard<std::mutex> lock(mu_);
  return find_file_locked(key) != nullptr || is_dir_locked(key);
}

void MemoryStorage::write_atomic_gather(const std::string& path, std::span<const ByteSpan> pieces) {
  const std::string key = normalize(path);
  const std::string_view name = base_name(key);
  if (name.empty() || name == "." || name == "..") {
    throw_error(ErrorCode::kInvalidArgument,
                "write of '" + path + "': expected a file path, not a directory");
  }
  // Build the new value outside the lock.
  std::uint64_t total = 0;
  for (const ByteSpan& piece : pieces) {
    if (piece.size > 0 && piece.data == nullptr) {
      throw_error(ErrorCode::kInvalidArgument, "write of " + path + ": null data for a piece of " +
                                                   std::to_string(piece.size) + " bytes");
    }
    if (piece.size > std::numeric_limits<std::uint64_t>::max() - total) {
      throw_error(ErrorCode::kInvalidArgument, "write of " + path + ": total size overflows");
    }
    total += piece.size;
  }
  if (total > static_cast<std::uint64_t>(std::string().max_size())) {
    throw_error(ErrorCode::kResourceExhausted,
                "write of " + path + ": " + std::to_string(total) + " bytes do not fit in memory");
  }
  auto value = std::make_shared<std::string>();
  value->reserve(static_cast<std::size_t>(total));
  for (const ByteSpan& piece : pieces) {
    if (piece.size > 0) {
      value->append(static_cast<const char*>(piece.data), static_cast<std::size_t>(piece.size));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& a : ancestors(key)) {
    if (files_.count(a) != 0) {
      std::string msg = "write of " + path;
      msg += ": parent " + a + " is a file, not a directory";
      throw_error(ErrorCode::kInvalidArgument, msg);
    }
  }
  if (files_.count(key) == 0 && is_dir_locked(key)) {
    throw_error(ErrorCode::kInvalidArgument, "write of " + path + ": is a directory");
  }
  for (const std::string& a : ancestors(key)) dirs_.insert(a);
  files_[key] = std::move(value);
}

std::vector<std::string> MemoryStorage::list(const std::string& dir) const {
  const std::string key = normalize(dir);
  std::lock_guard<std::mutex> lock(mu_);
  if (find_file_locked(key) != nullptr) {
    throw_error(ErrorCode::kInvalidArgument, "cannot list " + dir + ": not a directory");
  }
  if (!is_dir_locked(key)) {
    throw_error(ErrorCode::kNotFound, "cannot list " + dir + ": no such directory (memory)");
  }
  const std::string prefix = child_prefix(key);
  std::set<std::string> names;
  auto add_child = [&](const std::string& k) {
    if (k.size() <= prefix.size() || k.compare(0, prefix.size(), prefix) != 0) return false;
    if (prefix.empty() && k[0] == '/') return true;  // absolute keys are not under ""
    const std::size_t end = k.find('/', prefix.size());
    names.insert(k.substr(prefix.size(), end == std::string::npos ? end : end - prefix.size()));
    return true;
  };
  for (auto it = files_.lower_bound(prefix); it != files_.end() && add_child(it->first); ++it) {
  }
  for (auto it = dirs_.lower_bound(prefix); it != dirs_.end() && add_child(*it); ++it) {
  }
  return std::vector<std::string>(names.begin(), names.end());
}

std::vector<std::string> MemoryStorage::glob(const std::string& pattern) const {
  const GlobPattern g = parse_glob_pattern(pattern);
  std::vector<std::string> out;
  std::lock_guard<std::mutex> lock(mu_);
  if (g.literal) {
    if (find_file_locked(normalize(pattern)) != nullptr) out.push_back(pattern);
    return out;
  }
  const std::string prefix = child_prefix(normalize(g.dir));
  for (auto it = files_.lower_bound(prefix); it != files_.end(); ++it) {
    const std::string& k = it->first;
    if (k.compare(0, prefix.size(), prefix) != 0) break;
    if (prefix.empty() && !k.empty() && k[0] == '/') continue;
    const std::string_view name = std::string_view(k).substr(prefix.size());
    if (name.empty() || name.find('/') != std::string_view::npos) continue;
    if (glob_match(g.name_pattern, name)) out.push_back(g.prefix + std::string(name));
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool MemoryStorage::remove(const std::string& path) {
  const std::string key = normalize(path);
  std::lock_guard<std::mutex> lock(mu_);
  if (files_.erase(key) != 0) return true;
  const std::string prefix = child_prefix(key);
  const auto file_child = files_.lower_bound(prefix);
  const auto dir_child = dirs_.upper_bound(prefix);
  const bool has_children =
      (file_child != files_.end() && file_child->first.compare(0, prefix.size(), prefix) == 0) ||
      (dir_child != dirs_.end() && dir_child->compare(0, prefix.size(), prefix) == 0);
  if (has_children && !key.empty() && key != "/") {
    throw_error(ErrorCode::kIoError, "cannot remove " + path + ": directory not empty (ENOTEMPTY)");
  }
  return dirs_.erase(key) != 0;
}

void MemoryStorage::make_dirs(const std::string& path) {
  const std::string key = normalize(path);
  if (key.empty() || key == "/") return;
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> chain = ancestors(key);
  chain.push_back(key);
  for (const std::string& a : chain) {
    if (files_.count(a) != 0) {
      std::string msg = "cannot create directory " + path;
      msg += ": " + a + " exists and is not a directory";
      throw_error(ErrorCode::kInvalidArgument, msg);
    }
  }
  for (const std::string& a : chain) dirs_.insert(a);
}

std::size_t MemoryStorage::file_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return files_.size();
}

}  // namespace megatax::io
