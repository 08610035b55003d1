// Host launchers of the affine CUDA kernels (csrc/cuda/affine.cu), on raw device
// pointers and plain types; no torch header. Numerics: docs/formats.md ("Affine
// integer codes and parameters") and docs/cuda.md. Every launcher enqueues its work
// on `stream`, never synchronises, and returns cudaGetLastError() after its launches.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "lowbit/float_types.h"
#include "lowbit/scale_layout.h"

namespace lowbit::cuda {

// Per-channel running min / max of a contiguous float tensor x (float32, float16 or
// bfloat16 as `type`) over the layout L, as order-preserving uint32 keys (see
// float_to_key in common.cuh): kmin[c] / kmax[c] for c < L.channels. The launcher
// first resets them (min keys to 0xffffffff, max keys to 0), so a channel with no
// element keeps min key > max key. NaN / inf reach the keys (a NaN sorts beyond the
// infinity of its sign). Shared with choose_scale_fp8.
cudaError_t launch_minmax_keys(const void* x, FloatType type, ScaleLayout L, uint32_t* kmin, uint32_t* kmax,
                               cudaStream_t stream);

// choose_qparams_affine: scale / zero_point (float32, L.channels each) from the
// per-channel min / max, with the CPU op's formulas. `keys` is scratch of
// 2 * L.channels words. A channel holding NaN or +-inf gets scale = zero_point = NaN
// (the CPU op raises instead; raising here would need a device-to-host sync).
cudaError_t launch_choose_qparams_affine(const void* x, FloatType type, ScaleLayout L, int bits, bool symmetric,
                                         uint32_t* keys, float* scale, float* zero_point, cudaStream_t stream);

// codes[e] = clamp(round_half_even(x[e] / scale[c] + zero_point[c]), qmin, qmax),
// c the channel of element e under L; zero_point may be null (symmetric).
cudaError_t launch_quantize_affine(const void* x, FloatType type, ScaleLayout L, const float* scale,
                                   const float* zero_point, int bits, int8_t* codes, cudaStream_t stream);

// y[e] = round_to_type((codes[e] - zero_point[c]) * scale[c]).
cudaError_t launch_dequantize_affine(const int8_t* codes, ScaleLayout L, const float* scale, const float* zero_point,
                                     void* y, FloatType type, cudaStream_t stream);

}  // namespace lowbit::cuda
