// Tests of the distance block kernels (kernels/cpu/block_kernel.h), every supported SIMD
// level, over shape tables (dims that are not slice or tile multiples, query counts that
// are not micro-tile multiples, runs of panels starting past panel 0 and ending in a
// partial last panel), for f32/f16/bf16 and both metrics:
//  (a) distances are bit-identical to the scalar reference (same ordered FMA chain), except
//      avx512 with bf16 on AVX512-BF16 CPUs (vdpbf16ps: rounding differs, so a tolerance);
//  (b) masks agree with each level's own distances and the thresholds ('<');
//  (c) distances agree with an independent float64 brute force from the stored values;
//  and nothing outside [nq x 16 * npanels] / [nq x npanels] is written.
// Seeds are fresh each run (printed; MEGATAX_TEST_SEED=<n> replays one). Sizes are smaller
// on aarch64, where the tests run under qemu.
#include "kernels/cpu/block_kernel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/packed_matrix.h"
#include "kernels/cpu/simd_level.h"
#include "megatax/dtype.h"
#include "megatax/matrix.h"
#include "megatax/metric.h"

namespace megatax::kernels {
namespace {

#if defined(__aarch64__)
const std::vector<std::int64_t> kDims = {1, 2, 3, 17, 127, 129, 300, 1024};
const std::vector<std::int64_t> kQueryCounts = {1, 2, 5, 6, 7, 13, 33};
#else
const std::vector<std::int64_t> kDims = {1, 2, 3, 17, 127, 128, 129, 300, 1000, 1024, 2048};
const std::vector<std::int64_t> kQueryCounts = {1, 2, 5, 6, 7, 13, 16, 33};
#endif
const std::vector<std::int64_t> kPanelCounts = {1, 2, 3, 7};
constexpr std::int64_t kDbPanels = 9;                         // >= max panel count + 2
constexpr std::int64_t kDbRows = kDbPanels * kPanelRows - 5;  // last panel is partial

constexpr float kDistanceSentinel = -12345.5f;
constexpr std::uint16_t kMaskSentinel = 0xA5A5;

std::uint64_t test_seed() {
  if (const char* env = std::getenv("MEGATAX_TEST_SEED"); env != nullptr && *env != '\0')
    return std::strtoull(env, nullptr, 10);
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) | rd();
}

float round_to(DType dtype, float v) {
  switch (dtype) {
    case DType::kF16: return f16_to_f32(f32_to_f16(v));
    case DType::kBF16: return bf16_to_f32(f32_to_bf16(v));
    default: return v;
  }
}

std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// A database and its rows as floats (the exact stored values), zero rows past rows().
struct Database {
  Database(std::int64_t dim, DType dtype, std::mt19937_64& rng) : pm(dim, dtype) {
    std::normal_distribution<float> normal(0.f, 1.f);
    std::uniform_real_distribution<float> scale(0.25f, 2.f);
    std::vector<float> x(static_cast<std::size_t>(kDbRows * dim));
    for (std::int64_t i = 0; i < kDbRows; ++i) {
      const float s = scale(rng);
      for (std::int64_t k = 0; k < dim; ++k)
        x[static_cast<std::size_t>(i * dim + k)] = s * normal(rng);
    }
    pm.append(f32_view(x.data(), kDbRows, dim));
    stored.assign(static_cast<std::size_t>(kDbPanels * kPanelRows * dim), 0.f);
    for (std::int64_t i = 0; i < kDbRows; ++i)
      pm.get_row_f32(i, &stored[static_cast<std::size_t>(i * dim)]);
  }
  const float* row(std::int64_t i) const { return &stored[static_cast<std::size_t>(i * pm.dim())]; }

