"""The report step of scripts/gpu_check.sh: gather what the steps left in WORK and write one JSON of results.

    python scripts/gpu_check_report.py --work WORK --device cuda --preset deit_tiny \
        --targets "torchscript aotinductor" --precisions "fp32 fp16" --photo PHOTO --bench BENCH --out OUT.json

For every expected artifact (PRESET-TARGET-PRECISION) it records and checks:
- export: the artifact exists, its manifest says ``export.device`` = the device kind, and the parity export measured
  on that device at batches 1, 3 and 8 (bundled photos, against fp32 eager on the CPU) is within the tolerance
  stored beside it (export refuses to write an artifact outside it, so a present artifact passed);
- python: `vitedge bench --device` ran and reports that device; its p50 (ms);
- cpp: `vitedge-bench --device` ran and reports that device; its p50, and the bare loop's; the C++ Runner's output
  for PHOTO (``--dump-output``, float32) against fp32 eager PyTorch on the CPU on the same photo preprocessed by
  vitedge.data (the C++ preprocessing is the same uint8 pipeline): max abs, cosine, top-1, within the export's
  tolerance for that precision and device (fp32 on CUDA: cosine >= 0.9999; fp32 on CPU: max abs 1e-4 and the
  same top-1; fp16: cosine >= 0.999).
Exit status 0 when every check passed, 1 otherwise; the JSON says which failed and why.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cpp_parity(art: Path, dump: Path, photo: Path, device_kind: str) -> dict:
    """C++ Runner output (raw float32 dump) vs fp32 eager on the CPU for ``photo``: metrics, tolerance, failures."""
    import torch

    from vitedge.data import load_batch
    from vitedge.export import CUDA_FP32_TOLERANCE, build_model
    from vitedge.validate import check_tolerance, compare, tolerance_for
    m = json.loads((art / "manifest.json").read_text())
    eager = build_model(m["model"])
    x = load_batch([photo], m["preprocessing"])
    with torch.inference_mode():
        ref = eager(x)
    ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).numpy()
    got = np.fromfile(dump, dtype="<f4")
    if got.size != ref.size:
        return {"failures": [f"C++ output has {got.size} values, eager {ref.size}"]}
    metrics = compare(ref, got.reshape(ref.shape))
    precision = m.get("precision", "fp32")
    tol = dict(CUDA_FP32_TOLERANCE) if precision == "fp32" and device_kind == "cuda" else tolerance_for(precision)
    tol.pop("max_drop_points", None)
    return {"metrics": metrics, "tolerance": tol, "failures": check_tolerance(metrics, tol)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--targets", required=True)
    ap.add_argument("--precisions", required=True)
    ap.add_argument("--photo", type=Path, required=True)
    ap.add_argument("--bench", default="")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--total-seconds", type=int)
    args = ap.parse_args()
    kind = args.device.partition(":")[0]
    runs = args.work / "runs"
    steps = [json.loads(line) for line in (args.work / "steps.jsonl").read_text().splitlines() if line.strip()] \
        if (args.work / "steps.jsonl").is_file() else []
    checks, rows = [], []

    def check(name: str, passed: bool, detail: str = "") -> bool:
        checks.append({"check": name, "passed": bool(passed), "detail": detail})
        return passed

    env = read_json(args.work / "env.json")
    check("env", env is not None and (kind != "cuda" or env.get("cuda_available")),
          "torch sees the device" if env else "the env step failed (see gpu_check.log)")
    build = [s for s in steps if s["step"] in ("cmake", "build")]
    if build:
        check("cpp-build", all(s["rc"] == 0 for s in build) and len(build) == 2,
              "; ".join(f"{s['step']} rc={s['rc']} in {s['seconds']}s" for s in build))
    for target in args.targets.split():
        for prec in args.precisions.split():
            name = f"{args.preset}-{target}-{prec}"
            art = args.work / "art" / name
            row = {"artifact": name, "target": target, "precision": prec, "device": args.device}
            rows.append(row)
            man = read_json(art / "manifest.json")
            if not check(f"export:{name}", man is not None and (man.get("export") or {}).get("device") == kind,
                         "exported" if man else "no artifact (export failed or timed out: see gpu_check.log)"):
                continue
            par = man["parity"]
            row["export_parity"] = {k: {x: v[x] for x in ("max_abs", "cosine", "top1_agreement")}
                                    for k, v in par.items() if k.startswith("batch_")}
            row["export_tolerance"] = par.get("tolerance")
            row["size_mb"] = round(sum(f["bytes"] for f in man["files"].values()) / 2**20, 2)
            py = read_json(runs / f"{name}.python.json")
            if check(f"python:{name}", py is not None and py.get("device") == args.device,
                     f"p50 {py['latency_ms']['p50']:.3f} ms on {py.get('device')}" if py else "vitedge bench failed"):
                row["python_p50_ms"] = py["latency_ms"]["p50"]
                row["python_runtime"] = py["runtime"]
            cpp = read_json(runs / f"{name}.cpp.json")
            if check(f"cpp:{name}", cpp is not None and cpp.get("device") == args.device,
                     f"p50 {cpp['latency_ms']['p50']:.3f} ms on {cpp.get('device')}" if cpp
                     else "vitedge-bench failed or was not built"):
                row["cpp_p50_ms"] = cpp["latency_ms"]["p50"]
                row["cpp_runtime"] = cpp.get("runtime")
                dump = runs / f"{name}.cpp.f32"
                p = cpp_parity(art, dump, args.photo, kind) if dump.is_file() else {"failures": ["no output dump"]}
                row["cpp_parity_vs_cpu_eager"] = p
                check(f"cpp-parity:{name}", not p["failures"], "; ".join(p["failures"]) or
                      f"max abs {p['metrics']['max_abs']:.2e}, cosine {p['metrics']['cosine']:.6f}")
            bare = read_json(runs / f"{name}.bare.json")
            if bare is not None:
                row["bare_p50_ms"] = bare["latency_ms"]["p50"]
            if "cpp_p50_ms" in row and "python_p50_ms" in row:
                row["ratio_cpp_python"] = row["cpp_p50_ms"] / row["python_p50_ms"]
    failed = [c for c in checks if not c["passed"]]
    result = {"check": "gpu_check", "device": args.device, "preset": args.preset, "photo": args.photo.name,
              "passed": not failed, "failed": [c["check"] for c in failed], "env": env, "steps": steps,
              "total_seconds": args.total_seconds, "rows": rows, "checks": checks}
    from vitedge.machine import machine_info
    result["machine"] = machine_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(f"{r['artifact']:32s} python {r.get('python_p50_ms', float('nan')):8.3f} ms  cpp "
              f"{r.get('cpp_p50_ms', float('nan')):8.3f} ms  bare {r.get('bare_p50_ms', float('nan')):8.3f} ms")
    print(f"gpu_check: {'PASSED' if not failed else 'FAILED: ' + ', '.join(c['check'] for c in failed)} "
          f"({len(checks)} checks) -> {args.out}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
