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

bool packed_bf16_gemm(int64_t M, int64_t K) {
#if defined(LOWBIT_HAVE_AVX512_BF16)
  return use_avx512_bf16() && M >= 32 && K > 0 && K % 8 == 0;
#else
  (void)M;
  (void)K;
  return false;
#endif
}

}  // namespace lowbit::cpu
