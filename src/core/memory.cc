#include "core/memory.h"

#include <atomic>
#include <cstdint>

#include "core/parallel.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace megatax {

void advise_huge_pages(void* p, std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t kHuge = std::uintptr_t{2} << 20;
  const auto begin = (reinterpret_cast<std::uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const auto end = (reinterpret_cast<std::uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p, (void)bytes;
#endif
}

bool populate_pages(void* p, std::size_t bytes, int threads) noexcept {
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
  constexpr std::uintptr_t kPage = 4096;
  constexpr std::uintptr_t kChunk = std::uintptr_t{64} << 20;  // per task
  const auto begin = reinterpret_cast<std::uintptr_t>(p) & ~(kPage - 1);
  const auto end = (reinterpret_cast<std::uintptr_t>(p) + bytes + kPage - 1) & ~(kPage - 1);
  if (bytes == 0) return true;
  const auto tasks = static_cast<std::int64_t>((end - begin + kChunk - 1) / kChunk);
  std::atomic<bool> ok{true};
  try {
    parallel_for(resolve_threads(threads, tasks), tasks, [&](std::int64_t t, int) {
      const std::uintptr_t b = begin + static_cast<std::uintptr_t>(t) * kChunk;
      const std::uintptr_t e = b + kChunk < end ? b + kChunk : end;
      if (::madvise(reinterpret_cast<void*>(b), e - b, MADV_POPULATE_WRITE) != 0) ok = false;
    });
  } catch (...) {  // threads could not be started: the first touch will fault the pages
    return false;
  }
  return ok;
#else
  (void)p, (void)bytes, (void)threads;
  return false;
#endif
}

}  // namespace megatax
