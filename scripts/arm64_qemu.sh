#!/usr/bin/env bash
# Cross-build the vitedge C++ runner for aarch64 (arm64) Linux and check it under qemu-aarch64 on this x86 host:
#   1. Debian packages: g++-aarch64-linux-gnu, qemu-user (+ the runner's header-only libstb-dev, nlohmann-json3-dev)
#   2. cached in build/arm64-deps: the torch aarch64 manylinux wheel (its libtorch), the executorch aarch64
#      manylinux wheel of the venv's executorch version (its C++ runtime: libexecutorch*.so with the XNNPACK
#      delegate and CPU kernels, headers, CMake config; in et-wheel/), Debian arm64 zlib1g (libtorch's bundled
#      libgfortran needs it), libssl3 + libssl-dev (the runner's SHA-256)
#   3. cmake with cpp/cmake/aarch64-linux-gnu.toolchain.cmake into build/arm64, ExecuTorch on (executorch_DIR =
#      the aarch64 wheel's CMake config); off in the cross build: the Python-driven ctest tests (VITEDGE_PYTHON is
#      the host's x86 Python), TensorRT, the clang/libFuzzer and ThreadSanitizer sub-builds (host tools); the
#      ONNX Runtime backend is built (dlopen, no link-time library) but not run here (no arm64 libonnxruntime)
#   4. under qemu-aarch64: the C++ unit tests, cpp/tests/parity.py, then vitedge-bench (and the classify example when it builds) on
#      every bundled photo with a TorchScript artifact exported here on x86 (seeded weights), compared with x86
#      PyTorch and an x86 build of the same sources: top-1 must agree (scripts/arm64_qemu_compare.py); the same
#      for an ExecuTorch (.pte, XNNPACK) artifact of the same model exported here on x86, compared with the x86
#      Python ExecuTorch runtime, eager PyTorch and the x86 C++ build.
# Writes benchmarks/results/arm64_qemu.json. This proves the arm64 build and its accuracy, not its speed:
# qemu emulates every arm64 instruction on the x86 CPU.
#
# Environment: PRESET (default deit_tiny), IMAGE_SIZE (default 112; the preset's default is 224, slow under
# qemu), JOBS (default 2), X86_REF=0 skips the x86 C++ reference build (PyTorch stays the reference),
# TORCH_AARCH64 (default 2.9.1: the torch version whose aarch64 wheel provides libtorch), EXECUTORCH (default 1
# when the venv has executorch; 0 builds and checks without the ExecuTorch backend), ET_VERSION (default: the
# venv's executorch version; the .pte is exported by the venv, so the runtime should be the same release).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PY:-$ROOT/.venv/bin/python}
DEPS=$ROOT/build/arm64-deps
BUILD=$ROOT/build/arm64
X86_BUILD=$ROOT/build/arm64-x86ref
WORK=$ROOT/build/arm64-work
RESULT=$ROOT/benchmarks/results/arm64_qemu.json
TRIPLE=aarch64-linux-gnu
TORCH_AARCH64=${TORCH_AARCH64:-2.9.1}
PRESET=${PRESET:-deit_tiny}
IMAGE_SIZE=${IMAGE_SIZE:-112}
JOBS=${JOBS:-2}
X86_REF=${X86_REF:-1}
ET_VERSION=${ET_VERSION:-$("$PY" -c 'import importlib.metadata as m; print(m.version("executorch"))' 2>/dev/null || true)}
EXECUTORCH=${EXECUTORCH:-$([ -n "$ET_VERSION" ] && echo 1 || echo 0)}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }  # seconds since a now() value
say() { printf '\n== %s\n' "$*"; }
die() { printf 'arm64_qemu.sh: error: %s\n' "$*" >&2; exit 1; }
[ -x "$PY" ] || die "$PY not found: run 'make setup' first (the venv exports the artifact and is the x86 reference)"
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

# ---- 1. host packages -------------------------------------------------------------------------------------
APT_PKGS="g++-$TRIPLE qemu-user libstb-dev nlohmann-json3-dev"
if ! dpkg -s $APT_PKGS >/dev/null 2>&1; then
  say "apt-get install $APT_PKGS"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_PKGS >/dev/null
fi
# apt-get download of :arm64 packages needs the arm64 package lists (nothing arm64 is installed on the host).
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  say "dpkg --add-architecture arm64 (package lists only, to download arm64 .debs)"
  $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq
fi

# ---- 2. cached arm64 dependencies ---------------------------------------------------------------------------
mkdir -p "$DEPS"
if [ ! -f "$DEPS/wheel/.unpacked-$TORCH_AARCH64" ]; then
  say "torch $TORCH_AARCH64 aarch64 wheel (libtorch for arm64)"
  "$PY" -m pip download -q "torch==$TORCH_AARCH64" --platform manylinux_2_28_aarch64 --only-binary=:all: \
    --no-deps -d "$DEPS"
  rm -rf "$DEPS/wheel"
  "$PY" -m zipfile -e "$DEPS"/torch-"$TORCH_AARCH64"-*manylinux_2_28_aarch64.whl "$DEPS/wheel"
  touch "$DEPS/wheel/.unpacked-$TORCH_AARCH64"
