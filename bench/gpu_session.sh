#!/usr/bin/env bash
# One GPU session, start to finish in under 9 minutes: build lowbit from source with its
# CUDA kernels, run the CUDA tests and then the whole suite (failures do not stop the
# script), then the CUDA GEMM benchmark with whatever time is left. Everything it produces
# goes to $OUT (at most 8 files): session.log, build.log, pytest_cuda.log, pytest.log, bench.log,
# kernels_cuda.{json,md,png}.
#
#   OUT=/some/dir bash bench/gpu_session.sh          (from the repository root)
#
# Expects python3 with torch (CUDA build), cmake, ninja, pybind11, scikit-build-core and
# pytest; no network access is needed.
set -u
export PYTHONUNBUFFERED=1
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
# An error raised by one of our ops must reach Python as a RuntimeError (a build that mixed two
# libstdc++ copies once segfaulted here instead; see CMakeLists.txt).
python3 -c "
import torch, lowbit
try:
    torch.ops.lowbit.choose_scale_fp8(torch.randn(4, 12), torch.float8_e4m3fn, None, 5)
except RuntimeError as e:
    print('error path ok:', str(e)[:80])" >> "$OUT/session.log" 2>&1 || log "ERROR PATH BROKEN (exit $?)"
HAVE_CUDA_OPS=$(python3 -c "import torch, lowbit
print(int(all(torch._C._dispatch_has_kernel_for_dispatch_key('lowbit::' + op, 'CUDA')
              for op in ('linear_intx', 'linear_int8', 'linear_fp8'))))" 2>> "$OUT/session.log")
python3 -c "import lowbit; print('build_info', lowbit.build_info())" >> "$OUT/session.log" 2>&1
log "CUDA kernels registered for the linear ops: ${HAVE_CUDA_OPS:-?}"

# 2. The CUDA tests (and the CPU emulation of the CUDA GEMM's layout) on their own.
log "pytest CUDA tests (timeout ${TEST_TIMEOUT_S}s)"
timeout "$TEST_TIMEOUT_S" python3 -m pytest -q -p no:cacheprovider -rfE tests/ops/cuda \
    tests/ops/test_gemm_cuda_emulation.py > "$OUT/pytest_cuda.log" 2>&1
rc=$?
log "pytest (CUDA) exit code $rc: $(tail -1 "$OUT/pytest_cuda.log")"
grep -E "^(FAILED|ERROR)" "$OUT/pytest_cuda.log" | head -40 >> "$OUT/session.log"

if [ "${HAVE_CUDA_OPS:-0}" != "1" ]; then
  log "no CUDA kernels in this build (was nvcc / a CUDA torch found by CMake?): benchmark skipped"
  exit 1
fi

# 3. Benchmark with the time that is left minus what the rest of the suite needs
#    (kept >= 60 s; it writes what it has when the budget ends).
SUITE_S=${SUITE_S:-100}; [ "${SKIP_SUITE:-0}" = "1" ] && SUITE_S=0
LEFT=$(( TOTAL_S - $(elapsed) - SUITE_S - 20 ))
[ "$LEFT" -lt 60 ] && LEFT=60
log "bench/kernels_cuda.py (budget ${LEFT}s)"
timeout $(( LEFT + 60 )) python3 bench/kernels_cuda.py --out "$OUT" --budget-s "$LEFT" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
log "bench exit code $?"

# 4. The rest of the suite, in parallel where pytest-xdist is there (it is in the image).
if [ "${SKIP_SUITE:-0}" = "1" ]; then log "rest of the suite skipped (SKIP_SUITE=1)"; log "done"; exit 0; fi
XDIST=""; python3 -c "import xdist" 2>/dev/null && XDIST="-n 8"
LEFT=$(( TOTAL_S - $(elapsed) - 10 )); [ "$LEFT" -lt 30 ] && LEFT=30
log "pytest whole suite $XDIST (timeout ${LEFT}s)"
OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 timeout "$LEFT" python3 -m pytest -q -p no:cacheprovider -rfE $XDIST tests --ignore=tests/ops/cuda \
    > "$OUT/pytest.log" 2>&1
log "pytest (suite) exit code $?: $(tail -1 "$OUT/pytest.log")"
grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -40 >> "$OUT/session.log"
log "done"
ls -la "$OUT" >> "$OUT/session.log"
