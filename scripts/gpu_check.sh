#!/usr/bin/env bash
# The CUDA check of the libtorch targets (TorchScript, AOTInductor), Python and C++, on a machine with a CUDA GPU,
# PyTorch with CUDA in its python3, no network and no TensorRT. Prepare .gpu/ first where there is network
# (scripts/gpu_prepare.sh) and carry it along. See docs/gpu.md.
#
#   scripts/gpu_check.sh                 # DEVICE=cuda (default)
#   DEVICE=cpu scripts/gpu_check.sh      # the same steps on the CPU (how it is tested on the build machine)
#
# Steps, each bounded with `timeout` (the whole run is meant to end within 8 minutes on the GPU machine):
#   1. env      python3, torch, CUDA and GPU, nvcc, cmake; stops here if DEVICE=cuda and torch sees no GPU
#   2. build    (in the background, overlapping 3-4) the C++ runner's vitedge-bench against the libtorch inside
#               python3's torch wheel (CUDA libtorch on the GPU machine), C++ deps from the system or .gpu/sysroot
#   3. export   PRESET (default deit_tiny, seeded weights) to torchscript and aotinductor at fp32 and fp16 with
#               `vitedge export --device DEVICE`; export itself runs each artifact on DEVICE at batches 1, 3, 8 on the
#               bundled photos against fp32 eager on the CPU and refuses it outside tolerance
#   4. python   `vitedge bench ART --device DEVICE` (batch 1)
#   5. cpp      `vitedge-bench ART --device DEVICE --image PHOTO` (Runner, with its first output dumped) and --bare
#   6. report   scripts/gpu_check_report.py: parity of the C++ output vs fp32 eager on the CPU for the same photo,
#               the export parity, the latencies; writes OUTDIR/gpu_check.json; exit 0 only if every check passed
# Environment: DEVICE (cuda|cpu), PRESET, TARGETS ("torchscript aotinductor"), PRECISIONS ("fp32 fp16"), PYTHON
# (python3), VITEDGE_BENCH (an already built vitedge-bench: skips step 2), OUT or OUTDIR (results folder; default
# build/gpu_check), BUDGET (450 s for the whole check), WARMUP (10), ITERS (50), JOBS (nproc), REUSE=1 (keep artifacts a previous run exported),
# GPU_FORCE_SYSROOT=1 (C++ deps from .gpu/sysroot even where the system has them).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-deit_tiny}
TARGETS=${TARGETS:-torchscript aotinductor}
PRECISIONS=${PRECISIONS:-fp32 fp16}
PY=${PYTHON:-python3}
OUTDIR=${OUTDIR:-${OUT:-$ROOT/build/gpu_check}}
WORK=$ROOT/build/gpu_check-$DEVICE
WARMUP=${WARMUP:-10}
ITERS=${ITERS:-50}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUTDIR" "$WORK/art" "$WORK/runs"
LOG=$OUTDIR/gpu_check.log
STEPS=$WORK/steps.jsonl
: > "$LOG"
: > "$STEPS"
T0=$(date +%s)
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$WORK/inductor-cache

