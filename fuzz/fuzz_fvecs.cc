// libFuzzer target: the .fvecs / .bvecs reader. The first input byte picks the format
// (even: .fvecs, odd: .bvecs); the rest is the file.
#include <cstddef>
#include <cstdint>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  megatax::fuzz::fuzz_one_file(data + 1, size - 1,
                               (data[0] & 1) ? "/fuzz/shard.bvecs" : "/fuzz/shard.fvecs");
  return 0;
}
