#include "cpu/avx2/panel_gemm_avx2.h"
#include "cpu/panel_gemm.h"

namespace lowbit::cpu::avx2 {

bool packed_gemm_applies(int64_t M, int64_t K) { return M >= kPackedMinM && K > 0; }

}  // namespace lowbit::cpu::avx2
