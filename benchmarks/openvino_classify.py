"""The C++ `classify` example on OpenVINO int8 artifacts of DeiT-Ti, MobileViT-XS and LeViT-128S, against Python.
Not a test: `python benchmarks/openvino_classify.py [--build build/cpp]` (needs the C++ runner built with the
OpenVINO backend, cpp/cmake/openvino.cmake).

For each preset (its seeded weights, default input size, 1000 classes; no pretrained weights exist here, so top-1 is
agreement between runtimes, not accuracy):
1. `vitedge export PRESET --target openvino --precision int8 --force -o DIR` (NNCF post-training quantization,
   calibrated on 128 digits train images as the CLI does by default; export checks parity against eager),
2. Python: vitedge.targets.openvino.load (OpenVINO's Python API) on the 8 bundled scikit-image photos preprocessed by
   vitedge.data.load_batch -> softmax top-1 per photo,
3. C++: `classify DIR PHOTO...` (decoding, resize and normalisation in C++, OpenVINO C++ runtime) -> top-1 per photo
   and its top-5 scores; the maximum |score difference| over the top-5 entries,
4. latency at batch 1 with --threads threads: `vitedge-bench DIR --image astronaut` (C++) and `vitedge bench DIR`
   (Python), each --iters runs after --warmup, one after the other (this shared machine is noisy: the pair is a
   sanity check, not a C++ vs Python speed result).
Writes benchmarks/results/openvino_classify.{json,md} with the CPU model and ISA flags.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitedge.data import bundled_photo_paths, load_batch  # noqa: E402
from vitedge.machine import machine_info  # noqa: E402
from vitedge.manifest import read_manifest  # noqa: E402
from vitedge.report import markdown_table  # noqa: E402
from vitedge.targets import openvino as tov  # noqa: E402

COLUMNS = [("preset", "preset", "{}"), ("input", "input", "{}"), ("int8 layers", "int8_layers", "{}"),
           ("export s", "export_s", "{:.0f}"), ("photos", "photos", "{}"),
           ("top-1 C++ = Python", "top1_agree", "{}"), ("max top-5 score diff", "max_score_diff", "{:.2g}"),
           ("C++ p50 ms", "cpp_p50", "{:.2f}"), ("Python p50 ms", "py_p50", "{:.2f}")]


def parse_classify(stdout: str) -> dict[str, list[tuple[int, float]]]:
    """classify's output: a line per image path, then its top-5 as indented `index  label  score` lines."""
    out: dict[str, list[tuple[int, float]]] = {}
    current = None
    for line in stdout.splitlines():
        if not line.startswith(" "):
            current = line.strip()
            out[current] = []
        else:
            f = line.split()
            out[current].append((int(f[0]), float(f[-1])))
    return out


def sh(cmd: list, timeout: float = 1800) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:3]))} ... exited {r.returncode}: {r.stderr.strip()[-500:]}")
    return r


