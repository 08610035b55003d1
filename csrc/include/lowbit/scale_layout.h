// How a tensor of scales maps onto the elements it quantizes.
// Every granularity lowbit supports is one shape (outer, channels, inner) over the
// contiguous input: element (o, c, i) uses scale[c].
//   per tensor:         (1, 1, numel)
//   per axis `a`:       (prod(size[:a]), size[a], prod(size[a+1:]))
//   per group of g on the last axis of [..., K]: (1, numel / g, g)
#pragma once
#include <cstdint>

namespace lowbit {

struct ScaleLayout {
  int64_t outer;
  int64_t channels;
  int64_t inner;
  int64_t numel() const { return outer * channels * inner; }
};

}  // namespace lowbit
