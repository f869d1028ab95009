"""fp32 vs int8 vs fp16, per family, on models trained on the digits: top-1 on the held-out split, size, p50
latency at batch 1 and 8, all in one run on this CPU. Not a test: `python benchmarks/quantization.py`.

Latency is measured in interleaved rounds (every artifact once per round, ``--rounds`` rounds) so that drifts in
machine load hit all artifacts alike; p50 pools the samples of all rounds. Outputs benchmarks/results/
quantization.{json,md,png}, with the CPU model and its ISA flags.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitedge.bench import time_interleaved  # noqa: E402
from vitedge.export import export, prepare_preset  # noqa: E402
from vitedge.machine import machine_info  # noqa: E402
from vitedge.quantize import calibration_data  # noqa: E402
from vitedge.quantize.onnx import default_int8_recipe  # noqa: E402
from vitedge.report import markdown_table  # noqa: E402
from vitedge.runtime import check_input, open_artifact  # noqa: E402
from vitedge.train import train_digits  # noqa: E402
from vitedge.validate import validate  # noqa: E402

VARIANTS = [  # (name, target, precision, int8 options or None)
    ("onnx fp32", "onnx", "fp32", None),
    ("onnx int8 (recipe)", "onnx", "int8", "recipe"),
    ("onnx int8 static", "onnx", "int8", {"mode": "static", "method": "minmax"}),
    ("onnx int8 dynamic", "onnx", "int8", {"mode": "dynamic"}),
    ("onnx fp16", "onnx", "fp16", None),
    ("torchscript fp32", "torchscript", "fp32", None),
    ("torchscript int8", "torchscript", "int8", {"mode": "dynamic"}),
]
COLUMNS = [("preset", "preset", "{}"), ("artifact", "variant", "{}"), ("top-1 %", "top1", "{:.2f}"),
           ("drop (pts)", "drop_points", "{:+.2f}"), ("size MB", "size_mb", "{:.2f}"), ("size x fp32", "size_ratio", "{:.2f}"),
           ("p50 ms b1", "p50_b1", "{:.3f}"), ("x fp32 b1", "speed_b1", "{:.2f}"), ("p50 ms b8", "p50_b8", "{:.3f}"),
           ("x fp32 b8", "speed_b8", "{:.2f}")]


def plot(rows: list[dict], presets: list[str], path: Path) -> None:
    """Accuracy vs batch-1 latency, one panel per preset, one point per artifact, coloured by precision."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colours = {"fp32": "tab:blue", "int8": "tab:orange", "fp16": "tab:green"}
    fig, axes = plt.subplots(1, len(presets), figsize=(5 * len(presets), 4.5), squeeze=False)
    for ax, preset in zip(axes[0], presets):
        pts = [r for r in rows if r["preset"] == preset]
        for r in pts:
            ax.plot(r["p50_b1"], r["top1"], "o", color=colours.get(r["precision"], "k"))
            ax.annotate(r["variant"], (r["p50_b1"], r["top1"]), fontsize=7, rotation=30, xytext=(2, 4),
                        textcoords="offset points")
        ax.set_title(preset)
        ax.set_xlabel("p50 latency, batch 1 (ms)")
        lo = min(r["top1"] for r in pts)
        ax.set_ylim(lo - 2, 100.5)
    axes[0][0].set_ylabel("top-1 on the digits test split (%)")
    for prec, c in colours.items():
        axes[0][-1].plot([], [], "o", color=c, label=prec)
    axes[0][-1].legend(loc="lower right")
    fig.suptitle("accuracy vs latency per artifact (digits-trained, this CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", nargs="+", default=["deit_tiny", "mobilevit_xs", "levit_128s"])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--threads", type=int, default=machine_info()["cores"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "artifacts/quantization"))
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from the results JSON")
    args = ap.parse_args()
    if args.plot_only:
        data = json.loads((Path(args.results) / "quantization.json").read_text())
        ok = [r for r in data["rows"] if "error" not in r]
        plot(ok, list(dict.fromkeys(r["preset"] for r in ok)), Path(args.results) / "quantization.png")
        return 0
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    rows = []
    for preset in args.presets:
        ck = out / "checkpoints" / f"{preset}.safetensors"
        if not ck.exists():
            print(f"training {preset} on digits ...", flush=True)
            train_digits(preset, ck, epochs=args.epochs, log=None)
        model, spec, pre = prepare_preset(preset, checkpoint=ck)
        calib, calib_info = calibration_data("digits", pre, 128)
        example = torch.zeros(2, 3, *pre["size"])
        arts = {}
        for name, target, precision, opts in VARIANTS:
            quant = None
            if opts == "recipe":
                quant = dict(default_int8_recipe(spec["family"]))
            elif opts:
                quant = dict(opts)
            if quant and quant["mode"] == "static":
                quant.update(calibration=calib.numpy(), calibration_info=calib_info)
            try:
                arts[name] = export(model, example, target, out / preset / name.replace(" ", "_").replace("(", "")
                                    .replace(")", ""), force=True, spec=spec, preprocessing=pre, precision=precision,
                                    quantization=quant)
            except Exception as e:  # noqa: BLE001 - a failed variant is a result too
                print(f"{preset} {name}: export failed: {e}", flush=True)
                rows.append({"preset": preset, "variant": name, "error": str(e)})
        runners, inputs = {}, {}
        for b in (1, 8):
            x = np.ascontiguousarray(calib.numpy()[np.arange(b) % len(calib)])
            for name, art in arts.items():
                opened, checked = open_artifact(art.path, threads=args.threads, trust_code=True)  # exported above
                check_input(opened, x)  # once; the timed loop runs the bare runner
                runners[(name, b)] = checked.inner
                inputs[(name, b)] = x
        lat = time_interleaved(runners, inputs, args.rounds, args.iters, warmup=10)
        base = None
        for name, art in arts.items():
            v = validate(art.path, dataset="digits", threads=args.threads, trust_code=True)["metrics"]
            row = {"preset": preset, "variant": name, "precision": art.manifest["precision"],
                   "top1": 100 * v["top1"], "eager_top1": 100 * v["eager_top1"], "drop_points": v["drop_points"],
                   "size_mb": art.size_mb, "p50_b1": lat[(name, 1)]["p50"], "p50_b8": lat[(name, 8)]["p50"],
                   "latency_b1": lat[(name, 1)], "latency_b8": lat[(name, 8)],
                   "quantization": art.manifest.get("quantization")}
            if name == "onnx fp32":
                base = row
            rows.append(row)
        for row in rows:
            if row.get("preset") == preset and "error" not in row and base:
                row["size_ratio"] = row["size_mb"] / base["size_mb"]
                row["speed_b1"] = row["p50_b1"] / base["p50_b1"]
                row["speed_b8"] = row["p50_b8"] / base["p50_b8"]
        print(markdown_table([r for r in rows if r.get("preset") == preset and "error" not in r], COLUMNS), flush=True)
    machine = machine_info()
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / "quantization.json").write_text(json.dumps({"machine": machine, "threads": args.threads,
                                                       "rounds": args.rounds, "iters": args.iters, "rows": rows},
                                                      indent=2, default=str) + "\n")
    ok = [r for r in rows if "error" not in r]
    (res / "quantization.md").write_text(
        f"# fp32 vs int8 vs fp16 on digits-trained models\n\n{machine['cpu']}, {machine['cores']} cores, flags: "
        f"{', '.join(machine['flags'])}; {args.threads} threads; p50 over {args.rounds} interleaved rounds x "
        f"{args.iters} runs. `x fp32` = latency / the same preset's ONNX fp32 latency (lower is faster); "
        "`size x fp32` likewise.\n\n" + markdown_table(ok, COLUMNS) + "\n")
    plot(ok, args.presets, res / "quantization.png")
    print(f"wrote {res / 'quantization.md'}, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
