// core/memory.h -- hints about how the process uses its memory.
#pragma once

#include <cstddef>

namespace megatax {

// Asks the kernel to back the whole 2 MiB pages inside [p, p + bytes) with transparent huge
// pages (Linux, THP in "madvise" or "always" mode). Call before the memory is first touched:
// filling gigabytes of fresh memory then takes one page fault per 2 MiB instead of per
// 4 KiB. A hint: it does nothing elsewhere and failures are ignored.
void advise_huge_pages(void* p, std::size_t bytes) noexcept;

// Faults in the pages inside [p, p + bytes) for writing, on up to `threads` threads (<= 0:
// all), before the memory is first touched: the kernel zeroes fresh pages as they fault, and
// gigabytes faulted by one thread (a std::vector's resize) take seconds. Linux 5.14+
// (MADV_POPULATE_WRITE); returns whether every page was populated (false elsewhere or on
// failure: the memory is then faulted in by its first touch, as without this call).
bool populate_pages(void* p, std::size_t bytes, int threads) noexcept;

}  // namespace megatax
