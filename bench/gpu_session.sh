#!/usr/bin/env bash
# One GPU session, start to finish in under 9 minutes: build lowbit from source with its
# CUDA kernels, run the CUDA tests and then the whole suite (failures do not stop the
# script), then the CUDA GEMM benchmark with whatever time is left. Everything it produces
# goes to $OUT (at most 8 files): session.log, build.log, pytest.log, bench.log,
# kernels_cuda.{json,md,png}.
#
#   OUT=/some/dir bash bench/gpu_session.sh          (from the repository root)
#
# Expects python3 with torch (CUDA build), cmake, ninja, pybind11, scikit-build-core and
# pytest; no network access is needed.
set -u
OUT=${OUT:-bench/out/gpu_session}
mkdir -p "$OUT"
TOTAL_S=${TOTAL_S:-530}          # the whole session
TEST_TIMEOUT_S=${TEST_TIMEOUT_S:-200}
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
log() { echo "[$(elapsed)s] $*" | tee -a "$OUT/session.log"; }

: > "$OUT/session.log"
log "host $(hostname); $(nproc) cores"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  nvcc --version 2>&1 | tail -2
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" 2>&1
} >> "$OUT/session.log"

# 1. Build (sm_90 only: one architecture keeps nvcc well under the time limit). -Xptxas -v goes
#    to build.log so spills and local memory of the kernels can be read there.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export CUDAFLAGS="${CUDAFLAGS:-} -Xptxas -v"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
log "build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
rm -rf build/dev
if make dev PY=python3 > "$OUT/build.log" 2>&1; then
  log "build ok; ptxas reports: $(grep -c 'bytes spill stores' "$OUT/build.log"), with spills:" \
      "$(grep 'bytes spill stores' "$OUT/build.log" | grep -vc ' 0 bytes spill stores'), with a stack frame:" \
      "$(grep 'bytes stack frame' "$OUT/build.log" | grep -vc ' 0 bytes stack frame')"
else
  log "BUILD FAILED (tail of build.log follows)"
  tail -40 "$OUT/build.log" | tee -a "$OUT/session.log"
  exit 1
fi
export PYTHONPATH=python
HAVE_CUDA_OPS=$(python3 -c "import torch, lowbit
print(int(all(torch._C._dispatch_has_kernel_for_dispatch_key('lowbit::' + op, 'CUDA')
              for op in ('linear_intx', 'linear_int8', 'linear_fp8'))))" 2>> "$OUT/session.log")
python3 -c "import lowbit; print('build_info', lowbit.build_info())" >> "$OUT/session.log" 2>&1
log "CUDA kernels registered for the linear ops: ${HAVE_CUDA_OPS:-?}"

# 2. Tests: the CUDA tests first, then the whole suite (pytest drops the duplicates).
log "pytest (timeout ${TEST_TIMEOUT_S}s)"
timeout "$TEST_TIMEOUT_S" python3 -m pytest -q -p no:cacheprovider -rfE tests/ops/cuda tests > "$OUT/pytest.log" 2>&1
rc=$?
log "pytest exit code $rc: $(tail -1 "$OUT/pytest.log")"
grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -40 >> "$OUT/session.log"

if [ "${HAVE_CUDA_OPS:-0}" != "1" ]; then
  log "no CUDA kernels in this build (was nvcc / a CUDA torch found by CMake?): benchmark skipped"
  exit 1
fi

# 3. Benchmark with the time that is left (kept >= 60 s; it writes what it has when the budget ends).
LEFT=$(( TOTAL_S - $(elapsed) - 30 ))
[ "$LEFT" -lt 60 ] && LEFT=60
log "bench/kernels_cuda.py (budget ${LEFT}s)"
timeout $(( LEFT + 60 )) python3 bench/kernels_cuda.py --out "$OUT" --budget-s "$LEFT" > "$OUT/bench.log" 2>&1
log "bench exit code $?"
log "done"
ls -la "$OUT" >> "$OUT/session.log"
