// kernels/cuda/launch.h -- host-side launchers shared between the backend's translation units.
//
// Internal header (CUDA runtime types allowed); the public face is megatax/cuda.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "megatax/dtype.h"
#include "megatax/matrix.h"

namespace megatax::cuda::detail {

// "f32", "f16", "bf16", "u8" (as megatax::dtype_name; kept here so that the backend needs
// the project's headers only, not the CPU library).
const char* dtype_label(DType t) noexcept;

// out[i] = ||row i||^2 (f32 accumulation) for the rows of x (device view; f32/f16/bf16).
void launch_row_norms(const MatrixView& x, float* out, cudaStream_t stream);

// True when 16-byte copies of rows are safe: the pointer is 16-byte aligned and both the
// stride and d are multiples of 16 bytes' worth of elements.
bool vector_aligned(const MatrixView& x);

// True when row_distances serves 16-bit rows of x on tensor cores (row_distances.cu: f16/bf16,
// d <= 4096 with 16 candidates' rows in `max_smem`, MEGATAX_CUDA_ROW_DIST not "ffma"): the
// arithmetic pool_gram reproduces.
bool row_distances_use_mma(const MatrixView& x, std::size_t max_smem);

// True unless MEGATAX_CUDA_F32_TILES=4x4: the f32 flat assign and top-k run 128 x 128 tiles of
// 8 x 8 FFMA micro tiles (else 64 x 64 of 4 x 4, for side-by-side runs; the same bits).
bool f32_wide_tiles();

// True unless MEGATAX_CUDA_F32=ffma: the f32 assign (flat and grouped) and the top-k multiply
// on tensor cores as 3xTF32 (tf32.cuh), else with FFMA (the exact f32 products, for
// side-by-side runs; read per launch).
bool f32_tensor_cores();

// Checks a device view used as a kernel operand (dtype f32/f16/bf16, sizes, stride, non-null
// data when rows > 0); throws Error(kInvalidArgument) naming `what` otherwise.
void validate_device_view(const MatrixView& x, const char* what);

// Checks `other` (e.g. the centroids) against `x` (e.g. the points) as operands of one
// product: both valid device views of the same dtype and dim. Throws Error(kInvalidArgument)
// "<op>: <other_name> is <dtype> x <dim>, expected <dtype> x <dim> like <x_name>" otherwise.
void validate_operand_pair(const MatrixView& x, const MatrixView& other, const char* op,
                           const char* x_name, const char* other_name, const char* other_verb);

}  // namespace megatax::cuda::detail
