#!/usr/bin/env bash
# Prepare .gpu/ (gitignored) on a machine WITH network, for scripts/gpu_check.sh on a CUDA machine WITHOUT network.
#
#   scripts/gpu_prepare.sh            # then carry .gpu along to the GPU machine and run scripts/gpu_check.sh there
#
# What it puts in .gpu/:
#   sysroot/   the C++ runner's build dependencies that a CUDA image may lack, unpacked from Debian packages with
#              dpkg-deb -x (no root needed, nothing installed here): libstb-dev (stb_image headers), nlohmann-json3-dev
#              (nlohmann/json.hpp + CMake config), libssl-dev + libssl3 (OpenSSL headers and libcrypto). Static
#              libraries, docs and man pages are dropped to keep the folder small. gpu_check.sh uses a package from
#              here only where the machine has no copy of its own.
#   wheels/    Python wheels, downloaded for GPU_PYTHON_VERSION (default 3.12, the GPU image's python3) with pip
#              download --only-binary --no-deps: GPU_WHEELS (default "scikit-image==0.26.0", the version this
#              project's venv has, for the photos bundled inside it). The GPU image's python3 has every module vitedge
#              imports for export/bench (torch, numpy, onnx, pillow, tabulate, scikit-image, rich, safetensors), so
#              gpu_check.sh installs these wheels only if importing vitedge or finding the bundled photos fails there.
#   MANIFEST   what was fetched (package versions, sizes).
# Exit status: 0 when everything was fetched and unpacked, 1 otherwise (one line saying what failed).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.gpu
DEBS="libstb-dev libstb0 nlohmann-json3-dev libssl-dev libssl3"
GPU_PYTHON_VERSION=${GPU_PYTHON_VERSION:-3.12}
GPU_WHEELS=${GPU_WHEELS-scikit-image==0.26.0}
PY=${PYTHON:-python3}

die() { echo "gpu_prepare: error: $*" >&2; exit 1; }
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "needs apt-get and dpkg-deb (Debian/Ubuntu)"

rm -rf "$DEST/debs" "$DEST/sysroot" "$DEST/wheels"
mkdir -p "$DEST/debs" "$DEST/sysroot" "$DEST/wheels"
(cd "$DEST/debs" && apt-get download $DEBS >/dev/null 2>&1) || {
  # The package lists may be missing (a fresh container): refresh them (root or sudo) and try once more.
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  (cd "$DEST/debs" && apt-get download $DEBS >/dev/null) || die "apt-get download $DEBS failed"
}
for f in "$DEST"/debs/*.deb; do dpkg-deb -x "$f" "$DEST/sysroot"; done
# Keep headers, shared libraries and CMake/pkg-config files only.
find "$DEST/sysroot" \( -name '*.a' -o -path '*/share/doc*' -o -path '*/share/man*' -o -path '*/share/lintian*' \) \
  -prune -exec rm -rf {} + 2>/dev/null || true
[ -f "$DEST/sysroot/usr/include/stb/stb_image.h" ] || die "stb_image.h missing after unpacking libstb-dev"
[ -f "$DEST/sysroot/usr/include/nlohmann/json.hpp" ] || die "nlohmann/json.hpp missing after unpacking"
[ -f "$DEST/sysroot/usr/include/openssl/sha.h" ] || die "openssl/sha.h missing after unpacking libssl-dev"

if [ -n "$GPU_WHEELS" ]; then
  nodot=${GPU_PYTHON_VERSION//./}
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$GPU_PYTHON_VERSION" \
    --implementation cp --abi "cp$nodot" --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$DEST/wheels" $GPU_WHEELS || die "pip download $GPU_WHEELS failed"
fi

{
  echo "prepared $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME")"
  for f in "$DEST"/debs/*.deb; do dpkg-deb -f "$f" Package Version | paste -sd' '; done
  ls "$DEST/wheels"
  du -sh "$DEST/sysroot" "$DEST/wheels"
} > "$DEST/MANIFEST"
rm -rf "$DEST/debs"  # unpacked above; not carried
cat "$DEST/MANIFEST"
echo "gpu_prepare: .gpu is ready ($(du -sh "$DEST" | cut -f1)); carry it: run scripts/gpu_check.sh with carry [\".gpu\"]"
