// kernels/cpu/row_sums.h -- adding f32 rows into float64 sums (the k-means update step and
// the full-data Lloyd passes): sum[j] += (double)row[j] for j < d.
//
// Every element's sum is the same sequence of float64 additions on every SIMD level (the
// vector lanes run over j, never reorder the rows), so the results are bit-identical to the
// scalar loop whatever the CPU. The portable build of the library targets baseline x86-64
// (SSE2: two doubles an instruction); the AVX2 / AVX-512 variants convert and add 4 / 8 at
// once, chosen at run time.
//
// Thread-safety: pure functions of their arguments.
#pragma once

#include <cstdint>

#include "kernels/cpu/simd_level.h"

namespace megatax::kernels {

using AddRowF64Fn = void (*)(const float* row, double* sum, std::int64_t d);

// The variant for `level` (kAuto: the process default); throws Error(kUnimplemented) for a
// level this build or CPU lacks.
AddRowF64Fn add_row_f64_kernel(SimdLevel level = SimdLevel::kAuto);

// sum[j] += row[j] for j < d, with the process default level.
void add_row_f64(const float* row, double* sum, std::int64_t d) noexcept;

// Per-level variants (row_sums_<level>.cc; only those compiled in).
void add_row_f64_scalar(const float* row, double* sum, std::int64_t d) noexcept;
void add_row_f64_avx2(const float* row, double* sum, std::int64_t d) noexcept;
void add_row_f64_avx512(const float* row, double* sum, std::int64_t d) noexcept;

}  // namespace megatax::kernels
