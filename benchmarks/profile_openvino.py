"""Where an OpenVINO artifact spends its time: per-layer profiling counters of OpenVINO's CPU plugin, summed by
layer type and kernel (``exec_type``, e.g. ``brgemm_avx512_amx_I8``, ``jit_avx512_FP32``), for one or more
artifacts compiled with the config their manifest carries. Not a test: ``python benchmarks/profile_openvino.py
ARTIFACT [ARTIFACT ...] --batch 1 --threads 2`` (an exported ``--target openvino`` folder each).

Used for the speed goals' "profile that says why": which share of an int8 artifact still runs float kernels, and
which layer types dominate. Each artifact: ``--warmup`` untimed calls, then ``--iters`` calls with
``PERF_COUNT=YES``; a layer's time is its mean real time per call (``ProfilingInfo.real_time``), in ms. Outputs a
markdown table per artifact (``--out`` writes them plus JSON).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitedge.files import write_json_atomic, write_text_atomic  # noqa: E402
from vitedge.machine import machine_info  # noqa: E402
from vitedge.manifest import read_manifest  # noqa: E402
from vitedge.report import markdown_table  # noqa: E402

COLUMNS = [("layer type", "node_type", "{}"), ("kernel", "exec_type", "{}"), ("layers", "count", "{}"),
           ("ms per call", "ms", "{:.3f}"), ("share %", "share", "{:.1f}")]


def profile(path: Path, batch: int, threads: int, iters: int, warmup: int) -> dict:
    """Per (layer type, kernel) time of one OpenVINO artifact: ``{"artifact", "config", "total_ms", "wall_p50_ms",
    "rows"}``: rows sorted by time, ``ms`` the mean per call over ``iters`` calls; ``wall_p50_ms`` the p50 of
    ``iters`` timed calls of the same compile without profiling counters (made and released first)."""
    import openvino as ov
    art = read_manifest(path)  # checks every file's SHA-256
    m = art.manifest
    config = {**m["openvino"]["config"], "PERF_COUNT": "YES", "INFERENCE_NUM_THREADS": threads}
    _, c, h, w = m["inputs"][0]["shape"]
    x = np.random.default_rng(0).standard_normal((batch, c, h, w)).astype(np.float32)
    # the same compile without profiling counters: its p50 wall time per call, of which layer time is a part (the
    # rest: the runtime's own work between layers, e.g. waking and joining threads at each layer boundary)
    plain = ov.Core().compile_model(str(art.file), "CPU", {k: v for k, v in config.items() if k != "PERF_COUNT"})
    req = plain.create_infer_request()
    for _ in range(warmup):
        req.infer({0: x})
    wall = []
    for _ in range(iters):
        t0 = time.perf_counter()
        req.infer({0: x})
        wall.append((time.perf_counter() - t0) * 1e3)
    del req, plain  # first, and gone before the profiled compile: no second model's threads running beside it
    compiled = ov.Core().compile_model(str(art.file), "CPU", config)
    req = compiled.create_infer_request()
    for _ in range(warmup):
        req.infer({0: x})
    acc: dict[tuple[str, str], list[float]] = {}
    for _ in range(iters):
        req.infer({0: x})
        for p in req.get_profiling_info():
            if p.status != p.Status.EXECUTED:
                continue
            key = (p.node_type, p.exec_type)
            slot = acc.setdefault(key, [0.0, 0])
            slot[0] += p.real_time.total_seconds() * 1e3
            slot[1] += 1
    total = sum(v[0] for v in acc.values()) / iters
    rows = [{"node_type": k[0], "exec_type": k[1], "count": v[1] // iters, "ms": v[0] / iters,
             "share": 100 * v[0] / iters / total} for k, v in acc.items()]
    rows.sort(key=lambda r: -r["ms"])
    return {"artifact": str(path), "precision": m["precision"], "config": config, "total_ms": total,
            "wall_p50_ms": float(np.median(wall)), "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=machine_info()["cores"])
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--top", type=int, default=12, help="rows per table (the rest summed as 'other')")
    ap.add_argument("--out", type=Path, help="write <out>.md and <out>.json")
    args = ap.parse_args()
    machine = machine_info()
    text = [f"# OpenVINO per-layer profile\n\n{machine['cpu']}, {machine['cores']} cores, flags: "
            f"{', '.join(machine['flags'])}; batch {args.batch}, {args.threads} threads, mean of {args.iters} "
            "calls (`benchmarks/profile_openvino.py`). Wall p50: the same compile without profiling counters, timed "
            "per call; layer time is the sum of the layers' own times, so wall minus layer time is spent between layers."]
    results = []
    for path in args.artifacts:
        r = profile(path, args.batch, args.threads, args.iters, args.warmup)
        results.append(r)
        rows = r["rows"][:args.top]
        rest = r["rows"][args.top:]
        if rest:
            rows = rows + [{"node_type": "other", "exec_type": f"{len(rest)} kinds", "count": sum(x["count"] for x in rest),
                            "ms": sum(x["ms"] for x in rest), "share": sum(x["share"] for x in rest)}]
        text.append(f"## {path.parent.name}/{path.name} ({r['precision']}, INFERENCE_PRECISION_HINT "
                    f"{r['config'].get('INFERENCE_PRECISION_HINT')}): {r['total_ms']:.2f} ms of layer time per call, "
                    f"wall p50 {r['wall_p50_ms']:.2f} ms"
                    f"\n\n{markdown_table(rows, COLUMNS)}")
    out = "\n\n".join(text) + "\n"
    print(out)
    if args.out:
        write_text_atomic(args.out.with_suffix(".md"), out)
        write_json_atomic(args.out.with_suffix(".json"), {"machine": machine, "batch": args.batch,
                                                          "threads": args.threads, "iters": args.iters,
                                                          "artifacts": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
