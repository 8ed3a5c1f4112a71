// populate_pages against the kernel's own account (mincore): a fresh mapping has no resident
// page, and after the call every page of the range is resident, still zero, and writable.
#include "core/memory.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <random>
#include <vector>

namespace megatax {
namespace {

std::size_t resident_pages(void* p, std::size_t bytes) {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> v((bytes + page - 1) / page);
  EXPECT_EQ(::mincore(p, bytes, v.data()), 0);
  std::size_t n = 0;
  for (unsigned char c : v) n += c & 1;
  return n;
}

TEST(PopulatePages, FaultsInEveryPageOfTheRangeOnSeveralThreads) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  // Over 64 MiB (several tasks), not a whole number of pages or chunks.
  const std::size_t bytes = (std::size_t{70} << 20) + 12345 + rng() % 100000;
  void* map = ::mmap(nullptr, bytes + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* base = static_cast<unsigned char*>(map);
  ::madvise(map, bytes + 2 * page, MADV_NOHUGEPAGE);  // count 4 KiB pages exactly
  ASSERT_EQ(resident_pages(map, bytes + 2 * page), 0u);
  // A range starting inside the first page and ending inside the last one.
  unsigned char* p = base + 100;
  if (!populate_pages(p, bytes, 3)) {
    ::munmap(map, bytes + 2 * page);
    GTEST_SKIP() << "MADV_POPULATE_WRITE is not available here (Linux < 5.14)";
  }
  const std::size_t want = (100 + bytes + page - 1) / page;
  EXPECT_EQ(resident_pages(map, want * page), want);
  EXPECT_EQ(resident_pages(base + want * page, page), 0u) << "a page past the range was faulted in";
  for (std::size_t i = 0; i < bytes; i += 4093) ASSERT_EQ(p[i], 0) << "byte " << i;
  for (std::size_t i = 0; i < bytes; i += 4093) p[i] = static_cast<unsigned char>(i);
  for (std::size_t i = 0; i < bytes; i += 4093) ASSERT_EQ(p[i], static_cast<unsigned char>(i));
  EXPECT_TRUE(populate_pages(p, 0, 2));
  ::munmap(map, bytes + 2 * page);
}

TEST(PopulatePages, AnUnmappedRangeIsReportedNotFatal) {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  void* map = ::mmap(nullptr, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(map, MAP_FAILED);
  ASSERT_EQ(::munmap(static_cast<unsigned char*>(map) + 2 * page, 2 * page), 0);  // a hole
  EXPECT_FALSE(populate_pages(map, 4 * page, 2));
  ::munmap(map, 2 * page);
}

}  // namespace
}  // namespace megatax
