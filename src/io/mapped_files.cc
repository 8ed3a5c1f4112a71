#include "io/mapped_files.h"

#include <sys/mman.h>

#include <cstring>
#include <mutex>

namespace megatax::io {

struct MappedFiles::Mapping {
  dev_t dev = 0;
  ino_t ino = 0;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  const unsigned char* data = nullptr;
  Storage::MappedBytes bytes;  // {data, size}, for whole()
  std::atomic<std::uint64_t> last_use{0};
  ~Mapping() {
    if (data != nullptr) ::munmap(const_cast<unsigned char*>(data), static_cast<std::size_t>(size));
  }
  static std::int64_t mtime_of(const struct stat& st) {
    return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  }
  bool same_file(const struct stat& st) const {
    return dev == st.st_dev && ino == st.st_ino && size == static_cast<std::uint64_t>(st.st_size) &&
           mtime_ns == mtime_of(st);
  }
};

std::shared_ptr<const MappedFiles::Mapping> MappedFiles::find(const std::string& path, const struct stat& st) {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  const auto it = by_path_.find(path);
  if (it == by_path_.end() || !it->second->same_file(st)) return nullptr;
  it->second->last_use.store(uses_.fetch_add(1, std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  return it->second;
}

std::shared_ptr<const MappedFiles::Mapping> MappedFiles::map(const std::string& path, int fd, const struct stat& st) {
  // Mapped outside the lock; two threads mapping one file at once each map it, and the
  // second's mapping replaces the first's in the cache (the first lives on with its copies).
  const auto size = static_cast<std::uint64_t>(st.st_size);
  void* addr = ::mmap(nullptr, static_cast<std::size_t>(size), PROT_READ, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) return nullptr;
  auto m = std::make_shared<Mapping>();
  m->dev = st.st_dev;
  m->ino = st.st_ino;
  m->size = size;
  m->mtime_ns = Mapping::mtime_of(st);
  m->data = static_cast<const unsigned char*>(addr);
  m->bytes = Storage::MappedBytes{m->data, size};
  m->last_use = uses_.fetch_add(1, std::memory_order_relaxed) + 1;
  std::unique_lock<std::shared_mutex> lock(mutex_);
  auto& slot = by_path_[path];
  if (slot != nullptr) mapped_bytes_ -= slot->size;
  slot = m;
  mapped_bytes_ += size;
  // Over the limits: drop the least recently used (a scan: it happens once a file at most).
  while (by_path_.size() > 1 && (by_path_.size() > max_files_ || mapped_bytes_ > max_bytes_)) {
    auto oldest = by_path_.end();
    for (auto it = by_path_.begin(); it != by_path_.end(); ++it)
      if (it->second != m && (oldest == by_path_.end() || it->second->last_use < oldest->second->last_use))
        oldest = it;
    mapped_bytes_ -= oldest->second->size;
    by_path_.erase(oldest);
  }
  return m;
}

bool MappedFiles::copy(const std::string& path, int fd, const struct stat& st,
                       std::span<const Storage::ReadRequest> requests) {
  if (!S_ISREG(st.st_mode) || st.st_size <= 0) return false;
  const auto size = static_cast<std::uint64_t>(st.st_size);
  for (const Storage::ReadRequest& r : requests)
    if (r.offset > size || r.length > size - r.offset) return false;
  std::shared_ptr<const Mapping> m = find(path, st);
  if (m == nullptr) m = map(path, fd, st);
  if (m == nullptr) return false;
  for (const Storage::ReadRequest& r : requests)
    if (r.length > 0) std::memcpy(r.dst, m->data + r.offset, static_cast<std::size_t>(r.length));
  return true;
}

std::shared_ptr<const Storage::MappedBytes> MappedFiles::whole(const std::string& path, int fd, const struct stat& st) {
  if (!S_ISREG(st.st_mode) || st.st_size <= 0) return nullptr;
  std::shared_ptr<const Mapping> m = find(path, st);
  if (m == nullptr) m = map(path, fd, st);
  if (m == nullptr) return nullptr;
  return std::shared_ptr<const Storage::MappedBytes>(m, &m->bytes);  // (keeps the mapping)
}

}  // namespace megatax::io
