#include "cpu/panel_gemm.h"

#include "cpu/isa.h"

namespace lowbit::cpu {

bool packed_float_gemm(int64_t M, int64_t K) {
#if defined(LOWBIT_HAVE_AVX2)
  return use_avx2() && avx2::packed_gemm_applies(M, K);
#else
  (void)M;
  (void)K;
  return false;
#endif
}

}  // namespace lowbit::cpu
