// libFuzzer target: the .npy reader (header parser, size checks, reads, Dataset on top).
#include <cstddef>
#include <cstdint>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  megatax::fuzz::fuzz_one_file(data, size, "/fuzz/shard.npy");
  return 0;
}
