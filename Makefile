# One command each, from a fresh clone:
#   make demo   set up .venv, build lowbit, run the main job (examples/quickstart.py)
#   make test   set up .venv, build lowbit, run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test bench dev asan portable-check cuda-check transformers-compat clean

$(VENV)/.ready: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q scikit-build-core pybind11 ninja
	touch $@

setup: $(VENV)/.ready
	$(PIP) install -q --no-build-isolation ".[test]"

demo: setup
	HF_HUB_OFFLINE=1 $(PY) examples/quickstart.py

# pytest exits 5 when it collects nothing; that is not a failure of the suite.
test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

bench: setup
	$(PIP) install -q ".[bench]" --no-build-isolation
	$(PY) bench/primitives.py

# Developer build: compile into build/dev and drop _C next to the sources, so
# that `PYTHONPATH=python` imports the tree as it is (no install).
dev:
	cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE=$$(command -v $(abspath $(PY)) || command -v $(PY) || command -v python) >/dev/null
	cmake --build build/dev
	cp build/dev/_C*.so python/lowbit/

clean:
	rm -rf build python/lowbit/_C*.so

# The op tests under AddressSanitizer (docs/development.md).
asan:
	cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOWBIT_ASAN=ON -DPython_EXECUTABLE=$$(command -v $(abspath $(PY)) || command -v $(PY) || command -v python) >/dev/null
	cmake --build build/asan
	cp build/asan/_C*.so python/lowbit/
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=python $(PY) -m pytest -q -p no:cacheprovider tests/ops

# The kernels must build and link without the AVX2 sources, as on a non-x86 machine:
# compile csrc/cpu/*.cpp alone (no LOWBIT_HAVE_AVX2) and link with no undefined symbol.
portable-check:
	rm -rf build/portable-check && mkdir -p build/portable-check
	for f in csrc/cpu/*.cpp; do $(CXX) -std=c++17 -O1 -fPIC -Wall -c -Icsrc/include -Icsrc $$f -o build/portable-check/$$(basename $$f .cpp).o || exit 1; done
	$(CXX) -shared -Wl,--no-undefined build/portable-check/*.o -o build/portable-check/libkernels.so
	@echo "portable-only kernels build and link"

# Without a GPU the CUDA build is skipped, so CI compiles every kernel file with nvcc
# (compile only, for each default architecture) and syntax-checks the CUDA glue with
# the installed torch's headers (a stub stands in for the CMake-generated macro header
# that CPU wheels lack). Needs nvcc; says so and succeeds without it.
NVCC ?= $(shell command -v nvcc || echo /usr/local/cuda/bin/nvcc)
CUDA_ARCHS ?= 80 86 89 90
cuda-check: $(VENV)/.ready
	@if [ ! -x "$(NVCC)" ]; then echo "cuda-check: no nvcc, skipped"; exit 0; fi; \
	rm -rf build/cuda-check && mkdir -p build/cuda-check/stub/c10/cuda/impl && \
	gen=""; for a in $(CUDA_ARCHS); do gen="$$gen -gencode=arch=compute_$$a,code=sm_$$a"; done; \
	for f in csrc/cuda/*.cu; do [ -e "$$f" ] || continue; echo "nvcc $$f"; \
	  $(NVCC) -std=c++17 -O3 --expt-relaxed-constexpr $$gen -Icsrc/include -Icsrc -c $$f -o build/cuda-check/$$(basename $$f .cu).o || exit 1; done; \
	printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > build/cuda-check/stub/c10/cuda/impl/cuda_cmake_macros.h; \
	inc=$$($(PY) -c "import torch.utils.cpp_extension as c; print(' '.join('-isystem'+p for p in c.include_paths()))"); \
	for d in "$$CUDA_HOME" "$$(dirname $$(dirname $$(readlink -f $(NVCC))))" /usr/local/cuda; do \
	  cudainc="$$d/include"; [ -e "$$cudainc/cuda_runtime.h" ] && break; done; \
	for f in csrc/ops/cuda/*.cpp; do [ -e "$$f" ] || continue; echo "syntax $$f"; \
	  $(CXX) -std=c++17 -fsyntax-only -Wall -DLOWBIT_WITH_CUDA=1 -Ibuild/cuda-check/stub $$inc -isystem$$cudainc -Icsrc/include -Icsrc $$f || exit 1; done; \
	echo "CUDA kernels compile; CUDA glue passes the syntax check"

# transformers changed its loading hooks within 5.x, so the integration tests also run against
# the oldest release we support (see pyproject's hf extra), reusing the extension `make setup`
# built (same torch) from the source tree.
TRANSFORMERS_MIN ?= 5.17.0
TFMIN_VENV := .venv-tfmin
transformers-compat: setup
	[ -x $(TFMIN_VENV)/bin/python ] || $(PYTHON) -m venv $(TFMIN_VENV)
	$(TFMIN_VENV)/bin/python -m pip install -q torch==$(TORCH_VERSION) transformers==$(TRANSFORMERS_MIN) \
	    accelerate safetensors tqdm numpy pytest expecttest "gguf>=0.10"
	cp "$$($(PY) -c 'import lowbit, os; print(os.path.dirname(lowbit.__file__))')"/_C*.so python/lowbit/
	HF_HUB_OFFLINE=1 PYTHONPATH=python $(TFMIN_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/integrations tests/cli tests/workflow/test_gguf_qtypes.py