def one_preset(preset: str, args, photos: list[Path]) -> dict:
    build = Path(args.build)
    art = Path(args.out) / f"{preset}-openvino-int8"
    t0 = time.perf_counter()
    sh([sys.executable, "-m", "vitedge.cli", "export", preset, "--target", "openvino", "--precision", "int8",
        "--force", "-o", art])
    export_s = time.perf_counter() - t0
    manifest = read_manifest(art)
    m = manifest.manifest
    pre = m["preprocessing"]
    logits = tov.load(manifest, args.threads).run(load_batch(photos, pre).numpy())[0].astype(np.float64)
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    got = parse_classify(sh([build / "classify", art, *photos]).stdout)
    agree, worst, per_photo = 0, 0.0, []
    for i, p in enumerate(photos):
        top = got.get(str(p)) or []
        cpp_top1 = top[0][0] if top else None
        py_top1 = int(prob[i].argmax())
        agree += int(cpp_top1 == py_top1)
        for k, score in top:
            worst = max(worst, abs(score - float(prob[i, k])))
        per_photo.append({"photo": p.name, "cpp_top1": cpp_top1, "python_top1": py_top1,
                          "python_top1_prob": round(float(prob[i, py_top1]), 5)})
    cpp_json, py_json = art.parent / f"{preset}-cpp.json", art.parent / f"{preset}-py.json"
    astronaut = next(p for p in photos if p.stem == "astronaut")
    sh([build / "vitedge-bench", art, "--image", astronaut, "--threads", args.threads, "--iters", args.iters,
        "--warmup", args.warmup, "--json", cpp_json])
    sh([sys.executable, "-m", "vitedge.cli", "bench", art, "--threads", args.threads, "--iters", args.iters,
        "--warmup", args.warmup, "--json", py_json, "--no-progress"])
    cpp, py = json.loads(cpp_json.read_text()), json.loads(py_json.read_text())
    quant = m.get("quantization") or {}
    layers = quant.get("int8_layers_at_export")
    return {"preset": preset, "input": "x".join(map(str, m["inputs"][0]["shape"][2:])),
            "int8_layers": sum(layers.values()) if isinstance(layers, dict) else layers,
            "export_s": export_s, "photos": len(photos), "top1_agree": f"{agree}/{len(photos)}",
            "top1_all_equal": agree == len(photos), "max_score_diff": worst,
            "cpp_runtime": cpp["runtime"], "python_runtime": py["runtime"],
            "cpp_p50": cpp["latency_ms"]["p50"], "py_p50": py["latency_ms"]["p50"],
            "openvino_config": (m.get("openvino") or {}).get("config"), "per_photo": per_photo}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["deit_tiny", "mobilevit_xs", "levit_128s"])
    ap.add_argument("--build", default=str(ROOT / "build/cpp/cpp"), help="folder holding classify and vitedge-bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "artifacts/openvino_classify"))
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    args = ap.parse_args()
    photos = bundled_photo_paths()
    rows = []
    for preset in args.presets:
        print(f"{preset} ...", flush=True)
        try:
            rows.append(one_preset(preset, args, photos))
        except Exception as e:  # noqa: BLE001 - recorded in the results, the other presets still run
            rows.append({"preset": preset, "error": str(e)[:500]})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_photo"}, default=str), flush=True)
    machine = machine_info()
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine, "threads": args.threads, "iters": args.iters, "warmup": args.warmup,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "note": "seeded weights (no pretrained weights here): top-1 is C++ vs Python agreement, not accuracy; "
                    "machine shared with other jobs while this ran"}
    (res / "openvino_classify.json").write_text(json.dumps({**meta, "rows": rows}, indent=2, default=str) + "\n")
    ok = [r for r in rows if "error" not in r]
    md = (f"# C++ `classify` vs Python on OpenVINO int8 artifacts\n\n"
          f"{machine['cpu']}, {machine['cores']} cores, flags: {', '.join(machine['flags'])}; {meta['created']}.\n\n"
          f"`vitedge export PRESET --target openvino --precision int8` (NNCF, 128 digits calibration images; the "
          f"presets' seeded weights, so top-1 is agreement between the runtimes, not accuracy), then the 8 bundled "
          f"scikit-image photos through `classify` (C++: decoding, resize, OpenVINO C++ runtime) and through "
          f"`vitedge.targets.openvino` (Python). Latency: batch 1, {args.threads} threads, p50 of {args.iters} runs "
          f"after {args.warmup} warm-up runs, `vitedge-bench --image astronaut.png` (C++) and `vitedge bench` (Python) "
          f"run one after the other on a shared, noisy machine: a sanity check, not a speed comparison.\n\n"
          + markdown_table(ok, COLUMNS) + "\n")
    failed = [r for r in rows if "error" in r]
    if failed:
        md += "\nFailed: " + "; ".join(f"{r['preset']}: {r['error']}" for r in failed) + "\n"
    (res / "openvino_classify.md").write_text(md)
    print(md)
    return 0 if ok and not failed and all(r["top1_all_equal"] for r in ok) else 1


if __name__ == "__main__":
    sys.exit(main())
