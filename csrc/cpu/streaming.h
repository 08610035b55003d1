// When an op writes its output with non-temporal ("streaming") stores.
//
// A normal store to a line that is not in cache first reads the line from memory
// (read-for-ownership), so writing N bytes of fresh output moves 2N bytes. A
// non-temporal store skips that read and the cache, which pays when the data an op
// touches is larger than the last-level cache: its output would have been evicted
// before anyone read it again. For smaller ops it hurts, since the consumer of the
// output would then read it from memory instead of cache.
//
// Only the AVX2 kernels of the bandwidth-bound element-wise ops use this
// (dequantize_affine, quantize_affine, dequantize_fp8, dequantize_q8_0 / q4_0); the portable
// kernels ignore the flag.
#pragma once
#include <cstdint>

namespace lowbit::cpu {

// Ops that read and write at least this many bytes in total stream their output.
// Default: the last-level cache size reported by the C library (32 MiB when it
// reports none).
int64_t streaming_min_bytes();
// Overrides the threshold (tests set 0 to run the streaming path on small
// tensors); a negative value restores the default.
void set_streaming_min_bytes(int64_t bytes);

inline bool stream_output(int64_t bytes_touched) { return bytes_touched >= streaming_min_bytes(); }

// Orders a thread's non-temporal stores before its later stores (sfence on x86).
// Kernels leave it to their caller, which fences once per parallel task rather
// than once per row or group: a fence drains the write-combining buffers, and
// one per 128-element group made int4 dequantization 2.4x slower.
void streaming_fence();

}  // namespace lowbit::cpu
