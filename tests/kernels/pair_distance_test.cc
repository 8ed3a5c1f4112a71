// Tests of the single-pair distances (kernels/cpu/pair_distance.h), every supported SIMD
// level, f32 and f16 rows, both metrics, over a table of dims (1, around the 16/64-lane
// blocks, large):
//  (a) every level returns the same bits as an independent rendering of the contract (64
//      fused running sums, zero-padded last block, folded in halves) and as the scalar level;
//  (b) the value agrees with a float64 sum over the same (widened) values;
//  (c) nothing past x[dim-1] or y[dim-1] is read: both vectors end at a page boundary
//      followed by a page with no access rights (a read there faults);
//  and edge values (zeros with signs, a zero vector, one huge component) keep the contract.
// Seeds are fresh each run (printed; MEGATAX_TEST_SEED=<n> replays one).
#include "kernels/cpu/pair_distance.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "megatax/dtype.h"
#include "megatax/error.h"

namespace megatax::kernels {
namespace {

#if defined(__aarch64__)
const std::vector<std::int64_t> kDims = {1,  2,  3,  4,   5,   15,  16,  17,
                                         63, 64, 65, 127, 128, 129, 300, 1024};
#else
const std::vector<std::int64_t> kDims = {1,   2,   3,   4,    5,    7,    8,    9,   15,  16,
                                         17,  31,  32,  33,   63,   64,   65,   100, 127, 128,
                                         129, 192, 300, 1000, 1023, 1024, 1025, 2048};
#endif

std::uint64_t test_seed() {
  if (const char* env = std::getenv("MEGATAX_TEST_SEED"); env != nullptr && *env != '\0')
    return std::strtoull(env, nullptr, 10);
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) | rd();
}

std::uint32_t bits(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}

// The contract of pair_distance.h, written out again from its text (not from the kernels).
float contract(const float* x, const std::vector<float>& y, std::int64_t dim, bool l2) {
  constexpr int kLanes = 64;
  float s[kLanes];
  for (float& v : s) v = 0.f;
  const std::int64_t blocks = (dim + kLanes - 1) / kLanes;
  for (std::int64_t b = 0; b < blocks; ++b) {
    for (int r = 0; r < kLanes; ++r) {
      const std::int64_t k = b * kLanes + r;
      const float xv = k < dim ? x[k] : 0.f, yv = k < dim ? y[static_cast<std::size_t>(k)] : 0.f;
      if (l2) {
        const volatile float t = xv - yv;  // rounded to float before the fused step
        s[r] = std::fma(t, t, s[r]);
      } else {
        s[r] = std::fma(xv, yv, s[r]);
      }
    }
  }
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int r = 0; r < w; ++r) s[r] = s[r] + s[r + w];
  return l2 ? s[0] : -s[0];
}

double reference64(const float* x, const std::vector<float>& y, std::int64_t dim, bool l2) {
  double s = 0;
  for (std::int64_t k = 0; k < dim; ++k) {
    const double a = x[k], b = y[static_cast<std::size_t>(k)];
    s += l2 ? (a - b) * (a - b) : a * b;
  }
  return l2 ? s : -s;
}

// Two buffers whose last byte is followed by an inaccessible page.
class GuardedBuffers {
 public:
  explicit GuardedBuffers(std::size_t bytes) {
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    span_ = (bytes + page - 1) / page * page;
    for (int i = 0; i < 2; ++i) {
      void* p =
          ::mmap(nullptr, span_ + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) std::abort();
      base_[i] = static_cast<char*>(p);
      if (::mprotect(base_[i] + span_, page, PROT_NONE) != 0) std::abort();
    }
    page_ = page;
  }
  ~GuardedBuffers() {
    for (char* b : base_) ::munmap(b, span_ + page_);
  }
  // The last `bytes` bytes before guard page i.
  char* tail(int i, std::size_t bytes) const { return base_[i] + span_ - bytes; }

 private:
  char* base_[2] = {nullptr, nullptr};
  std::size_t span_ = 0, page_ = 0;
};

