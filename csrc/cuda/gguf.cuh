// Host launchers of the GGUF Q8_0 / Q4_0 CUDA kernels (csrc/cuda/gguf.cu); byte layout
// in docs/formats.md ("GGUF Q8_0 and Q4_0 blocks"). Raw device pointers, no torch
// header; work goes on `stream`, nothing synchronises; each returns cudaGetLastError().
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "lowbit/float_types.h"

namespace lowbit::cuda {

// nblocks consecutive blocks of 32 elements (x float32 / float16 / bfloat16 as
// `type`) -> nblocks * 34 (Q8_0) or * 18 (Q4_0) bytes, the CPU op's bytes exactly.
// A block holding NaN or +-inf is written as scale NaN (fp16 0x7e00) and codes 0, so
// that it dequantizes to NaN (the CPU op raises instead; raising here would need a
// device-to-host sync).
cudaError_t launch_quantize_q8_0(const void* x, FloatType type, int64_t nblocks, uint8_t* blocks,
                                 cudaStream_t stream);
cudaError_t launch_quantize_q4_0(const void* x, FloatType type, int64_t nblocks, uint8_t* blocks,
                                 cudaStream_t stream);

// y = float32(d) * code per element, rounded to `type`; any bytes are valid input.
cudaError_t launch_dequantize_q8_0(const uint8_t* blocks, int64_t nblocks, void* y, FloatType type,
                                   cudaStream_t stream);
cudaError_t launch_dequantize_q4_0(const uint8_t* blocks, int64_t nblocks, void* y, FloatType type,
                                   cudaStream_t stream);

}  // namespace lowbit::cuda
