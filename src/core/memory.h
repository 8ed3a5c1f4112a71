// core/memory.h -- hints about how the process uses its memory.
#pragma once

#include <cstddef>

namespace megatax {

// Asks the kernel to back the whole 2 MiB pages inside [p, p + bytes) with transparent huge
// pages (Linux, THP in "madvise" or "always" mode). Call before the memory is first touched:
// filling gigabytes of fresh memory then takes one page fault per 2 MiB instead of per
// 4 KiB. A hint: it does nothing elsewhere and failures are ignored.
void advise_huge_pages(void* p, std::size_t bytes) noexcept;

}  // namespace megatax
