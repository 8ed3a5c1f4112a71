// io/format.h -- the constants of the on-disk vector formats, in one place, and the
// checked arithmetic their readers share. The formats are described in docs/formats.md.
//
// Thread-safety: constants and pure functions.
#pragma once

#include <bit>
#include <cstdint>
#include <string>

namespace megatax::io {

static_assert(std::endian::native == std::endian::little,
              "the vector-file readers and writers assume a little-endian host");

// .npy (numpy.lib.format): magic, major, minor, header length (u16 LE for 1.x, u32 LE for
// 2.x/3.x), then an ASCII (3.x: UTF-8) Python dict literal padded with spaces and ended by
// '\n' so that the data starts at a multiple of kNpyAlign.
inline constexpr char kNpyMagic[] = "\x93NUMPY";
inline constexpr std::uint64_t kNpyMagicBytes = 6;
inline constexpr std::uint64_t kNpyPrefixBytesV1 = 10;  // magic + 2 version + u16 length
inline constexpr std::uint64_t kNpyPrefixBytesV2 = 12;  // magic + 2 version + u32 length
inline constexpr std::uint64_t kNpyAlign = 64;
// Readers refuse longer headers (numpy's own np.load refuses > 10000 by default).
inline constexpr std::uint64_t kNpyMaxHeaderBytes = std::uint64_t{1} << 20;
// Deepest nesting of ( [ in a header value that the parser follows.
inline constexpr int kNpyMaxNesting = 16;

// .fbin / .u8bin (big-ann-benchmarks): u32 LE rows, u32 LE dim, then rows*dim elements.
inline constexpr std::uint64_t kBigAnnHeaderBytes = 8;

// .fvecs / .bvecs (TEXMEX): each row is an i32 LE dim followed by dim elements.
inline constexpr std::uint64_t kVecsDimBytes = 4;

// Largest dim any reader accepts (dims are 32-bit in every format we read).
inline constexpr std::int64_t kMaxDim = 0x7FFFFFFF;

// Scratch memory a reader may use per call for conversions and row headers.
inline constexpr std::uint64_t kReadScratchBytes = std::uint64_t{1} << 20;

// a * b and a + b on non-negative 64-bit values; false on overflow.
inline bool checked_mul(std::uint64_t a, std::uint64_t b, std::uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}
inline bool checked_add(std::uint64_t a, std::uint64_t b, std::uint64_t* out) {
  return !__builtin_add_overflow(a, b, out);
}

// Throws Error(kDataLoss) "file <path>: expected <expected> bytes, found <actual> (<why>)"
// unless expected == actual.
void check_file_size(const std::string& path, std::uint64_t expected, std::uint64_t actual,
                     const std::string& why);

// Little-endian loads from a byte buffer.
inline std::uint32_t load_u32_le(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
inline std::uint16_t load_u16_le(const unsigned char* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}

}  // namespace megatax::io
