"""Runner overhead: Python runtime call vs the C++ runner vs a bare backend loop, per backend, batch 1 and 8.

    python benchmarks/cpp_overhead.py [--bench build/cpp/cpp/vitedge-bench] [--preset deit_tiny] [--rounds 3]

For each backend the C++ runner has here (TorchScript, AOTInductor; ONNX Runtime when it is built in), the
preset (seeded weights) is exported once and timed, on the same real photo, in three ways:
- Python: ``vitedge.bench.bench`` (the target's Python runner: torch.jit / aoti_load_package / onnxruntime),
- C++ runner: ``vitedge-bench --image`` (vitedge::Runner::run: shape/NaN checks, input wrap, output copy),
- bare loop: ``vitedge-bench --bare`` (the backend's own run call on a prepared input, nothing else).
All with 1 intra-op thread (the machine is shared; see the machine block). The three are interleaved in
``--rounds`` rounds; each cell is the median over rounds of the round's p50 (ms). Overhead % = (C++ p50 -
bare p50) / bare p50; the goal is <= 3 %. Writes benchmarks/results/cpp_overhead.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitedge.bench import bench as py_bench  # noqa: E402
from vitedge.data import bundled_photo_paths  # noqa: E402
from vitedge.export import export, prepare_preset  # noqa: E402
from vitedge.machine import machine_info  # noqa: E402

TARGETS = ["torchscript", "aotinductor", "onnx"]


def cpp(exe: Path, art: Path, photo: Path, batch: int, iters: int, warmup: int, bare: bool) -> dict:
    cmd = [str(exe), str(art), "--trust-code", "--image", str(photo), "--batch", str(batch), "--threads", "1",
           "--iters", str(iters), "--warmup", str(warmup)] + (["--bare"] if bare else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return json.loads(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", type=Path, default=ROOT / "build/cpp/cpp/vitedge-bench")
    ap.add_argument("--preset", default="deit_tiny")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cpp_overhead")
    args = ap.parse_args()
    torch.set_num_threads(1)
    photo = bundled_photo_paths()[0]
    work = Path(tempfile.mkdtemp(prefix="vitedge-overhead-"))
    model, spec, pre = prepare_preset(args.preset)
    example = torch.zeros(2, 3, *pre["size"])
    arts = {}
    for t in TARGETS:
        art = export(model, example, t, work / t, force=True, spec=spec, preprocessing=pre)
        try:
            cpp(args.bench, art.path, photo, 1, 1, 0, False)
            cpp(args.bench, art.path, photo, 1, 1, 0, True)  # the backend has a bare loop
        except RuntimeError as e:
            print(f"{t}: not run by this C++ runner: {e}")
            continue
        arts[t] = art.path
        print(f"exported {t}")
    samples: dict = {}
    load_before = os.getloadavg()
    for rnd in range(args.rounds):
        for t, path in arts.items():
            for b in (1, 8):
                row = samples.setdefault((t, b), {"python": [], "cpp": [], "bare": []})
                row["python"].append(py_bench(path, batch=b, threads=1, warmup=args.warmup, iters=args.iters,
                                              images=None, trust_code=True)["latency_ms"]["p50"])  # ours
                row["cpp"].append(cpp(args.bench, path, photo, b, args.iters, args.warmup, False)["latency_ms"]["p50"])
                row["bare"].append(cpp(args.bench, path, photo, b, args.iters, args.warmup, True)["latency_ms"]["p50"])
                print(f"round {rnd + 1} {t} batch {b}: " + ", ".join(f"{k} {v[-1]:.2f} ms" for k, v in row.items()))
    rows = []
    for (t, b), row in samples.items():
        med = {k: float(np.median(v)) for k, v in row.items()}
        rows.append({"backend": t, "batch": b, "python_p50_ms": med["python"], "cpp_p50_ms": med["cpp"],
                     "bare_p50_ms": med["bare"],
                     "cpp_overhead_pct": 100 * (med["cpp"] - med["bare"]) / med["bare"],
                     "python_overhead_pct": 100 * (med["python"] - med["bare"]) / med["bare"],
                     "rounds": {k: v for k, v in row.items()}})
    machine = machine_info()
    load = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    result = {"load_average_1_5_15min": load, "preset": args.preset, "input": pre["size"], "threads": 1, "rounds": args.rounds, "iters": args.iters,
              "warmup": args.warmup, "photo": photo.name, "machine": machine, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(str(args.out) + ".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Runner overhead, {args.preset} {pre['size'][0]}x{pre['size'][1]}, 1 thread, median of {args.rounds} "
             f"rounds' p50 ({args.iters} iters each), on {machine['cpu']} ({machine['cores']} cores, shared; "
             f"load average {load['before'][0]} before, {load['after'][0]} after)", "",
             "| backend | batch | Python p50 (ms) | C++ runner p50 (ms) | bare loop p50 (ms) | C++ overhead % | Python overhead % |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['batch']} | {r['python_p50_ms']:.2f} | {r['cpp_p50_ms']:.2f} | "
                     f"{r['bare_p50_ms']:.2f} | {r['cpp_overhead_pct']:+.1f} | {r['python_overhead_pct']:+.1f} |")
    Path(str(args.out) + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
