// Tiling and split-K choice of the small-M kernel, dispatch to the per-kind files, and
// cached device attributes. Host code only (no kernels here).
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "cuda/gemm.cuh"
#include "cuda/gemm_wx.cuh"

namespace lowbit::cuda::gemm {
namespace {

constexpr int kMaxDevices = 64;

int cached_attr(std::atomic<int>* cache, int device, cudaDeviceAttr attr, int fallback) {
  if (device < 0 || device >= kMaxDevices) return fallback;
  int v = cache[device].load(std::memory_order_relaxed);
  if (v > 0) return v;
  if (cudaDeviceGetAttribute(&v, attr, device) != cudaSuccess || v <= 0) {
    (void)cudaGetLastError();
    return fallback;
  }
  cache[device].store(v, std::memory_order_relaxed);
  return v;
}

int sm_count(int device) {
  static std::atomic<int> cache[kMaxDevices];
  return cached_attr(cache, device, cudaDevAttrMultiProcessorCount, 108);
}

int kind_index(WeightKind k) { return static_cast<int>(k); }
int mt_index(int mt) { return mt == 1 ? 0 : (mt == 2 ? 1 : 2); }

int occupancy(WeightKind kind, ElemType act, int mt, int device) {
  // [device][kind][act f16/bf16][mt 1/2/4]; 0 = not yet queried. Occupancy does not depend on
  // the device index for one architecture, but machines may mix GPUs, so it is kept per device.
  static std::atomic<int> cache[kMaxDevices][5][2][3];
  const int ai = act == ElemType::BF16 ? 1 : 0;
  std::atomic<int>* slot = (device >= 0 && device < kMaxDevices)
                               ? &cache[device][kind_index(kind)][ai][mt_index(mt)]
                               : nullptr;
  if (slot) {
    const int v = slot->load(std::memory_order_relaxed);
    if (v > 0) return v;
  }
  int v = 1;
  switch (kind) {
    case WeightKind::Int4: v = wx::occupancy_int4(act, mt); break;
    case WeightKind::Int2: v = wx::occupancy_int2(act, mt); break;
    case WeightKind::Int8: v = wx::occupancy_int8(act, mt); break;
    case WeightKind::Fp8E4M3: v = wx::occupancy_e4m3(act, mt); break;
    case WeightKind::Fp8E5M2: v = wx::occupancy_e5m2(act, mt); break;
  }
  if (slot) slot->store(v, std::memory_order_relaxed);
  return v;
}

}  // namespace

int device_cc_major(int device) {
  static std::atomic<int> cache[kMaxDevices];
  return cached_attr(cache, device, cudaDevAttrComputeCapabilityMajor, 0);
}

bool wx_gemm_supported(WeightKind kind, int64_t K, int64_t group_size) {
  if (K <= 0 || K >= (int64_t{1} << 31)) return false;
  switch (kind) {
    case WeightKind::Int4: return K % 32 == 0 && group_size > 0 && group_size % 32 == 0;
    case WeightKind::Int2: return K % 64 == 0 && group_size > 0 && group_size % 32 == 0;
    default: return K % 16 == 0;
  }
}

WxPlan plan_wx_gemm(WeightKind kind, ElemType act, int64_t M, int64_t N, int64_t K, int device, int kw_override,
                    int splits_override) {
  WxPlan p;
  p.mt = M <= 16 ? 1 : (M <= 32 ? 2 : 4);
  p.mchunks = (M + 16 * p.mt - 1) / (16 * p.mt);
  const int64_t step = 4 * int64_t{chunk_elems(kind)};  // elements of K per warp k-step
  p.ksteps = (K + step - 1) / step;
  // Warps along K inside a block: for very few rows the weights of 32 channels per block are
  // plenty (x is tiny), so 4 warps share K and the grid has 4x more blocks without split-K;
  // with more rows, blocks of 128 channels share each staged tile of x among more weights.
  if (kw_override == 1 || kw_override == 2 || kw_override == 4) {
    p.kw = kw_override;
  } else {
    // Measured on an H100 (bench/RESULTS.md, 2026-11-22 sweep): 4-bit and 2-bit weights are
    // 3-13% faster with one warp along K from M = 3 on; 8-bit and float8 prefer 2 there.
    const bool sub_byte = kind == WeightKind::Int4 || kind == WeightKind::Int2;
    p.kw = p.mt > 1 ? 1 : (M <= (sub_byte ? 2 : 4) ? 4 : (sub_byte ? 1 : 2));
  }
  const int64_t channels = 32 * (wx::kWarps / p.kw);
  p.blocks_n = (N + channels - 1) / channels;
  const int64_t base = p.blocks_n * p.mchunks;
  const int64_t slots = int64_t{sm_count(device)} * occupancy(kind, act, p.mt, device);
  // Split K only to fill the machine: floor(slots / base) blocks per channel block keep the
  // grid within one wave; each warp keeps >= 4 k-steps; at most 64 splits.
  int64_t max_splits = p.ksteps / (4 * int64_t{p.kw});
  if (max_splits < 1) max_splits = 1;
  if (max_splits > 64) max_splits = 64;
  int64_t s = base >= slots ? 1 : slots / base;
  if (splits_override > 0) s = splits_override;
  if (s > max_splits) s = max_splits;
  if (s > p.ksteps) s = p.ksteps > 0 ? p.ksteps : 1;
  if (s < 1) s = 1;
  p.splits = static_cast<int>(s);
  return p;
}

cudaError_t launch_wx_gemm(WeightKind kind, ElemType act, const WxArgs& args, const WxPlan& plan,
                           cudaStream_t stream) {
  if (args.M <= 0 || args.N <= 0) return cudaSuccess;
  if (plan.blocks_n <= 0 || plan.splits <= 0 || plan.blocks_n > 0x7fffffff || plan.splits > 65535) {
    return cudaErrorInvalidValue;
  }
  if (args.out_final ? (plan.splits != 1 || args.y == nullptr) : args.partials == nullptr) {
    return cudaErrorInvalidValue;
  }
  switch (kind) {
    case WeightKind::Int4: return wx::launch_int4(act, args, plan, stream);
    case WeightKind::Int2: return wx::launch_int2(act, args, plan, stream);
    case WeightKind::Int8: return wx::launch_int8(act, args, plan, stream);
    case WeightKind::Fp8E4M3: return wx::launch_e4m3(act, args, plan, stream);
    case WeightKind::Fp8E5M2: return wx::launch_e5m2(act, args, plan, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace lowbit::cuda::gemm
