# The README's two commands: `make demo` and `make test`. Both build their own
# virtual environment (.venv) on first use and reinstall the package when sources change.
PY          ?= python3
VENV        ?= .venv
VPY         := $(VENV)/bin/python
# torch 2.13.0 CPU is what this project is tested with; override for another platform.
TORCH_SPEC  ?= torch==2.13.0
CUDA_ARCHS  ?= 87;90
CUDA_BUILD  ?= build/cuda-check
PYTEST_ARGS ?=

DEPS_STAMP    := $(VENV)/.deps-stamp
INSTALL_STAMP := $(VENV)/.install-stamp
SOURCES := $(shell find runtime kernels bindings export bench training -type f \( -name '*.py' -o -name '*.cpp' -o -name '*.cc' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name 'CMakeLists.txt' -o -name '*.cmake' \) 2>/dev/null) CMakeLists.txt pyproject.toml

.PHONY: all demo test install cuda-compile gpu-carry clean train-tiny ship-tiny wer

all: install

$(DEPS_STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "$(TORCH_SPEC)"
	$(VPY) -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" "nlohmann-json>=3.11" "scipy-openblas32>=0.3.27" cmake ninja
	$(VPY) -m pip install -q numpy soxr soundfile tokenizers tqdm safetensors onnx onnxscript onnxruntime pyyaml sentencepiece pytest pytest-timeout transformers jsonschema kaldi-native-fbank
	touch $@

$(INSTALL_STAMP): $(DEPS_STAMP) $(SOURCES)
	$(VPY) -m pip install -q --no-build-isolation --no-deps .
	touch $@

install: $(INSTALL_STAMP)

demo: install
	$(VENV)/bin/minmo demo

# minmo-tiny (training/README.md): train from scratch (espeak-ng needed, about 21 min on 2 idle CPU cores),
# install a run as the packaged model, and the accuracy gate on held-out synthetic speech.
TINY_RUN ?= out/minmo_tiny
train-tiny: install
	$(VPY) -m minmo_rt.training.train --out $(TINY_RUN)

ship-tiny: install
	$(VPY) -m minmo_rt.training.ship $(TINY_RUN) --assets bindings/python/minmo_rt/assets

wer: install
	$(VENV)/bin/minmo-bench --wer --json out/wer.json

# Every CUDA source must compile for the edge (sm_87) and datacenter (sm_90) targets; also builds
# minmo_cuda_check (runtime/tools), the CUDA backend's check without Python.
cuda-compile: $(DEPS_STAMP)
	@if command -v nvcc >/dev/null 2>&1; then \
	  $(VENV)/bin/cmake -S . -B $(CUDA_BUILD) -G Ninja -DMINMO_CUDA=ON -DMINMO_BUILD_PYTHON=OFF \
	    "-DCMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCHS)" -DCMAKE_BUILD_TYPE=Release \
	    -DCMAKE_PREFIX_PATH="$$($(VPY) -c 'import pybind11,nlohmann_json,scipy_openblas32,os;print(";".join([pybind11.get_cmake_dir(), os.path.dirname(nlohmann_json.__file__), scipy_openblas32.get_lib_dir()]))')" && \
	  $(VENV)/bin/cmake --build $(CUDA_BUILD) --target minmo_kernels_cuda minmo_cuda_check; \
	else echo "nvcc not found: CUDA sources not compiled"; fi

# build/gpu-carry: minmo_cuda_check for sm_$(CARRY_ARCH) with test bundles, for kernels/tests/gpu_check.sh
# on a GPU machine without this project's build dependencies (kernels/tests/gpu_carry.sh).
CARRY_ARCH ?= 90
gpu-carry: install
	$(MAKE) cuda-compile CUDA_ARCHS=$(CARRY_ARCH) CUDA_BUILD=build/gpu-carry-build
	bash kernels/tests/gpu_carry.sh build/gpu-carry-build/runtime/minmo_cuda_check

test: install cuda-compile
	$(VPY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf build $(VENV) out
