// Host launchers of the float8 CUDA kernels (csrc/cuda/fp8.cu); formats and rounding
// in docs/formats.md ("Float8"). Raw device pointers, no torch header; work goes on
// `stream`, nothing synchronises; each returns cudaGetLastError().
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "lowbit/float_types.h"
#include "lowbit/scale_layout.h"

namespace lowbit::cuda {

// scale[c] = absmax / max_finite over each channel of L (1 where that is 0); keys is
// scratch of 2 * L.channels words. A channel holding NaN or +-inf gets scale NaN (the
// CPU op raises instead; raising here would need a device-to-host sync).
cudaError_t launch_choose_scale_fp8(const void* x, FloatType type, ScaleLayout L, Fp8Format kind, uint32_t* keys,
                                    float* scale, cudaStream_t stream);

// q[e] = encode(x[e] / scale[c]): round half to even, saturating to +-max finite
// (+-inf included), NaN -> sign | 0x7f. q holds one byte per element.
cudaError_t launch_quantize_fp8(const void* x, FloatType type, ScaleLayout L, const float* scale, Fp8Format kind,
                                uint8_t* q, cudaStream_t stream);

// y[e] = round_to_type(decode(q[e]) * scale[c]).
cudaError_t launch_dequantize_fp8(const uint8_t* q, Fp8Format kind, ScaleLayout L, const float* scale, void* y,
                                  FloatType type, cudaStream_t stream);

}  // namespace lowbit::cuda
