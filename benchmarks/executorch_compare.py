"""ExecuTorch (XNNPACK) fp32 and int8 beside ONNX Runtime fp32 and TorchScript fp32, per preset, in one run on
this CPU. Not a test: `python benchmarks/executorch_compare.py`.

For each preset: a digits-trained checkpoint (64x64; with ``--train`` trained here if absent, else the
preset's seeded weights at 64x64 / 10 classes and no top-1 column), exported in this script to
ExecuTorch fp32, ExecuTorch int8 (PT2E, XNNPACKQuantizer, the family's default mode: static calibrated on 128 digits train images, dynamic for MobileViT), ONNX
fp32 and TorchScript fp32; top-1 on the held-out digits for the ExecuTorch artifacts (``validate``); latency at
batch 1 with ``--threads`` threads through :func:`vitedge.bench.bench` (ExecuTorch: its XNNPACK threadpool is
resized to that many threads; ONNX Runtime: intra-op threads; TorchScript: torch's intra-op threads), in
interleaved rounds (every artifact once per round) so load drifts hit all alike. Reported p50/p90 are the
medians over rounds of each round's p50/p90. Writes benchmarks/results/executorch_compare.{json,md} with the
CPU model and ISA flags.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitedge.bench import bench  # noqa: E402
from vitedge.export import export, prepare_preset  # noqa: E402
from vitedge.machine import machine_info  # noqa: E402
from vitedge.files import write_json_atomic, write_text_atomic  # noqa: E402
from vitedge.quantize import calibration_data  # noqa: E402
from vitedge.targets.executorch import default_int8_mode  # noqa: E402
from vitedge.report import markdown_table  # noqa: E402
from vitedge.train import train_digits  # noqa: E402
from vitedge.validate import validate  # noqa: E402

VARIANTS = [  # (name, target, precision)
    ("executorch fp32", "executorch", "fp32"),
    ("executorch int8", "executorch", "int8"),
    ("onnxruntime fp32", "onnx", "fp32"),
    ("torchscript fp32", "torchscript", "fp32"),
]
COLUMNS = [("preset", "preset", "{}"), ("weights", "weights", "{}"), ("input", "input", "{}"), ("artifact", "variant", "{}"), ("runtime", "runtime", "{}"),
           ("size MB", "size_mb", "{:.2f}"), ("export s", "export_s", "{:.0f}"),
           ("top-1 %", "top1", "{:.2f}"), ("drop (pts)", "drop_points", "{:+.2f}"),
           ("p50 ms b1", "p50", "{:.3f}"), ("p90 ms b1", "p90", "{:.3f}"), ("p50 x ORT", "x_ort", "{:.2f}")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", nargs="+", default=["mobilevit_xs", "levit_128s", "deit_tiny"])
    ap.add_argument("--checkpoints", default=str(ROOT / "artifacts/executorch_compare/checkpoints"),
                    help="folder of digits checkpoints PRESET.safetensors (trained with defaults if absent)")
    ap.add_argument("--train", action="store_true", help="train missing checkpoints (else: seeded weights, "
                    "latency only, no top-1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "artifacts/executorch_compare"))
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    rows: list[dict] = []
    arts: dict[tuple[str, str], object] = {}
    for preset in args.presets:
        ck = Path(args.checkpoints) / f"{preset}.safetensors"
        if not ck.exists() and args.train:
            print(f"training {preset} on digits ...", flush=True)
            train_digits(preset, ck, log=None)
        if ck.exists():
            model, spec, pre = prepare_preset(preset, checkpoint=ck)
        else:  # latency only: seeded weights at the digits checkpoints' size and class count
            model, spec, pre = prepare_preset(preset, num_classes=10, image_size=(64, 64))
        calib, calib_info = calibration_data("digits", pre, 128)
        for name, target, precision in VARIANTS:
            quant = None
            if precision == "int8":
                mode = default_int8_mode(spec["family"])  # the CLI's per-family recipe (MobileViT: dynamic)
                quant = {"mode": mode, "calibration": calib.numpy(), "calibration_info": calib_info}
            path = out / preset / name.replace(" ", "_")
            shutil.rmtree(path, ignore_errors=True)
            t0 = time.perf_counter()
            try:
                art = export(model, torch.zeros(2, 3, *pre["size"]), target, path, force=True, spec=spec, preprocessing=pre,
                             precision=precision, quantization=quant, labels=[str(i) for i in range(10)])
            except Exception as e:  # noqa: BLE001 - a failed variant is a result too
                print(f"{preset} {name}: export failed: {e}", flush=True)
                rows.append({"preset": preset, "variant": name, "error": str(e)})
                continue
            row = {"preset": preset, "variant": name, "target": target, "precision": precision,
                   "weights": "digits checkpoint" if ck.exists() else "seeded (untrained)",
                   "input": "x".join(str(v) for v in pre["size"]),
                   "artifact": str(art.path), "size_mb": art.size_mb, "export_s": time.perf_counter() - t0,
                   "parity": {k: v for k, v in art.manifest["parity"].items() if k.startswith("batch_")}}
            if target == "executorch" and ck.exists():
                v = validate(art.path, dataset="digits", threads=args.threads, trust_code=True)["metrics"]
                row.update(top1=100 * v["top1"], eager_top1=100 * v["eager_top1"], drop_points=v["drop_points"])
                row["export"] = art.manifest["export"]
            print(f"{preset} {name}: exported in {row['export_s']:.0f} s"
                  + (f", top-1 {row['top1']:.2f} % (drop {row['drop_points']:+.2f})" if "top1" in row else ""),
                  flush=True)
            rows.append(row)
            arts[(preset, name)] = art
    # Latency: every artifact once per round, through vitedge.bench.bench (batch 1, real photos).
    per_round: dict[tuple[str, str], list[dict]] = {k: [] for k in arts}
    for r in range(args.rounds):
        for key, art in arts.items():
            per_round[key].append(bench(art.path, batch=1, threads=args.threads, warmup=args.warmup,
                                        iters=args.iters, trust_code=True))  # exported above
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    for row in rows:
        key = (row["preset"], row["variant"])
        if key not in per_round:
            continue
        res = per_round[key]
        row["runtime"] = res[0]["runtime"]
        row["p50"] = float(np.median([x["latency_ms"]["p50"] for x in res]))
        row["p90"] = float(np.median([x["latency_ms"]["p90"] for x in res]))
        row["rounds"] = [{"p50": x["latency_ms"]["p50"], "p90": x["latency_ms"]["p90"]} for x in res]
    for row in rows:
        base = next((r for r in rows if r["preset"] == row.get("preset") and r["variant"] == "onnxruntime fp32"
                     and "p50" in r), None)
        if base and "p50" in row:
            row["x_ort"] = row["p50"] / base["p50"]
    from vitedge.targets.executorch import set_threads
    et_threads = set_threads(args.threads)
    machine = machine_info()
    res_dir = Path(args.results)
    meta = {"machine": machine, "threads": args.threads, "executorch_threadpool_threads": et_threads,
            "rounds": args.rounds, "iters": args.iters, "warmup": args.warmup, "batch": 1,
            "note": "machine shared with other jobs while this ran (loaded); compare within this run only"}
    write_json_atomic(res_dir / "executorch_compare.json", {**meta, "rows": rows}, default=str)
    ok = [r for r in rows if "error" not in r]
    failed = [r for r in rows if "error" in r]
    md = (f"# ExecuTorch (XNNPACK) vs ONNX Runtime vs TorchScript, batch 1\n\n{machine['cpu']}, {machine['cores']} "
          f"cores, flags: {', '.join(machine['flags'])}; {args.threads} threads (ExecuTorch threadpool reports "
          f"{et_threads}); 10 classes; p50/p90 = median over {args.rounds} interleaved "
          f"rounds of {args.iters} runs (after {args.warmup} warm-up runs) of each round's p50/p90. The machine "
          "was shared with other jobs while this ran: compare within this table only. `p50 x ORT` = p50 / the "
          "same preset's ONNX Runtime fp32 p50. top-1 on the 450 held-out digits; drop vs eager fp32.\n\n"
          + markdown_table(ok, COLUMNS) + "\n")
    if failed:
        md += "\nFailed: " + "; ".join(f"{r['preset']} {r['variant']}: {r['error']}" for r in failed) + "\n"
    write_text_atomic(res_dir / "executorch_compare.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