TEST(PairDistance, EveryLevelMatchesTheContractBitForBit) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (MEGATAX_TEST_SEED to replay)");
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n01(0.f, 1.f);
  GuardedBuffers guard(2048 * sizeof(float) + 64);
  for (const std::int64_t dim : kDims) {
    for (const DType dtype : {DType::kF32, DType::kF16}) {
      // Values with an offset (centroids away from the origin) and a spread of scales.
      std::vector<float> x(static_cast<std::size_t>(dim)), y(static_cast<std::size_t>(dim));
      for (std::int64_t k = 0; k < dim; ++k) {
        x[static_cast<std::size_t>(k)] = 0.5f + n01(rng) * (k % 7 == 0 ? 10.f : 1.f);
        y[static_cast<std::size_t>(k)] = 0.5f + n01(rng);
      }
      if (dtype == DType::kF16)
        for (float& v : y) v = f16_to_f32(f32_to_f16(v));  // the values the kernel will see
      float* xg =
          reinterpret_cast<float*>(guard.tail(0, static_cast<std::size_t>(dim) * sizeof(float)));
      std::memcpy(xg, x.data(), x.size() * sizeof(float));
      void* yg;
      if (dtype == DType::kF32) {
        yg = guard.tail(1, static_cast<std::size_t>(dim) * sizeof(float));
        std::memcpy(yg, y.data(), y.size() * sizeof(float));
      } else {
        auto* h =
            reinterpret_cast<std::uint16_t*>(guard.tail(1, static_cast<std::size_t>(dim) * 2));
        for (std::int64_t k = 0; k < dim; ++k) h[k] = f32_to_f16(y[static_cast<std::size_t>(k)]);
        yg = h;
      }
      for (const Metric metric : {Metric::kL2, Metric::kInnerProduct}) {
        const bool l2 = metric == Metric::kL2;
        const float want = contract(xg, y, dim, l2);
        const double ref = reference64(xg, y, dim, l2);
        double mag = 0;
        for (std::int64_t k = 0; k < dim; ++k)
          mag += l2 ? (double(xg[k]) - y[static_cast<std::size_t>(k)]) *
                          (double(xg[k]) - y[static_cast<std::size_t>(k)])
                    : std::fabs(double(xg[k]) * y[static_cast<std::size_t>(k)]);
        for (const SimdLevel level : supported_simd_levels()) {
          SCOPED_TRACE(std::string("level ") + simd_level_name(level) + ", dim " +
                       std::to_string(dim) + ", " + dtype_name(dtype) + ", " + (l2 ? "l2" : "ip"));
          const float got = pair_distance_kernel(level, metric, dtype)(xg, yg, dim);
          EXPECT_EQ(bits(got), bits(want)) << got << " vs " << want;
          EXPECT_NEAR(got, ref, 1e-5 * mag + 1e-30);
        }
      }
    }
  }
}

TEST(PairDistance, EdgeValues) {
  const std::int64_t dim = 70;  // one full block and a partial one
  std::vector<float> x(dim, 0.f), y(dim, 0.f);
  std::vector<std::uint16_t> yh(dim, 0);
  for (const SimdLevel level : supported_simd_levels()) {
    SCOPED_TRACE(simd_level_name(level));
    auto l2 = pair_distance_kernel(level, Metric::kL2, DType::kF32);
    auto ip = pair_distance_kernel(level, Metric::kInnerProduct, DType::kF32);
    auto ip16 = pair_distance_kernel(level, Metric::kInnerProduct, DType::kF16);
    // Zero vectors: L2 +0; inner product -(+0) = -0 (the sums start at +0).
    EXPECT_EQ(bits(l2(x.data(), y.data(), dim)), bits(0.f));
    EXPECT_EQ(bits(ip(x.data(), y.data(), dim)), bits(-0.f));
    EXPECT_EQ(bits(ip16(x.data(), yh.data(), dim)), bits(-0.f));
    // A signed zero in the partial block and a product in the full one.
    std::vector<float> a(dim, 0.f), b(dim, 0.f);
    a[69] = -0.f;
    b[69] = 1.f;
    a[5] = 3.f;
    b[5] = -2.f;
    EXPECT_EQ(ip(a.data(), b.data(), dim), 6.f);
    EXPECT_EQ(l2(a.data(), b.data(), dim), 26.f);
    // Huge components stay finite where the contract keeps them finite.
    a.assign(dim, 0.f);
    b.assign(dim, 0.f);
    const float big = 1e18f;
    a[0] = big;
    EXPECT_EQ(l2(a.data(), b.data(), dim), big * big);
  }
}

TEST(PairDistance, Errors) {
  EXPECT_THROW(pair_distance_kernel(SimdLevel::kScalar, Metric::kL2, DType::kBF16), Error);
  EXPECT_THROW(pair_distance_kernel(SimdLevel::kScalar, Metric::kL2, DType::kU8), Error);
  for (const SimdLevel level : {SimdLevel::kAvx2, SimdLevel::kAvx512, SimdLevel::kNeon})
    if (!simd_level_supported(level)) {
      EXPECT_THROW(pair_distance_kernel(level, Metric::kL2), Error);
    }
}

}  // namespace
}  // namespace megatax::kernels
