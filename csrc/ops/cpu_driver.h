// Parallel drivers that walk a ScaleLayout on the CPU and hand contiguous spans
// to the kernels (which see raw pointers only). Shared by the affine and float8 ops.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "cpu/streaming.h"
#include "lowbit/scale_layout.h"

namespace lowbit::ops {

// Elements per parallel task: big enough to amortise a task, small enough to
// keep both cores busy on mid-sized tensors.
constexpr int64_t kGrainElements = int64_t{1} << 15;

// Calls span(elem_offset, length, channel, channel_stride) over every element:
// channel_stride == 0 means one scale (index `channel`) for the whole span,
// channel_stride == 1 means element j of the span uses scale[channel + j]
// (the per-axis case on the last axis, where the scale changes every element).
// `streaming`: the spans write with non-temporal stores; each task fences once.
template <class SpanFn>
void for_each_span(const ScaleLayout& L, SpanFn span, bool streaming = false) {
  if (L.numel() == 0) return;
  if (L.inner == 1 && L.channels > 1) {
    const int64_t C = L.channels;
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(C, kGrainElements));
    const int64_t per_row = (C + chunk - 1) / chunk;
    at::parallel_for(0, L.outer * per_row, std::max<int64_t>(1, kGrainElements / chunk), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t o = t / per_row, c0 = (t % per_row) * chunk;
        span(o * C + c0, std::min(chunk, C - c0), c0, int64_t{1});
      }
      if (streaming) cpu::streaming_fence();
    });
    return;
  }
  // Rows of `inner` elements sharing one scale; long rows are cut into chunks.
  const int64_t rows = L.outer * L.channels;
  const int64_t chunk = std::min<int64_t>(L.inner, kGrainElements);
  const int64_t per_row = (L.inner + chunk - 1) / chunk;
  at::parallel_for(0, rows * per_row, std::max<int64_t>(1, kGrainElements / chunk), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t r = t / per_row, i0 = (t % per_row) * chunk;
      span(r * L.inner + i0, std::min(chunk, L.inner - i0), r % L.channels, int64_t{0});
    }
    if (streaming) cpu::streaming_fence();
  });
}

// Per-channel min and max over a layout. row(x_offset, n, &mn, &mx) reduces n
// contiguous elements; cols(x_offset, rows, cols, mn*, mx*) folds a [rows, cols]
// block into running per-column min/max. Both must return NaN when a NaN is read.
// Channels with no element get min = max = 0.
template <class RowFn, class ColFn>
void reduce_minmax(const ScaleLayout& L, float* mins, float* maxs, RowFn row, ColFn cols) {
  const int64_t C = L.channels;
  constexpr float inf = std::numeric_limits<float>::infinity();
  if (L.numel() == 0) {
    std::fill(mins, mins + C, 0.f);
    std::fill(maxs, maxs + C, 0.f);
    return;
  }
  auto fold = [](float& m, float v, bool is_min) {
    if (v != v || m != m) m = v != v ? v : m;  // NaN is sticky
    else m = is_min ? std::min(m, v) : std::max(m, v);
  };
  if (L.inner == 1 && C > 1) {
    // Per-axis on the last axis: every row of `outer` updates all C columns.
    const int nt = std::max(1, at::get_num_threads());
    std::vector<float> tmin(static_cast<size_t>(nt) * C, inf), tmax(static_cast<size_t>(nt) * C, -inf);
    const int64_t grain = std::max<int64_t>(1, kGrainElements / C);
    at::parallel_for(0, L.outer, grain, [&](int64_t b, int64_t e) {
      const int tid = at::get_thread_num();
      cols(b * C, e - b, C, tmin.data() + static_cast<size_t>(tid) * C, tmax.data() + static_cast<size_t>(tid) * C);
    });
    std::fill(mins, mins + C, inf);
    std::fill(maxs, maxs + C, -inf);
    for (int t = 0; t < nt; ++t)
      for (int64_t c = 0; c < C; ++c) {
        fold(mins[c], tmin[static_cast<size_t>(t) * C + c], true);
        fold(maxs[c], tmax[static_cast<size_t>(t) * C + c], false);
      }
    return;
  }
  // Rows of `inner` elements (cut into chunks), partial results folded per channel.
  const int64_t rows = L.outer * C;
  const int64_t chunk = std::min<int64_t>(L.inner, kGrainElements);
  const int64_t per_row = (L.inner + chunk - 1) / chunk;
  const int64_t tasks = rows * per_row;
  std::vector<float> pmin(tasks), pmax(tasks);
  at::parallel_for(0, tasks, std::max<int64_t>(1, kGrainElements / chunk), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t r = t / per_row, i0 = (t % per_row) * chunk;
      row(r * L.inner + i0, std::min(chunk, L.inner - i0), &pmin[t], &pmax[t]);
    }
  });
  if (per_row == 1 && L.outer == 1) {
    std::copy(pmin.begin(), pmin.end(), mins);
    std::copy(pmax.begin(), pmax.end(), maxs);
    return;
  }
  std::fill(mins, mins + C, inf);
  std::fill(maxs, maxs + C, -inf);
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t c = (t / per_row) % C;
    fold(mins[c], pmin[t], true);
    fold(maxs[c], pmax[t], false);
  }
}

}  // namespace lowbit::ops