fi
WHEEL=$(cd "$DEPS" && ls torch-"$TORCH_AARCH64"-*manylinux_2_28_aarch64.whl | head -1)
# The ExecuTorch C++ runtime for arm64: the executorch aarch64 wheel ships libexecutorch.so and its components
# (XNNPACK delegate, optimized/quantized CPU kernels, thread pool) as shared libraries, with headers and the
# CMake config (executorch/share/cmake) that cpp/CMakeLists.txt reads. Unpacked in et-wheel/unpacked.
ET_DEPS=$DEPS/et-wheel
ET_WHEEL=
ET_CMAKE=(-DVITEDGE_WITH_EXECUTORCH=OFF)
if [ "$EXECUTORCH" = 1 ]; then
  [ -n "$ET_VERSION" ] || die "EXECUTORCH=1 but $PY has no executorch (pip install 'vitedge[executorch]')"
  if [ ! -f "$ET_DEPS/unpacked/.unpacked-$ET_VERSION" ]; then
    say "executorch $ET_VERSION aarch64 wheel (the ExecuTorch C++ runtime for arm64)"
    mkdir -p "$ET_DEPS"
    "$PY" -m pip download -q "executorch==$ET_VERSION" --platform manylinux_2_28_aarch64 --only-binary=:all: \
      --no-deps -d "$ET_DEPS"
    rm -rf "$ET_DEPS/unpacked"
    "$PY" -m zipfile -e "$ET_DEPS"/executorch-"$ET_VERSION"-*manylinux_2_28_aarch64.whl "$ET_DEPS/unpacked"
    touch "$ET_DEPS/unpacked/.unpacked-$ET_VERSION"
  fi
  ET_WHEEL=$(cd "$ET_DEPS" && ls executorch-"$ET_VERSION"-*manylinux_2_28_aarch64.whl | head -1)
  ET_CMAKE=(-DVITEDGE_WITH_EXECUTORCH=ON -Dexecutorch_DIR="$ET_DEPS/unpacked/executorch/share/cmake")