log() { echo "[gpu_check $(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }
# The whole check ends within BUDGET seconds (default 450): each step's timeout is cut to what is left, keeping
# REPORT_RESERVE seconds for the report, and a step with under 5 s left is skipped (rc 125), so the JSON is always
# written even when something hangs.
BUDGET=${BUDGET:-450}
REPORT_RESERVE=40
DEADLINE=$(( T0 + BUDGET ))
# step NAME TIMEOUT_S CMD...: run CMD under `timeout`, its output to the log, one JSON line per step in STEPS.
step() {
  local name=$1 limit=$2; shift 2
  local t=$(date +%s)
  local left=$(( DEADLINE - REPORT_RESERVE - t ))
  [ "$name" = report ] && left=$(( DEADLINE - t > 20 ? DEADLINE - t : 20 ))
  if [ $left -lt 5 ]; then
    log "step $name skipped: the ${BUDGET}s budget is spent"
    printf '{"step": "%s", "rc": 125, "seconds": 0, "timeout_s": 0, "skipped": "budget spent"}\n' "$name" >> "$STEPS"
    return 125
  fi
  [ $left -lt $limit ] && limit=$left
  log "step $name (timeout ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t ))
  [ $rc = 124 ] && log "step $name TIMED OUT after ${limit}s" || log "step $name rc=$rc (${dt}s)"
  printf '{"step": "%s", "rc": %d, "seconds": %d, "timeout_s": %d}\n' "$name" "$rc" "$dt" "$limit" >> "$STEPS"
  return $rc
}

# ---- 1. env ---------------------------------------------------------------------------------------------------
PYCHECK='import vitedge.cli, vitedge.export, rich; from vitedge.data import bundled_photo_paths; bundled_photo_paths()'
if ! "$PY" -c "$PYCHECK" 2>>"$LOG"; then
  if ls "$ROOT"/.gpu/wheels/*.whl >/dev/null 2>&1; then  # carried wheels (scripts/gpu_prepare.sh)
    step wheels 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$WORK/site" \
      "$ROOT"/.gpu/wheels/*.whl
    export PYTHONPATH=$ROOT:$WORK/site${PYTHONPATH#$ROOT}
  else
    log "python3 lacks a module vitedge needs and .gpu/wheels is empty (see the log; scripts/gpu_prepare.sh)"
  fi
fi
step env 120 "$PY" - "$DEVICE" "$WORK/env.json" <<'EOF'
import json, platform, shutil, subprocess, sys
device, out = sys.argv[1], sys.argv[2]
import torch
import vitedge.cli  # noqa: F401  (every module export/bench needs imports)
def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[-1]
    except Exception as e:  # noqa: BLE001
        return f"unavailable: {e}"
env = {"python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
       "cuda_available": torch.cuda.is_available(), "device": device, "platform": platform.platform(),
       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
       "nvcc": version(["nvcc", "--version"]) if shutil.which("nvcc") else None,
       "cmake": (subprocess.run(["cmake", "--version"], capture_output=True, text=True).stdout.splitlines() or [""])[0]
       if shutil.which("cmake") else None}
print(json.dumps(env, indent=2))
open(out, "w").write(json.dumps(env, indent=2) + "\n")
if device.startswith("cuda") and not torch.cuda.is_available():
    sys.exit("DEVICE=cuda but this torch sees no CUDA GPU")
EOF
ENV_RC=$?

# ---- 2. build (background) ------------------------------------------------------------------------------------
BENCH=${VITEDGE_BENCH:-}
BUILD_PID=
if [ $ENV_RC = 0 ] && [ -z "$BENCH" ]; then
  BUILD=$WORK/cpp-build
  BENCH=$BUILD/cpp/vitedge-bench
  SYS=$ROOT/.gpu/sysroot/usr
  CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=Release -DVITEDGE_BUILD_TESTS=OFF -DVITEDGE_WITH_TENSORRT=OFF
              "-DCMAKE_PREFIX_PATH=$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')")
  # A C++ dependency missing on this machine comes from .gpu/sysroot (GPU_FORCE_SYSROOT=1: always, to test it).
  has() { [ "${GPU_FORCE_SYSROOT:-0}" = 0 ] && [ -f "$1" ]; }
  need_sysroot() { [ -d "$SYS" ] || { log "missing $1 and no .gpu/sysroot (run scripts/gpu_prepare.sh where there is network)"; }; }
  has /usr/include/stb/stb_image.h || { need_sysroot stb; CMAKE_ARGS+=("-DSTB_INCLUDE_DIR=$SYS/include"); }
  has /usr/include/nlohmann/json.hpp || { need_sysroot nlohmann-json; CMAKE_ARGS+=("-Dnlohmann_json_DIR=$SYS/share/cmake/nlohmann_json"); }
  has /usr/include/openssl/sha.h || { need_sysroot openssl; CMAKE_ARGS+=("-DOPENSSL_ROOT_DIR=$SYS" "-DOPENSSL_INCLUDE_DIR=$SYS/include"
    "-DOPENSSL_CRYPTO_LIBRARY=$SYS/lib/x86_64-linux-gnu/libcrypto.so"); }
  if [ "${DEVICE%%:*}" = cuda ]; then
    command -v nvcc >/dev/null && CMAKE_ARGS+=("-DCMAKE_CUDA_COMPILER=$(command -v nvcc)")
    # Keep libtorch_cuda.so as a dependency although no symbol of it is referenced directly: it registers the CUDA
    # kernels when loaded; dropped by --as-needed, libtorch would report no CUDA at run time.
    CMAKE_ARGS+=("-DCMAKE_EXE_LINKER_FLAGS=-Wl,--no-as-needed" "-DCMAKE_SHARED_LINKER_FLAGS=-Wl,--no-as-needed"
                 "-DCMAKE_MODULE_LINKER_FLAGS=-Wl,--no-as-needed")
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # nothing is compiled for the GPU; skips detection
  fi
  log "cmake args: ${CMAKE_ARGS[*]}"
  # vitedge-bench and any backend plugin targets (vitedge_backend_*: libraries it may load at run time); tests off.
  build_targets() {
    local t
    t=$(cmake --build "$BUILD" --target help 2>/dev/null | sed -n 's/^\.\.\. \(vitedge_backend_[A-Za-z0-9_]*\).*/\1/p')
    echo vitedge-bench $t
  }
  ( step cmake 150 cmake -G "Unix Makefiles" -S "$ROOT" -B "$BUILD" "${CMAKE_ARGS[@]}" &&
    step build 360 cmake --build "$BUILD" -j"$JOBS" --target $(build_targets) ) &
  BUILD_PID=$!