  PackedMatrix pm;
  std::vector<float> stored;  // kDbPanels * 16 rows x dim
};

// One call's inputs and reference values.
struct Problem {
  std::int64_t nq = 0, first_panel = 0, npanels = 0, dim = 0, dp = 0;
  std::int64_t ld_queries = 0, ld_distances = 0, ld_masks = 0;
  std::vector<float> queries;             // nq x ld_queries; NaN past dp (never read)
  std::vector<std::uint32_t> bf16_pairs;  // nq x dp/2 (bf16 only)
  std::vector<float> query_norms, thresholds;
  std::vector<double> ref, scale;  // float64 brute force and its scale, nq x 16np
};

Problem make_problem(const Database& db, Metric metric, std::int64_t nq, std::int64_t npanels,
                     std::int64_t first_panel, std::mt19937_64& rng) {
  Problem pr;
  const DType dtype = db.pm.dtype();
  pr.nq = nq;
  pr.npanels = npanels;
  pr.first_panel = first_panel;
  pr.dim = db.pm.dim();
  pr.dp = db.pm.dim_padded();
  pr.ld_queries = pr.dp + 1 + static_cast<std::int64_t>(rng() % 4);
  pr.ld_distances = kPanelRows * npanels + 1 + static_cast<std::int64_t>(rng() % 7);
  pr.ld_masks = npanels + 1 + static_cast<std::int64_t>(rng() % 3);
  const std::int64_t nrows = kPanelRows * npanels, row0 = kPanelRows * first_panel;

  std::normal_distribution<float> normal(0.f, 1.f);
  pr.queries.assign(static_cast<std::size_t>(nq * pr.ld_queries),
                    std::numeric_limits<float>::quiet_NaN());
  for (std::int64_t i = 0; i < nq; ++i) {
    float* q = &pr.queries[static_cast<std::size_t>(i * pr.ld_queries)];
    std::fill(q, q + pr.dp, 0.f);
    const std::int64_t copy_of = row0 + static_cast<std::int64_t>(rng() % nrows);
    for (std::int64_t k = 0; k < pr.dim; ++k) {
      // Query 1 repeats a database row of the run: L2 distances near 0 hit the clamp.
      q[k] = (i == 1 && copy_of < kDbRows) ? db.row(copy_of)[k] : round_to(dtype, normal(rng));
    }
  }
  if (dtype == DType::kBF16) {
    pr.bf16_pairs.resize(static_cast<std::size_t>(nq * pr.dp / 2));
    for (std::int64_t i = 0; i < nq; ++i)
      for (std::int64_t m = 0; m < pr.dp / 2; ++m) {
        const float* q = &pr.queries[static_cast<std::size_t>(i * pr.ld_queries + 2 * m)];
        pr.bf16_pairs[static_cast<std::size_t>(i * pr.dp / 2 + m)] =
            f32_to_bf16(q[0]) | (static_cast<std::uint32_t>(f32_to_bf16(q[1])) << 16);
      }
  }

  // Float64 reference from the stored values (rows past rows() are zero).
  pr.query_norms.resize(static_cast<std::size_t>(nq));
  pr.ref.resize(static_cast<std::size_t>(nq * nrows));
  pr.scale.resize(static_cast<std::size_t>(nq * nrows));
  for (std::int64_t i = 0; i < nq; ++i) {
    const float* q = &pr.queries[static_cast<std::size_t>(i * pr.ld_queries)];
    double qn = 0;
    for (std::int64_t k = 0; k < pr.dim; ++k) qn += static_cast<double>(q[k]) * q[k];
    pr.query_norms[static_cast<std::size_t>(i)] = static_cast<float>(qn);
    for (std::int64_t j = 0; j < nrows; ++j) {
      const float* x = db.row(row0 + j);
      double dot = 0, xn = 0, l2 = 0;
      for (std::int64_t k = 0; k < pr.dim; ++k) {
        const double qk = q[k], xk = x[k];
        dot += qk * xk;
        xn += xk * xk;
        l2 += (qk - xk) * (qk - xk);
      }
      const std::size_t o = static_cast<std::size_t>(i * nrows + j);
      pr.ref[o] = metric == Metric::kL2 ? l2 : -dot;
      pr.scale[o] = qn + xn;
    }
  }

  // Thresholds: +inf, -inf, or a reference distance of the row (half the rows pass).
  pr.thresholds.resize(static_cast<std::size_t>(nq));
  for (std::int64_t i = 0; i < nq; ++i) {
    const std::uint64_t pick = rng() % 4;
    float t = std::numeric_limits<float>::infinity();
    if (pick == 1) t = -t;
    if (pick >= 2) {
      std::vector<double> row(pr.ref.begin() + i * nrows, pr.ref.begin() + (i + 1) * nrows);
      std::nth_element(row.begin(), row.begin() + nrows / 2, row.end());
      t = static_cast<float>(row[static_cast<std::size_t>(nrows / 2)]);
    }
    pr.thresholds[static_cast<std::size_t>(i)] = t;
  }
  return pr;
}

struct Output {
  std::vector<float> distances;      // (nq + 1) x ld_distances, sentinel-filled
  std::vector<std::uint16_t> masks;  // (nq + 1) x ld_masks, sentinel-filled
};

Output run_kernel(SimdLevel level, const Database& db, Metric metric, const Problem& pr) {
  Output out;
  out.distances.assign(static_cast<std::size_t>((pr.nq + 1) * pr.ld_distances), kDistanceSentinel);
  out.masks.assign(static_cast<std::size_t>((pr.nq + 1) * pr.ld_masks), kMaskSentinel);
  DistanceBlockArgs a;
  a.queries = pr.queries.data();
  a.ld_queries = pr.ld_queries;
  a.query_bf16_pairs = pr.bf16_pairs.empty() ? nullptr : pr.bf16_pairs.data();
  a.query_norms = pr.query_norms.data();
  a.nq = pr.nq;
  a.panels = db.pm.panel(pr.first_panel);
  a.npanels = pr.npanels;
  a.db_norms = db.pm.norms() + kPanelRows * pr.first_panel;
  a.dim_padded = pr.dp;
  a.dtype = db.pm.dtype();
  a.metric = metric;
  a.thresholds = pr.thresholds.data();
  a.distances = out.distances.data();
  a.ld_distances = pr.ld_distances;
  a.masks = out.masks.data();
  a.ld_masks = pr.ld_masks;
  distance_block_kernel(level)(a);
  return out;
}

// Padding columns and the spare row keep their sentinels; masks match the distances.
testing::AssertionResult check_layout_and_masks(const Problem& pr, const Output& out) {
  const std::int64_t ncols = kPanelRows * pr.npanels;
  for (std::int64_t i = 0; i <= pr.nq; ++i) {
    for (std::int64_t j = 0; j < pr.ld_distances; ++j) {
      const float d = out.distances[static_cast<std::size_t>(i * pr.ld_distances + j)];
      if ((i == pr.nq || j >= ncols) && bits(d) != bits(kDistanceSentinel))
        return testing::AssertionFailure()
               << "distance padding written at (" << i << ", " << j << ")";
    }
    for (std::int64_t p = 0; p < pr.ld_masks; ++p) {
      const std::uint16_t m = out.masks[static_cast<std::size_t>(i * pr.ld_masks + p)];
      if (i == pr.nq || p >= pr.npanels) {
        if (m != kMaskSentinel)
          return testing::AssertionFailure()
                 << "mask padding written at (" << i << ", " << p << ")";
        continue;
      }
      const float t = pr.thresholds[static_cast<std::size_t>(i)];
      for (std::int64_t r = 0; r < kPanelRows; ++r) {
        const float d =
            out.distances[static_cast<std::size_t>(i * pr.ld_distances + kPanelRows * p + r)];
        if (((m >> r) & 1) != (d < t ? 1 : 0))
          return testing::AssertionFailure() << "mask bit (" << i << ", panel " << p << ", row "
                                             << r << ") = " << ((m >> r) & 1) << " but distance "
                                             << d << (d < t ? " < " : " >= ") << "threshold " << t;
      }
    }
  }
  return testing::AssertionSuccess();
}

// Same distances as the scalar reference: bit for bit, or within `rel` of the scale.
testing::AssertionResult check_against_scalar(const Problem& pr, const Output& out,
                                              const Output& scalar, double rel) {
  const std::int64_t ncols = kPanelRows * pr.npanels;
  for (std::int64_t i = 0; i < pr.nq; ++i)
    for (std::int64_t j = 0; j < ncols; ++j) {
      const std::size_t o = static_cast<std::size_t>(i * pr.ld_distances + j);
      const float d = out.distances[o], s = scalar.distances[o];
      const bool ok = rel == 0 ? bits(d) == bits(s)
                               : std::fabs(static_cast<double>(d) - s) <=
                                     rel * pr.scale[static_cast<std::size_t>(i * ncols + j)];
      if (!ok)
        return testing::AssertionFailure()
               << "distance (" << i << ", " << j << ") = " << d << " [0x" << std::hex << bits(d)
               << "], scalar " << s << " [0x" << bits(s) << std::dec << "]";
    }
  return testing::AssertionSuccess();
}

// Within 1e-5 of the float64 brute force, relative to qn + xn + 1.
testing::AssertionResult check_against_reference(const Problem& pr, const Output& out) {
  const std::int64_t ncols = kPanelRows * pr.npanels;
  for (std::int64_t i = 0; i < pr.nq; ++i)
    for (std::int64_t j = 0; j < ncols; ++j) {
      const std::size_t r = static_cast<std::size_t>(i * ncols + j);
      const double d = out.distances[static_cast<std::size_t>(i * pr.ld_distances + j)];
      const double tol = 1e-5 * (pr.scale[r] + 1);
      if (!(std::fabs(d - pr.ref[r]) <= tol))
        return testing::AssertionFailure()
               << "distance (" << i << ", " << j << ") = " << d << ", float64 reference "
               << pr.ref[r] << " (tolerance " << tol << ")";
    }
  return testing::AssertionSuccess();
}

struct Param {
  DType dtype;
  Metric metric;
};

class BlockKernelTest : public testing::TestWithParam<Param> {};

TEST_P(BlockKernelTest, MatchesScalarAndFloat64OverShapes) {
  const DType dtype = GetParam().dtype;
  const Metric metric = GetParam().metric;
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (MEGATAX_TEST_SEED to replay)");
  std::mt19937_64 rng(seed);
  const std::vector<SimdLevel> levels = supported_simd_levels();
  ASSERT_FALSE(levels.empty());
  ASSERT_EQ(levels.front(), SimdLevel::kScalar);
  static bool printed = false;
  if (!printed) {
    printed = true;
    std::string names;
    for (const SimdLevel level : levels) names += std::string(" ") + simd_level_name(level);
    std::printf("levels tested:%s (avx512 bf16 native: %s)\n", names.c_str(),
                cpu_has_avx512_bf16() ? "yes" : "no");
  }

  std::int64_t case_index = 0;
  for (std::size_t di = 0; di < kDims.size(); ++di) {
    const std::int64_t dim = kDims[di];
    const Database db(dim, dtype, rng);
    for (std::size_t qi = 0; qi < kQueryCounts.size(); ++qi, ++case_index) {
      const std::int64_t nq = kQueryCounts[qi];
      const std::int64_t npanels = kPanelCounts[(qi + di) % kPanelCounts.size()];
      // Runs at panel 0, at the partial tail, or anywhere between.
      const std::int64_t last_start = kDbPanels - npanels;
      const std::int64_t first_panel = case_index % 3 == 0 ? 0
                                       : case_index % 3 == 1
                                           ? last_start
                                           : static_cast<std::int64_t>(rng() % (last_start + 1));
      const Problem pr = make_problem(db, metric, nq, npanels, first_panel, rng);
      SCOPED_TRACE("dim " + std::to_string(dim) + ", nq " + std::to_string(nq) + ", panels [" +
                   std::to_string(first_panel) + ", +" + std::to_string(npanels) + ")");

      const Output scalar = run_kernel(SimdLevel::kScalar, db, metric, pr);
      for (const SimdLevel level : levels) {
        SCOPED_TRACE(std::string("level ") + simd_level_name(level));
        const Output out = level == SimdLevel::kScalar ? scalar : run_kernel(level, db, metric, pr);
        const bool native_bf16 =
            level == SimdLevel::kAvx512 && dtype == DType::kBF16 && cpu_has_avx512_bf16();
        ASSERT_TRUE(check_layout_and_masks(pr, out));
        ASSERT_TRUE(check_against_scalar(pr, out, scalar, native_bf16 ? 1e-3 : 0.0));
        ASSERT_TRUE(check_against_reference(pr, out));
      }
    }
  }
}

// A NaN query gives NaN distances (the clamp keeps NaN) and empty masks, at every level.
TEST_P(BlockKernelTest, NanQueryGivesNanAndEmptyMasks) {
  const DType dtype = GetParam().dtype;
  const Metric metric = GetParam().metric;
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Database db(37, dtype, rng);
  for (const std::int64_t nq : {1, 4, 9}) {
    Problem pr = make_problem(db, metric, nq, 3, 1, rng);
    const std::int64_t bad = nq - 1;
    pr.queries[static_cast<std::size_t>(bad * pr.ld_queries + 5)] =
        std::numeric_limits<float>::quiet_NaN();
    pr.query_norms[static_cast<std::size_t>(bad)] = std::numeric_limits<float>::quiet_NaN();
    if (!pr.bf16_pairs.empty())
      pr.bf16_pairs[static_cast<std::size_t>(bad * pr.dp / 2 + 2)] |= 0x7FC0u << 16;
    pr.thresholds[static_cast<std::size_t>(bad)] = std::numeric_limits<float>::infinity();
    for (const SimdLevel level : supported_simd_levels()) {
      SCOPED_TRACE(std::string("level ") + simd_level_name(level) + ", nq " + std::to_string(nq));
      const Output out = run_kernel(level, db, metric, pr);
      for (std::int64_t j = 0; j < kPanelRows * pr.npanels; ++j)
        EXPECT_TRUE(std::isnan(out.distances[static_cast<std::size_t>(bad * pr.ld_distances + j)]))
            << "row " << j;
      for (std::int64_t p = 0; p < pr.npanels; ++p)
        EXPECT_EQ(out.masks[static_cast<std::size_t>(bad * pr.ld_masks + p)], 0) << "panel " << p;
      ASSERT_TRUE(check_layout_and_masks(pr, out));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    DTypesAndMetrics, BlockKernelTest,
    testing::Values(Param{DType::kF32, Metric::kL2}, Param{DType::kF32, Metric::kInnerProduct},
                    Param{DType::kF16, Metric::kL2}, Param{DType::kF16, Metric::kInnerProduct},
                    Param{DType::kBF16, Metric::kL2}, Param{DType::kBF16, Metric::kInnerProduct}),
    [](const testing::TestParamInfo<Param>& info) {
      return std::string(dtype_name(info.param.dtype)) + "_" + metric_name(info.param.metric);
    });

}  // namespace
}  // namespace megatax::kernels