fi
ARM_DEBS="zlib1g libssl3 libssl-dev"
if [ ! -f "$DEPS/sysroot/.unpacked" ]; then
  say "Debian arm64 packages: $ARM_DEBS"
  rm -rf "$DEPS/debs" "$DEPS/sysroot"
  mkdir -p "$DEPS/debs" "$DEPS/sysroot"
  # apt-get download writes into the current folder; root runs it unsandboxed (a harmless warning).
  (cd "$DEPS/debs" && apt-get download -q $(printf '%s:arm64 ' $ARM_DEBS) 2>&1 | grep -v "unsandboxed" || true)
  for pkg in $ARM_DEBS; do
    ls "$DEPS"/debs/"${pkg}"_*_arm64.deb >/dev/null 2>&1 || die "apt-get download $pkg:arm64 failed"
  done
  for deb in "$DEPS"/debs/*.deb; do dpkg-deb -x "$deb" "$DEPS/sysroot"; done
  touch "$DEPS/sysroot/.unpacked"
fi
# Header-only host packages, re-rooted so the cross compiler is never pointed at the host's /usr/include.
mkdir -p "$DEPS/host-headers/include" "$DEPS/host-headers/share/cmake/nlohmann_json"
ln -sfn /usr/include/stb "$DEPS/host-headers/include/stb"
ln -sfn /usr/include/nlohmann "$DEPS/host-headers/include/nlohmann"
cp /usr/share/cmake/nlohmann_json/*.cmake "$DEPS/host-headers/share/cmake/nlohmann_json/"

# ---- 3. cross build -----------------------------------------------------------------------------------------
TORCH_DIR=$DEPS/wheel/torch/share/cmake/Torch
say "cross-configure + build -> $BUILD"
t0=$(now)
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$ROOT/cpp/cmake/$TRIPLE.toolchain.cmake" \
  -DVITEDGE_AARCH64_DEPS="$DEPS" -DTorch_DIR="$TORCH_DIR" \
  -Dnlohmann_json_DIR="$DEPS/host-headers/share/cmake/nlohmann_json" \
  -DVITEDGE_PYTHON= -DVITEDGE_WITH_TENSORRT=OFF "${ET_CMAKE[@]}" -DVITEDGE_FUZZ=OFF -DVITEDGE_TSAN=OFF \
  >/dev/null
cmake --build "$BUILD" -j"$JOBS"
CROSS_BUILD_S=$(since "$t0")
file -b "$BUILD/cpp/vitedge-bench"
if [ "$EXECUTORCH" = 1 ]; then
  # The backend must really be in this build: a library of it (libvitedge.so, or a backend plugin) links the
  # arm64 libexecutorch.so.
  file -b "$ET_DEPS/unpacked/executorch/lib/libexecutorch.so"
  find "$BUILD/cpp" -name 'lib*.so*' -not -path '*/CMakeFiles/*' -exec aarch64-linux-gnu-readelf -d {} + 2>/dev/null \
    | grep -q 'NEEDED.*\[libexecutorch\.so\]' \
    || die "no library in $BUILD/cpp links libexecutorch.so: the ExecuTorch backend was not built"
fi

# ---- 4. run under qemu ----------------------------------------------------------------------------------------
QEMU_VERSION=$(qemu-aarch64 --version | head -1)
# One wrapper per arm64 executable, so callers (the compare script, the Python-driven ctest scripts) exec a path.
mkdir -p "$BUILD/qemu"
wrap() {  # wrap EXE -> $BUILD/qemu/<name>
  local w="$BUILD/qemu/$(basename "$1")"
  cat >"$w" <<EOF
#!/bin/sh
# $QEMU_VERSION: run the aarch64 $(basename "$1") with the cross sysroot's loader/libc and the arm64 .debs in $DEPS.
exec qemu-aarch64 -L /usr/$TRIPLE -E LD_LIBRARY_PATH=$DEPS/sysroot/lib/$TRIPLE:$DEPS/sysroot/usr/lib/$TRIPLE "$1" "\$@"
EOF
  chmod +x "$w"
  echo "$w"
}
BENCH_Q=$(wrap "$BUILD/cpp/vitedge-bench")
UNIT_Q=$(wrap "$BUILD/cpp/vitedge_unit_tests")
CLASSIFY_Q=
[ -x "$BUILD/cpp/classify" ] && CLASSIFY_Q=$(wrap "$BUILD/cpp/classify")

say "C++ unit tests under qemu-aarch64"
t0=$(now)
"$UNIT_Q"
UNIT_S=$(since "$t0")

say "parity test (cpp/tests/parity.py) with the arm64 vitedge-bench under qemu"
t0=$(now)
PYTHONPATH="$ROOT" PYTHONDONTWRITEBYTECODE=1 "$PY" cpp/tests/parity.py --bench "$BENCH_Q" --workdir "$WORK/test-parity"
PARITY_S=$(since "$t0")

X86_BENCH=
if [ "$X86_REF" = 1 ]; then
  say "x86 reference build of the same sources -> $X86_BUILD (configured like 'make cpp')"
  cmake -S "$ROOT" -B "$X86_BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
    -DVITEDGE_PYTHON="$PY" -DVITEDGE_BUILD_TESTS=OFF -DVITEDGE_FUZZ=OFF -DVITEDGE_TSAN=OFF >/dev/null
  cmake --build "$X86_BUILD" -j"$JOBS" --target vitedge-bench
  X86_BENCH=$X86_BUILD/cpp/vitedge-bench
fi

ART=$WORK/$PRESET-$IMAGE_SIZE-torchscript
say "export $PRESET at ${IMAGE_SIZE}x$IMAGE_SIZE to TorchScript on x86 (torch $("$PY" -c 'import torch; print(torch.__version__)'), seed 0) -> $ART"
rm -rf "$ART"
"$ROOT/.venv/bin/vitedge" export "$PRESET" --target torchscript --image-size "$IMAGE_SIZE" "$IMAGE_SIZE" -o "$ART"
ET_ART=
if [ "$EXECUTORCH" = 1 ]; then
  ET_ART=$WORK/$PRESET-$IMAGE_SIZE-executorch
  say "export $PRESET at ${IMAGE_SIZE}x$IMAGE_SIZE to ExecuTorch (.pte, XNNPACK) on x86 (executorch $ET_VERSION, seed 0) -> $ET_ART"
  rm -rf "$ET_ART"
  "$ROOT/.venv/bin/vitedge" export "$PRESET" --target executorch --image-size "$IMAGE_SIZE" "$IMAGE_SIZE" -o "$ET_ART"
fi

say "bundled photos: arm64 (qemu) vs x86"
t0=$(now)
"$PY" "$ROOT/scripts/arm64_qemu_compare.py" --artifact "$ART" --arm64-bench "$BENCH_Q" \
  ${X86_BENCH:+--x86-bench "$X86_BENCH"} ${CLASSIFY_Q:+--arm64-classify "$CLASSIFY_Q"} \
  --workdir "$WORK/compare" --json "$RESULT" --qemu-version "$QEMU_VERSION" --wheel "$WHEEL" \
  --cross-compiler "$($TRIPLE-g++ --version | head -1)" \
  --timing "cross_build_s=$CROSS_BUILD_S" --timing "unit_tests_qemu_s=$UNIT_S" \
  --timing "parity_test_qemu_s=$PARITY_S" \
  ${ET_ART:+--et-artifact "$ET_ART" --et-wheel "$ET_WHEEL"}
COMPARE_S=$(since "$t0")
printf '\ntimings (wall, this machine, loaded): cross-build %.0f s, unit tests under qemu %.1f s, parity test %.0f s, photos (qemu + x86) %.0f s\n' \
  "$CROSS_BUILD_S" "$UNIT_S" "$PARITY_S" "$COMPARE_S"
echo "qemu times are emulation times on x86: they prove nothing about arm64 speed"