fi

# ---- 3-4. export and Python bench -----------------------------------------------------------------------------
PHOTO=$("$PY" -c 'from vitedge.data import bundled_photo_paths; print(bundled_photo_paths()[0])' 2>>"$LOG")
ARTS=()
if [ $ENV_RC = 0 ]; then
  for target in $TARGETS; do
    for prec in $PRECISIONS; do
      name=$PRESET-$target-$prec
      art=$WORK/art/$name
      rm -f "$WORK/runs/$name".*
      if [ "${REUSE:-0}" = 1 ] && [ -f "$art/manifest.json" ]; then
        log "reusing $art (REUSE=1)"
        ARTS+=("$name")
        step "python:$name" 120 "$PY" -m vitedge.cli bench "$art" --device "$DEVICE" --trust-code --batch 1 \
          --warmup "$WARMUP" --iters "$ITERS" --no-progress --json "$WORK/runs/$name.python.json"
      elif step "export:$name" 300 "$PY" -m vitedge.cli export "$PRESET" --target "$target" --precision "$prec" \
           --device "$DEVICE" -o "$art" --force; then
        ARTS+=("$name")
        step "python:$name" 120 "$PY" -m vitedge.cli bench "$art" --device "$DEVICE" --trust-code --batch 1 \
          --warmup "$WARMUP" --iters "$ITERS" --no-progress --json "$WORK/runs/$name.python.json"
      fi
    done
  done
fi

# ---- 5. C++ -----------------------------------------------------------------------------------------------------
if [ -n "$BUILD_PID" ]; then wait "$BUILD_PID"; fi
if [ ${#ARTS[@]} -gt 0 ] && [ -x "$BENCH" ]; then
  for name in "${ARTS[@]}"; do
    art=$WORK/art/$name
    step "cpp:$name" 120 "$BENCH" "$art" --device "$DEVICE" --trust-code --image "$PHOTO" --batch 1 \
      --warmup "$WARMUP" --iters "$ITERS" --json "$WORK/runs/$name.cpp.json" --dump-output "$WORK/runs/$name.cpp.f32"
    step "cpp-bare:$name" 120 "$BENCH" "$art" --device "$DEVICE" --trust-code --image "$PHOTO" --batch 1 \
      --warmup "$WARMUP" --iters "$ITERS" --bare --json "$WORK/runs/$name.bare.json"
  done
elif [ ${#ARTS[@]} -gt 0 ]; then
  log "no vitedge-bench ($BENCH): C++ steps not run"
fi

# ---- 6. report ----------------------------------------------------------------------------------------------------
step report 120 "$PY" "$ROOT/scripts/gpu_check_report.py" --work "$WORK" --device "$DEVICE" --preset "$PRESET" \
  --targets "$TARGETS" --precisions "$PRECISIONS" --photo "$PHOTO" --bench "$BENCH" --out "$OUTDIR/gpu_check.json" \
  --total-seconds "$(( $(date +%s) - T0 ))"
RC=$?
log "done in $(( $(date +%s) - T0 ))s: $OUTDIR/gpu_check.json (exit $RC)"
exit $RC
