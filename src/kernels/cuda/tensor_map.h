// kernels/cuda/tensor_map.h -- TMA tensor maps (CUtensorMap) of row-major 16-bit and f32
// matrices, for the Hopper kernels. The encoder is the driver's cuTensorMapEncodeTiled,
// reached through the runtime's driver entry point (no link against libcuda).
//
// Internal header (CUDA types allowed).
#pragma once

#include <cuda.h>

#include <cstdint>

#include "megatax/matrix.h"

namespace megatax::cuda::detail {

// True when the current device has compute capability 9.0 (Hopper: wgmma, TMA); cached per
// device.
bool device_is_sm90();

// True when a TMA map can describe `x`: f16/bf16 (or f32 with allow_f32), a 16-byte aligned
// base and a row stride that is a multiple of 16 bytes (TMA's own rules); rows and dim below
// 2^31.
bool tma_compatible(const MatrixView& x, bool allow_f32 = false);

// Encodes the map of rows [0, rows) of `x` (device view) read in boxes of box_rows x
// box_cols elements (box_cols * element size == 128 bytes with the 128-byte swizzle),
// out-of-range elements read as zeros. Throws Error when the driver refuses (naming its
// status). Precondition: tma_compatible(x, true).
CUtensorMap make_tensor_map_2d(const MatrixView& x, std::int64_t rows, int box_rows, int box_cols);

}  // namespace megatax::cuda::detail
