"""Load test of the C++ runner: 8 caller threads share one Runner for 60 s (issue 9, not part of the test suite).

.venv/bin/python benchmarks/cpp_load.py [--bench-dir build/cpp] [--seconds 60] [--threads 8] [--warmup-seconds 10]

Exports a tiny TorchScript ViT (cpp/tests/_common.tiny_vit: 64x64, depth 2) with vitedge.export.export and runs
vitedge-load (cpp/tools/vitedge_load.cpp) on it with the bundled scikit-image photos: every output is compared
bit for bit with the single-threaded output of the same input, resident memory is sampled every second, and
the least-squares RSS slope after the warm-up is reported in MiB/min. OMP_NUM_THREADS=1 and one intra-op thread
per run: the concurrency is the 8 caller threads. Writes benchmarks/results/cpp_load.json; exit 1 if any output
differed or any run failed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "cpp" / "tests"))

from vitedge.files import write_json_atomic  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-dir", type=Path, default=ROOT / "build" / "cpp", help="C++ build dir holding cpp/vitedge-load")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--warmup-seconds", type=float, default=10)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpp_load.json")
    args = ap.parse_args()
    exe = args.bench_dir / "cpp" / "vitedge-load"
    if not exe.is_file():
        print(f"error: {exe} not found (build the C++ runner: make cpp)", file=sys.stderr)
        return 2
    from _common import export_tiny

    from vitedge.data import bundled_photo_paths
    from vitedge.machine import machine_info
    with tempfile.TemporaryDirectory() as tmp:
        art = export_tiny(Path(tmp) / "tiny")
        load_before = os.getloadavg()
        cmd = [str(exe), str(art), "--trust-code", *map(str, bundled_photo_paths()), "--threads", str(args.threads),
               "--seconds", str(args.seconds), "--warmup-seconds", str(args.warmup_seconds), "--intra-op", "1"]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        load_after = os.getloadavg()
    if r.returncode not in (0, 1) or not r.stdout.strip():
        print(f"error: vitedge-load exit {r.returncode}: {r.stderr.strip()}", file=sys.stderr)
        return 1
    result = json.loads(r.stdout)
    result["artifact"] = "tiny TorchScript ViT (64x64, patch 16, dim 64, depth 2, 10 classes) exported by vitedge.export"
    result["command"] = " ".join(["OMP_NUM_THREADS=1", exe.name, "ARTIFACT", "PHOTOS..."] + cmd[2 + len(bundled_photo_paths()):])
    result["machine"] = machine_info()
    result["note"] = (f"machine shared with other jobs while this ran (load average {load_before[0]:.1f} before, "
                      f"{load_after[0]:.1f} after, on {os.cpu_count()} CPUs): throughput is a lower bound, "
                      "RSS figures are what matter")
    write_json_atomic(args.out, result)
    rss = result["rss_mb"]
    print(f"{result['images']} images in {result['seconds']:.1f} s by {result['caller_threads']} threads: "
          f"{result['throughput_ips']:.1f} images/s; mismatches {result['mismatches']}, errors {result['errors']}; "
          f"RSS after warm-up {rss['after_warmup']:.1f} MiB, end {rss['end']:.1f} MiB, "
          f"slope {rss['slope_mb_per_min_after_warmup']:+.3f} MiB/min after warm-up, "
          f"{rss['slope_mb_per_min_last_half']:+.3f} MiB/min over its second half -> {args.out}")
    return 0 if r.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
