# vitedge: `make demo` installs everything and runs the main job; `make test` runs the whole test suite.
# Both start from a fresh clone: a venv in .venv with the CPU build of torch 2.13.0, and the C++ runner
# built against the libtorch inside that wheel.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.vitedge-installed
BUILD := build/cpp
APT_PKGS := libstb-dev nlohmann-json3-dev libssl-dev clang openssh-server
JOBS ?= 2
# Where torch's CPU build comes from. Empty: pip's own configuration, which on this project's machines serves
# 2.13.0+cpu (pip prefers it to PyPI's CUDA 2.13.0: a local version label sorts higher). Elsewhere PyPI has only
# the CUDA build for Linux; name PyTorch's CPU index: make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: setup demo test test-python test-cpp test-slow cpp sysdeps clean arm64 cpp-sanitize cpp-notorch

setup: $(STAMP) cpp

# Debian packages for the C++ runner: stb_image (image decoding), nlohmann-json (manifest parsing), libssl-dev (SHA-256),
# clang (libFuzzer targets of the manifest parser and image preprocessing; their ctests skip without it), openssh-server
# (tests/test_remote.py starts its own sshd on 127.0.0.1 for `vitedge bench --on`; it skips without it).
sysdeps:
	@dpkg -s $(APT_PKGS) >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PKGS) >/dev/null; }

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, on its own, so that `.[...]` below finds it satisfied: the CPU build, 2.13.0+cpu (see TORCH_INDEX)
	$(BIN)/pip install -q -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) )torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test,coreml,executorch,openvino,ray]'
	# the oracle: vit-pytorch's model files (its package deps pull torchvision, which has no CPU build here)
	$(BIN)/pip install -q -c constraints.txt --no-deps vit-pytorch
	touch $@

cpp: sysdeps $(STAMP)
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
	  -DVITEDGE_PYTHON="$(CURDIR)/$(PY)" >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

# The main job writes its table to artifacts/main/main_job.{md,json} (git-ignored): a run changes no tracked file.
# `make demo RECORD=1` writes it to benchmarks/results/main_job.{md,json}, the committed results, instead.
demo: setup
	$(PY) benchmarks/main_job.py$(if $(RECORD), --record)

test: setup
	$(PY) -m pytest -n $(JOBS) -q
	ctest --test-dir $(BUILD) --output-on-failure
	$(MAKE) --no-print-directory cpp-sanitize
	$(MAKE) --no-print-directory cpp-notorch

test-slow: setup
	$(PY) -m pytest -q -m slow

# The C++ runner's tests under AddressSanitizer + UndefinedBehaviorSanitizer, in its own build (build/cpp-asan).
# Our code is instrumented, libtorch is not; LeakSanitizer is on (no leaks reported, libtorch included).
# intercept_tls_get_addr=0: GCC 12's LeakSanitizer can crash at exit ("Tracer caught signal 11") walking the dynamic
# TLS of libraries loaded with dlopen (our backend plugins bring libtorch and libgomp in that way); a fresh-clone
# run hit it once in cpp_verified_bytes after all its checks passed. Fixed upstream in compiler-rt (LLVM D147459).
SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
cpp-sanitize: sysdeps $(STAMP)
	cmake -S . -B build/cpp-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS="$(SAN)" -DCMAKE_C_FLAGS="$(SAN)" \
	  -DCMAKE_EXE_LINKER_FLAGS="$(SAN)" -DCMAKE_SHARED_LINKER_FLAGS="$(SAN)" -DCMAKE_MODULE_LINKER_FLAGS="$(SAN)" \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
	  -DVITEDGE_PYTHON="$(CURDIR)/$(PY)" >/dev/null
	cmake --build build/cpp-asan -j$(JOBS) --target vitedge_unit_tests vitedge_image_tests vitedge-bench classify vitedge_threads_test vitedge_backends \
	  vitedge_c_api_test vitedge_verified_bytes_test
	ASAN_OPTIONS=detect_leaks=1:intercept_tls_get_addr=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir build/cpp-asan --output-on-failure -R '^cpp_(unit|image|bad_inputs|threads|c_api_c|verified_bytes|trust)$$'

# The runner built without libtorch (-DVITEDGE_WITH_TORCH=OFF: ONNX Runtime + OpenVINO), in build/cpp-notorch, and
# its ctests (cpp_notorch: no file links libtorch, TorchScript refused with the rebuild hint; ONNX Runtime parity).
cpp-notorch: sysdeps $(STAMP)
	cmake -S . -B build/cpp-notorch -DCMAKE_BUILD_TYPE=Release -DVITEDGE_WITH_TORCH=OFF -DVITEDGE_WITH_EXECUTORCH=OFF \
	  -DVITEDGE_FUZZ=OFF -DVITEDGE_TSAN=OFF -DVITEDGE_PYTHON="$(CURDIR)/$(PY)" >/dev/null
	cmake --build build/cpp-notorch -j$(JOBS)
	ctest --test-dir build/cpp-notorch --output-on-failure

# Cross-build the C++ runner for aarch64 Linux and check it under qemu-aarch64 (accuracy, not speed):
# unit tests + top-1 on the bundled photos vs x86; writes benchmarks/results/arm64_qemu.json.
arm64: $(STAMP) sysdeps
	JOBS=$(JOBS) scripts/arm64_qemu.sh

clean:
	rm -rf $(BUILD) build/cpp-asan build/cpp-notorch artifacts
