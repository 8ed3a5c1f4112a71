// libFuzzer target: the .fbin / .u8bin reader. The first input byte picks the format
// (even: .fbin, odd: .u8bin); the rest is the file.
#include <cstddef>
#include <cstdint>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  megatax::fuzz::fuzz_one_file(data + 1, size - 1,
                               (data[0] & 1) ? "/fuzz/shard.u8bin" : "/fuzz/shard.fbin");
  return 0;
}
