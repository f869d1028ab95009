"""ONNX Runtime latency of the ONNX target's graph fusions and stored session settings, side by side.

For each preset (random seeded weights at its paper input size) the script exports two ONNX artifacts with
vitedge.export.export: the exporter's graph (``target_options={"fusions": []}``) and the family's default fusions
(the family spec's "onnx" recipe, vitedge.models.registry.family_recipe). It then opens four sessions in one
process, 2 intra-op threads each:

  plain+spin      exporter's graph, ORT's default session config (what artifacts got before the fusions work)
  plain           exporter's graph, the stored session config (vitedge.targets.onnx.SESSION_CONFIG)
  plain(copy)     the same again: an A/A control, its distance from "plain" is the noise of this run
  fused           the family's fused graph, the stored session config (what `vitedge export --target onnx` writes)

and times them in interleaved rounds (random order each round; a 150 ms pause before each session's block so the
previous session's spinning workers are asleep, plus one untimed run to wake this one's): median wall-clock
latency (ms) and mean process CPU time per run (ms, user + system of all threads; 10 ms clock ticks, averaged).
Batch 1 and 8, on the bundled photos. The machine's load average is recorded before and after.

    .venv/bin/python scripts/onnx_fusion_bench.py [--presets deit_tiny,levit_128s,mobilevit_xs] [--rounds 30]
        [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bench_preset(preset: str, rounds: int, work: Path, threads: int = 2) -> dict:
    from vitedge.data import bundled_photo_paths, load_batch
    from vitedge.export import export, prepare_preset
    from vitedge.targets import onnx as onnx_target

    model, spec, pre = prepare_preset(preset)
    size = tuple(pre["size"])
    arts = {}
    for name, fusions in (("plain", []), ("fused", None)):
        arts[name] = export(model, torch.zeros(2, 3, *size), "onnx", work / f"{preset}_{name}", force=True, spec=spec,
                            preprocessing=pre, target_options={"fusions": fusions})
    stored = onnx_target.SESSION_CONFIG
    runners = {
        "plain+spin": onnx_target.OnnxRuntimeRunner(arts["plain"].file, threads, {}),
        "plain": onnx_target.OnnxRuntimeRunner(arts["plain"].file, threads, stored),
        "plain(copy)": onnx_target.OnnxRuntimeRunner(arts["plain"].file, threads, stored),
        "fused": onnx_target.OnnxRuntimeRunner(arts["fused"].file, threads, stored),
    }
    photos = load_batch(bundled_photo_paths(), pre).numpy()
    rng = random.Random(0)
    result = {"preset": preset, "size": list(size), "threads": threads, "rounds": rounds,
              "fusions": arts["fused"].manifest["onnxruntime"]["graph_optimizer"],
              "fused_ops": arts["fused"].manifest["onnxruntime"]["fusions"]["fused"],
              "unfused": arts["fused"].manifest["onnxruntime"]["fusions"]["unfused"],
              "session_config": stored, "batches": {}}
    for batch, iters in ((1, 5), (8, 1)):
        x = np.ascontiguousarray(photos[np.arange(batch) % len(photos)])
        ref = runners["plain"].run(x)[0]
        for r in runners.values():
            for _ in range(3):
                r.run(x)
        wall = {k: [] for k in runners}
        cpu = {k: [] for k in runners}
        for _ in range(rounds):
            order = list(runners)
            rng.shuffle(order)
            for k in order:
                time.sleep(0.15)
                runners[k].run(x)
                for _ in range(iters):
                    c0, t0 = os.times(), time.perf_counter()
                    runners[k].run(x)
                    t1, c1 = time.perf_counter(), os.times()
                    wall[k].append((t1 - t0) * 1e3)
                    cpu[k].append((c1.user + c1.system - c0.user - c0.system) * 1e3)
        out = {k: {"latency_ms_p50": round(statistics.median(wall[k]), 2),
                   "latency_ms_p25": round(float(np.percentile(wall[k], 25)), 2),
                   "cpu_ms_per_run": round(float(np.mean(cpu[k])), 2)} for k in runners}
        got = runners["fused"].run(x)[0]
        out["fused_vs_plain_max_abs"] = float(np.abs(got - ref).max())
        result["batches"][str(batch)] = out
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="deit_tiny,levit_128s,mobilevit_xs")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the results (default: print only)")
    args = ap.parse_args()
    from vitedge.machine import machine_info
    import onnxruntime
    report = {"machine": machine_info(), "onnxruntime": onnxruntime.__version__, "load_before": _load_avg(),
              "results": []}
    with tempfile.TemporaryDirectory(prefix="vitedge-fusion-bench-") as tmp:
        for preset in args.presets.split(","):
            report["results"].append(bench_preset(preset, args.rounds, Path(tmp)))
            print(json.dumps(report["results"][-1]["batches"]), flush=True)
    report["load_after"] = _load_avg()
    print(f"load average before {report['load_before']}, after {report['load_after']}")
    for r in report["results"]:
        for b, v in r["batches"].items():
            cells = "  ".join(f"{k} {v[k]['latency_ms_p50']} ms ({v[k]['cpu_ms_per_run']} cpu)"
                              for k in ("plain+spin", "plain", "plain(copy)", "fused"))
            print(f"{r['preset']} b{b}: {cells}  fused-plain max|diff| {v['fused_vs_plain_max_abs']:.1e}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
