"""C++ runner vs Python: the same artifact timed by `vitedge-bench` (C++) and `vitedge bench` (Python), per preset
and target, in fresh processes.

    python benchmarks/cpp_vs_python.py [--presets deit_tiny mobilevit_xs levit_128s]
        [--targets torchscript aotinductor onnx openvino executorch onnx:int8 openvino:int8]
        [--rounds 5] [--warmup 10] [--iters 50] [--threads 2] [--bench build/cpp/cpp/vitedge-bench]
        [--work DIR [--reuse]] [--out benchmarks/results/cpp_vs_python]

Each preset (seeded weights) is exported once per target with the CLI (`vitedge export PRESET --target T
[--precision int8]`; `TARGET:int8` asks for int8). A target the C++ runner cannot load here (e.g. OpenVINO, which
has no C++ backend yet) is skipped with the runner's own one-line reason, recorded in the results. Then, in
``--rounds`` rounds, every cell is timed by three fresh processes, on the same real photo (the first bundled
scikit-image photo, the one `vitedge bench` uses at batch 1), at batch 1 with ``--threads`` intra-op threads and
the same ``--warmup`` / ``--iters`` for all:

- C++ Runner: ``vitedge-bench ART --image PHOTO`` (vitedge::Runner::run: checks, input wrap, output copy),
- C++ bare:   ``vitedge-bench ART --image PHOTO --bare`` (the backend's own run call in a loop, nothing else),
- Python:     ``vitedge bench ART`` (the CLI; the target's Python runtime).

The order of the three rotates from round to round, and the cells are walked forwards in even rounds and
backwards in odd ones, so a drift in machine load hits every runner alike. Cell = median over rounds of each
round's p50 (ms). Ratio = median over rounds of (that round's C++ Runner p50 / that round's Python p50), and the
same for bare / Python: a paired ratio, so a shift of machine load between rounds cancels; the goal is <= 1.03 (the C++
runner no slower than Python). TorchScript and AOTInductor artifacts run code when loaded, so both sides get
``--trust-code`` (the artifacts are the ones this script just exported).

Writes OUT.json (machine block with CPU flags, settings, load averages, every round's p50, skipped cells with the
reason) and OUT.md (the table).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitedge.data import bundled_photo_paths  # noqa: E402
from vitedge.machine import machine_info  # noqa: E402
from vitedge.files import write_json_atomic, write_text_atomic  # noqa: E402

VITEDGE = [sys.executable, "-m", "vitedge.cli"]
PRESETS = ["deit_tiny", "mobilevit_xs", "levit_128s"]
TARGETS = ["torchscript", "aotinductor", "onnx", "openvino", "executorch", "onnx:int8", "openvino:int8"]
MODES = ["cpp", "bare", "python"]  # C++ Runner, C++ bare loop, Python CLI
GOAL = 1.03
TIMEOUT_S = 1800


def parse_target(spec: str) -> tuple[str, str]:
    """``"onnx:int8"`` -> ("onnx", "int8"); ``"onnx"`` -> ("onnx", "fp32")."""
    target, _, precision = spec.partition(":")
    return target, precision or "fp32"


def cell_name(preset: str, target: str, precision: str) -> str:
    return f"{preset}-{target}" + ("" if precision == "fp32" else f"-{precision}")


def first_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "(no message)"


def export(preset: str, target: str, precision: str, art: Path, reuse: bool) -> None:
    """Export with the CLI, unless ``reuse`` and ``art`` already holds an artifact. Raises RuntimeError."""
    if reuse and (art / "manifest.json").is_file():
        print(f"reusing {art}", flush=True)
        return
    cmd = VITEDGE + ["export", preset, "--target", target, "-o", str(art), "--force"]
    if precision != "fp32":
        cmd += ["--precision", precision]
    print("$", " ".join(cmd[2:]), flush=True)
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError(f"export failed (exit {r.returncode}): {first_line(r.stderr)}")


def run_cpp(exe: Path, art: Path, photo: Path, threads: int, warmup: int, iters: int, bare: bool) -> dict:
    """One fresh `vitedge-bench` process; its JSON. Raises RuntimeError with its one-line error."""
    cmd = [str(exe), str(art), "--trust-code", "--image", str(photo), "--batch", "1", "--threads", str(threads),
           "--warmup", str(warmup), "--iters", str(iters)] + (["--bare"] if bare else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError(first_line(r.stderr))
    return json.loads(r.stdout)


def run_python(art: Path, json_out: Path, threads: int, warmup: int, iters: int) -> dict:
    """One fresh `vitedge bench` process (the CLI); its JSON. Raises RuntimeError with its one-line error."""
    cmd = VITEDGE + ["bench", str(art), "--trust-code", "--batch", "1", "--threads", str(threads), "--warmup",
                     str(warmup), "--iters", str(iters), "--no-progress", "--json", str(json_out)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError(first_line(r.stderr))
    return json.loads(json_out.read_text())


def summarise(samples: dict) -> dict:
    """Medians over rounds of the per-round p50s, and the paired ratios: each round's C++ (or bare) p50 over the
    same round's Python p50 (measured back to back), median over rounds. Pairing within a round keeps a shift of
    the shared machine between rounds (this one moves between a fast and a slow state) out of the ratio."""
    med = {k: (float(np.median(v)) if v else None) for k, v in samples.items()}

    def paired(mode):
        pairs = [a / b for a, b in zip(samples[mode], samples["python"])]
        return float(np.median(pairs)) if pairs and len(pairs) == len(samples["python"]) else None
    return {"cpp_p50_ms": med["cpp"], "bare_p50_ms": med["bare"], "python_p50_ms": med["python"],
            "ratio_cpp_python": paired("cpp"), "ratio_bare_python": paired("bare")}


def markdown(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    load = result["load_average_1_5_15min"]
    lines = [f"# C++ runner vs Python, batch 1, {s['threads']} threads", "",
             f"Median over {s['rounds']} round(s) of each round's p50 ({s['warmup']} warm-up + {s['iters']} timed "
             f"runs per process, a fresh process per measurement, order rotated per round), on {m['cpu']} "
             f"({m['cores']} cores; {', '.join(m['flags']) or 'no listed ISA flags'}); photo {s['photo']}; load average "
             f"{load['before'][0]} before, {load['after'][0]} after. Ratio = median over rounds of that round's C++ p50 / "
             f"that round's Python p50 (paired); goal <= {GOAL}.", "",
             "| preset | target | precision | C++ Runner p50 (ms) | C++ bare p50 (ms) | Python p50 (ms) | "
             "C++/Python | bare/Python | goal |",
             "|---|---|---|---|---|---|---|---|---|"]

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    for r in result["rows"]:
        goal = "-" if r["ratio_cpp_python"] is None else ("met" if r["goal_met"] else "missed")
        lines.append(f"| {r['preset']} | {r['target']} | {r['precision']} | {f(r['cpp_p50_ms'], '.2f')} | "
                     f"{f(r['bare_p50_ms'], '.2f')} | {f(r['python_p50_ms'], '.2f')} | "
                     f"{f(r['ratio_cpp_python'], '.3f')} | {f(r['ratio_bare_python'], '.3f')} | {goal} |")
    if result["skipped"]:
        lines += ["", "Not timed:", ""]
        lines += [f"- {s['preset']} {s['target']} {s['precision']}: {s['reason']}" for s in result["skipped"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=PRESETS)
    ap.add_argument("--targets", nargs="+", default=TARGETS, help="TARGET or TARGET:int8 (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", type=Path, default=ROOT / "build/cpp/cpp/vitedge-bench", help="vitedge-bench")
    ap.add_argument("--work", type=Path, help="folder for the exported artifacts (default: a temporary one, removed)")
    ap.add_argument("--reuse", action="store_true", help="keep artifacts already exported in --work")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cpp_vs_python",
                    help="output prefix: writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.iters < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("need --rounds >= 1, --iters >= 1, --warmup >= 0, --threads >= 1")
    if args.reuse and not args.work:
        ap.error("--reuse needs --work DIR")
    if not args.bench.is_file():
        ap.error(f"{args.bench} not built (make cpp), or pass --bench PATH")
    bench = args.bench.resolve()
    photo = bundled_photo_paths()[0]  # what `vitedge bench` feeds at batch 1 (photos[0])
    work = args.work.resolve() if args.work else Path(tempfile.mkdtemp(prefix="vitedge-cpp-vs-python-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = work / "runs"
    runs.mkdir(exist_ok=True)
    try:
        cells, skipped = [], []
        for preset in args.presets:
            for spec in args.targets:
                target, precision = parse_target(spec)
                name = cell_name(preset, target, precision)
                art = work / name
                why = None
                try:
                    export(preset, target, precision, art, args.reuse)
                except RuntimeError as e:
                    why = str(e)
                if why is None:
                    try:  # can the C++ runner load it here? (one call each, untimed)
                        run_cpp(bench, art, photo, args.threads, 0, 1, bare=False)
                    except RuntimeError as e:
                        why = f"the C++ runner cannot run it here: {e}"
                bare_why = None
                if why is None:
                    try:
                        run_cpp(bench, art, photo, args.threads, 0, 1, bare=True)
                    except RuntimeError as e:
                        bare_why = str(e)
                if why is not None:
                    print(f"skip {name}: {why}", flush=True)
                    skipped.append({"preset": preset, "target": target, "precision": precision, "reason": why})
                    continue
                cells.append({"preset": preset, "target": target, "precision": precision, "art": art,
                              "bare_unavailable": bare_why, "samples": {k: [] for k in MODES}, "runtime": {}})
        load_before = os.getloadavg()
        for rnd in range(args.rounds):
            order = MODES[rnd % len(MODES):] + MODES[:rnd % len(MODES)]
            for cell in (cells if rnd % 2 == 0 else cells[::-1]):
                name = cell_name(cell["preset"], cell["target"], cell["precision"])
                if cell.get("failed"):
                    continue
                for mode in order:
                    if mode == "bare" and cell["bare_unavailable"]:
                        continue
                    try:
                        if mode == "python":
                            r = run_python(cell["art"], runs / f"{name}.r{rnd}.json", args.threads, args.warmup,
                                           args.iters)
                        else:
                            r = run_cpp(bench, cell["art"], photo, args.threads, args.warmup, args.iters,
                                        mode == "bare")
                    except RuntimeError as e:  # e.g. the Python runtime refuses it: reported, not timed
                        cell["failed"] = f"{mode} run failed in round {rnd + 1}: {e}"
                        print(f"skip {name}: {cell['failed']}", flush=True)
                        break
                    cell["samples"][mode].append(float(r["latency_ms"]["p50"]))
                    cell["runtime"][mode] = r.get("runtime")
                if cell.get("failed"):
                    continue
                print(f"round {rnd + 1}/{args.rounds} {name}: " + ", ".join(
                    f"{k} {v[-1]:.2f} ms" for k, v in cell["samples"].items() if v), flush=True)
        load_after = os.getloadavg()
        rows = []
        for cell in cells:
            if cell.get("failed"):
                skipped.append({"preset": cell["preset"], "target": cell["target"], "precision": cell["precision"],
                                "reason": cell["failed"]})
                continue
            s = summarise(cell["samples"])
            rows.append({"preset": cell["preset"], "target": cell["target"], "precision": cell["precision"],
                         **s, "goal_met": s["ratio_cpp_python"] <= GOAL, "runtime": cell["runtime"],
                         "bare_unavailable": cell["bare_unavailable"], "rounds_p50_ms": cell["samples"]})
        result = {
            "benchmark": "cpp_vs_python", "goal_ratio_max": GOAL,
            "settings": {"presets": args.presets, "targets": args.targets, "batch": 1, "threads": args.threads,
                         "rounds": args.rounds, "warmup": args.warmup, "iters": args.iters, "photo": photo.name,
                         "bench": str(args.bench), "modes": {"cpp": "vitedge-bench ART --image PHOTO",
                                                             "bare": "vitedge-bench ART --image PHOTO --bare",
                                                             "python": "vitedge bench ART"}},
            "machine": machine_info(),
            "load_average_1_5_15min": {"before": [round(x, 2) for x in load_before],
                                       "after": [round(x, 2) for x in load_after]},
            "rows": rows, "skipped": skipped,
        }
        write_json_atomic(f"{args.out}.json", result)
        md = markdown(result)
        write_text_atomic(f"{args.out}.md", md)
        print(md)
        print(f"wrote {args.out}.json and {args.out}.md")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
