// Run-time (mr, nr) -> compile-time tile shape, for kernels templated on their register
// block (rows of x x weight rows) whose edge tiles are smaller. No intrinsics: usable from
// any ISA's translation unit.
#pragma once
#include <type_traits>

namespace lowbit::cpu {

template <int MaxN, int M, int N, class F>
inline void tile_switch(int mr, int nr, F& f) {
  if (mr == M && nr == N) {
    f(std::integral_constant<int, M>{}, std::integral_constant<int, N>{});
    return;
  }
  if constexpr (N > 1) tile_switch<MaxN, M, N - 1>(mr, nr, f);
  else if constexpr (M > 1) tile_switch<MaxN, M - 1, MaxN>(mr, nr, f);
}

// Calls f(std::integral_constant<int, mr>{}, std::integral_constant<int, nr>{}) for
// 1 <= mr <= MaxM and 1 <= nr <= MaxN (nothing for other values).
template <int MaxM, int MaxN, class F>
inline void dispatch_tile(int mr, int nr, F&& f) {
  tile_switch<MaxN, MaxM, MaxN>(mr, nr, f);
}

}  // namespace lowbit::cpu
