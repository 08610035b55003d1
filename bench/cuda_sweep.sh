#!/usr/bin/env bash
# Sweeps the CUDA GEMM's tuning knobs (environment variables read once per process, see
# docs/cuda.md) on two shapes, one process per setting, after bench/gpu_session.sh built the
# tree. Appends one line per (shape, M) and setting to $OUT/sweep.log. About 2.5 minutes on an H100.
#
#   OUT=/some/dir bash bench/cuda_sweep.sh          (from the repository root)
set -u
OUT=${OUT:-bench/out/cuda_sweep}
mkdir -p "$OUT"
export PYTHONPATH=python PYTHONUNBUFFERED=1
run() {
  echo "== $*" | tee -a "$OUT/sweep.log"
  env "$@" python3 bench/kernels_cuda.py --out /tmp/lowbit_sweep --shapes 8192x8192,8192x28672 \
    --m 1,2,4,8,16,32,64,128,256 --variants bf16,int4pack,w4a16,w8a16,w2a16 --reps 30 2>&1 \
    | grep "^N=" >> "$OUT/sweep.log"
}
run LOWBIT_SWEEP=default
for kw in 1 2 4; do run LOWBIT_CUDA_GEMM_KW=$kw; done
for sp in 1 2 4 8 16 32; do run LOWBIT_CUDA_GEMM_SPLITS=$sp; done
run LOWBIT_CUDA_SMALL_M_MAX=256 LOWBIT_CUDA_W8A16_M_MAX=256
