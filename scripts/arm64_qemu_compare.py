"""Compare the arm64 C++ runner (run under qemu-aarch64) with x86 on the bundled photos; called by arm64_qemu.sh.

arm64_qemu_compare.py --artifact DIR --arm64-bench EXE [--x86-bench EXE] --workdir DIR --json OUT
                      --qemu-version TEXT --wheel NAME [--arm64-classify EXE]
                      [--et-artifact DIR --et-wheel NAME]

For every bundled scikit-image photo (vitedge.data.bundled_photo_paths()):

1. The photo is resized and center-cropped to the artifact's input size once, in Python, with vitedge's own
   preprocessing (vitedge.data.resize_cover_crop, PIL bilinear) and saved as PNG. Every runner then reads the
   same uint8 pixels and only normalises them, so the logits differ by arithmetic alone, not by resize filters.
2. x86 references: the same model.pt run by x86 PyTorch (torch.jit.load, this venv's torch) on
   vitedge.data.preprocess of that PNG, and, with --x86-bench, the x86 build of vitedge-bench.
3. arm64: vitedge-bench --dump-output from the aarch64 build, run through a qemu-aarch64 wrapper (EXE).
   With --arm64-classify, the aarch64 `classify` example is also run on all PNGs and its top-1 checked.
4. With --et-artifact (an ExecuTorch .pte artifact, XNNPACK-delegated, of the same preset exported on x86): the
   arm64 vitedge-bench (ExecuTorch backend: the aarch64 executorch wheel's runtime) on the same PNGs, against
   the x86 Python ExecuTorch runtime (executorch.runtime) on the same .pte, eager PyTorch (the preset rebuilt
   with the manifest's seed: vitedge.export.prepare_preset) and, with --x86-bench, the x86 C++ build; top-1 must
   agree and max abs differences stay within the .pte manifest's parity tolerance. Recorded under "executorch"
   in OUT; with --arm64-classify the classify example is also run on the .pte.

Prints a table (photo, top-1 of each runner, top-1/top-2 logit margin, max abs logit difference) and writes
OUT (JSON). Exit 1 when any arm64 top-1 differs from an x86 top-1 or a max abs difference exceeds the
artifact's own parity tolerance (manifest parity.tolerance.max_abs); exit 2 on bad arguments.

QEMU emulates the arm64 instructions one by one on this x86 CPU: the wall times recorded are those of the
emulation, not of an arm64 machine, and say nothing about arm64 speed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from vitedge.data import bundled_photo_paths, load_rgb, preprocess, resize_cover_crop


class Failure(Exception):
    """A failed run or check; printed as one line, exit 1."""


def disagreements(label: str, top1_arm64: int, checks: list[tuple[str, int, float]], tol: float) -> list[str]:
    """FAIL lines for each reference (name, its top-1, max abs diff vs arm64) whose top-1 differs from arm64's or
    whose max abs diff exceeds TOL (a NaN diff fails too)."""
    out = []
    for ref_name, top1, diff in checks:
        if top1 != top1_arm64:
            out.append(f"{label} top-1 {top1_arm64} != {ref_name} top-1 {top1}")
        if not diff <= tol:
            out.append(f"{label} vs {ref_name} max abs diff {diff:.3g} > {tol:g}")
    return out


def read_dump(path: Path) -> np.ndarray:
    """Raw little-endian float32 written by vitedge-bench --dump-output, shaped by PATH.json."""
    meta = json.loads(Path(str(path) + ".json").read_text())
    data = np.fromfile(path, dtype="<f4")
    if meta.get("dtype") != "float32" or data.size != int(np.prod(meta["shape"])):
        raise Failure(f"{path}: {data.size} floats do not match {path}.json {meta}")
    return data.reshape(meta["shape"])


def run_bench(exe: Path, artifact: Path, png: Path, out: Path, runtime: str | None = None) -> tuple[np.ndarray, float]:
    """One untimed-warmup-free run of vitedge-bench on one image: (logits (1, K) float32, wall seconds).

    With ``runtime`` (e.g. "executorch-cpp"), the run's --json report must name that runtime (Failure otherwise)."""
    t0 = time.perf_counter()
    report = Path(str(out) + ".report.json")
    r = subprocess.run([str(exe), str(artifact), "--trust-code", "--image", str(png), "--batch", "1", "--warmup", "0",
                        "--iters", "1", "--dump-output", str(out), "--json", str(report)],
                       capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise Failure(f"{exe} on {png.name} exited {r.returncode}: {(r.stderr or r.stdout).strip()[-500:]}")
    if runtime is not None:
        got = json.loads(report.read_text()).get("runtime")
        if got != runtime:
            raise Failure(f"{exe} ran {artifact.name} with runtime {got!r}, expected {runtime!r}")
    return read_dump(out), wall


def top2(logits: np.ndarray) -> tuple[int, float]:
    """(argmax, top-1 minus top-2 logit) of a (1, K) array."""
    row = logits.reshape(-1)
    order = np.argsort(row)[::-1]
    return int(order[0]), float(row[order[0]] - row[order[1]])


def classify_top1(exe: Path, artifact: Path, pngs: list[Path]) -> tuple[list[str], str, float]:
    """Run the classify example on all PNGs at once: (its stdout lines, raw stdout, wall seconds)."""
    t0 = time.perf_counter()
    r = subprocess.run([str(exe), "--trust-code", str(artifact), *map(str, pngs)], capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise Failure(f"classify exited {r.returncode}: {(r.stderr or r.stdout).strip()[-500:]}")
    return r.stdout.splitlines(), r.stdout, wall


def python_executorch(pte: Path):
    """The x86 Python ExecuTorch runtime's ``forward`` of PTE: a function (1, C, H, W) float32 -> (1, K) logits."""
    from executorch.runtime import Runtime
    method = Runtime.get().load_program(pte).load_method("forward")
    return lambda x: method.execute([torch.from_numpy(x)])[0].numpy()


def eager_model(manifest: dict) -> torch.nn.Module:
    """The artifact's model rebuilt in eager PyTorch from its preset and seed (seeded weights only)."""
    from vitedge.export import prepare_preset
    m = manifest["model"]
    if m.get("weights", {}).get("source") != "seed" or not m.get("preset"):
        raise Failure(f"eager reference needs a preset with seeded weights, the artifact has {m.get('weights')}")
    model, spec, _ = prepare_preset(m["preset"], image_size=tuple(manifest["preprocessing"]["size"]),
                                    seed=int(m["weights"]["seed"]))
    if json.loads(json.dumps(spec["kwargs"])) != m["kwargs"]:  # as JSON: tuples are lists in the manifest
        raise Failure(f"rebuilt {m['preset']} has kwargs {spec['kwargs']}, the artifact {m['kwargs']}")
    return model.eval()


def compare_executorch(args, pngs: list[Path], names: list[str], work: Path) -> tuple[dict, list[str]]:
    """arm64 vitedge-bench on the ExecuTorch artifact vs the x86 references, on the PNGs (the photos NAMES,
    resized): (JSON section, failures)."""
    art = args.et_artifact
    manifest = json.loads((art / "manifest.json").read_text())
    if manifest.get("backend") != "executorch":
        raise Failure(f"{art}: --et-artifact is a {manifest.get('backend')!r} artifact, not an ExecuTorch one")
    pre = manifest["preprocessing"]
    tol = float(manifest.get("parity", {}).get("tolerance", {}).get("max_abs", 1e-4))
    et_x86 = python_executorch(art / manifest["artifact"])
    eager = eager_model(manifest)
    rows, failures = [], []
    for png, name in zip(pngs, names):
        x = preprocess(load_rgb(png), pre)[None]
        ref = et_x86(x)
        with torch.inference_mode():
            ref_eager = eager(torch.from_numpy(x)).numpy()
        arm, arm_wall = run_bench(args.arm64_bench, art, png, work / "dumps" / f"{png.stem}.et.arm64.bin",
                                  runtime="executorch-cpp")
        if arm.shape != ref.shape:
            raise Failure(f"{png.name}: arm64 ExecuTorch output shape {arm.shape}, x86 ExecuTorch {ref.shape}")
        row = {"photo": name}
        row["top1_x86_executorch_python"], row["margin_x86_executorch_python"] = top2(ref)
        row["top1_x86_eager"], _ = top2(ref_eager)
        row["top1_arm64"], _ = top2(arm)
        row["max_abs_diff_arm64_vs_x86_executorch_python"] = float(np.abs(arm - ref).max())
        row["max_abs_diff_arm64_vs_x86_eager"] = float(np.abs(arm - ref_eager).max())
        row["qemu_wall_s"] = round(arm_wall, 2)
        checks = [("x86 Python ExecuTorch", row["top1_x86_executorch_python"],
                   row["max_abs_diff_arm64_vs_x86_executorch_python"]),
                  ("x86 eager PyTorch", row["top1_x86_eager"], row["max_abs_diff_arm64_vs_x86_eager"])]
        if args.x86_bench:
            x86, _ = run_bench(args.x86_bench, art, png, work / "dumps" / f"{png.stem}.et.x86.bin",
                               runtime="executorch-cpp")
            row["top1_x86_cpp"], _ = top2(x86)
            row["max_abs_diff_arm64_vs_x86_cpp"] = float(np.abs(arm - x86).max())
            checks.append(("x86 C++ ExecuTorch", row["top1_x86_cpp"], row["max_abs_diff_arm64_vs_x86_cpp"]))
        failures += disagreements(f"{name}: arm64 ExecuTorch", row["top1_arm64"], checks, tol)
        rows.append(row)
        print(f"  {name} (ExecuTorch): arm64 top-1 {row['top1_arm64']}, x86 ExecuTorch top-1 "
              f"{row['top1_x86_executorch_python']}, eager top-1 {row['top1_x86_eager']}, max abs diff "
              f"{row['max_abs_diff_arm64_vs_x86_executorch_python']:.3g} vs x86 ExecuTorch, "
              f"{row['max_abs_diff_arm64_vs_x86_eager']:.3g} vs eager ({arm_wall:.1f} s under qemu)", flush=True)

    classify = None
    if args.arm64_classify:
        lines, raw, wall = classify_top1(args.arm64_classify, art, pngs)
        classify = {"stdout": raw, "qemu_wall_s": round(wall, 2)}
        for row, png in zip(rows, pngs):
            ok = classify_names(lines, png, row["top1_x86_executorch_python"])
            row["classify_top1_matches"] = ok
            if not ok:
                failures.append(f"{row['photo']}: classify on the .pte does not name x86 ExecuTorch top-1 "
                                f"{row['top1_x86_executorch_python']}")

    table = Table(title=f"ExecuTorch (.pte, XNNPACK): arm64 (qemu-aarch64) vs x86 on the bundled photos")
    cols = ["photo", "top-1 x86 ExecuTorch (Python)", "top-1 x86 eager"] + (["top-1 x86 C++"] if args.x86_bench else [])
    cols += ["top-1 arm64 C++", "top-1/top-2 margin", "max |arm64 - x86 ExecuTorch|", "max |arm64 - eager|"]
    cols += ["max |arm64 - x86 C++|"] if args.x86_bench else []
    cols += ["arm64 classify top-1"] if classify else []
    for c in cols:
        table.add_column(c, justify="left" if c == "photo" else "right")
    for r in rows:
        cells = [r["photo"], str(r["top1_x86_executorch_python"]), str(r["top1_x86_eager"])]
        cells += [str(r["top1_x86_cpp"])] if args.x86_bench else []
        cells += [str(r["top1_arm64"]), f"{r['margin_x86_executorch_python']:.3g}",
                  f"{r['max_abs_diff_arm64_vs_x86_executorch_python']:.2e}", f"{r['max_abs_diff_arm64_vs_x86_eager']:.2e}"]
        cells += [f"{r['max_abs_diff_arm64_vs_x86_cpp']:.2e}"] if args.x86_bench else []
        cells += ["same" if r["classify_top1_matches"] else "DIFFERS"] if classify else []
        table.add_row(*cells)
    Console(width=220).print(table)

    exp = manifest.get("export", {})
    section = {
        "artifact": str(art), "artifact_file": manifest["artifact"], "export_method": exp.get("method"),
        "delegate": exp.get("delegate"), "delegated_subgraphs": exp.get("delegated_subgraphs"),
        "x86_executorch": _dist_version("executorch"),
        "arm64_executorch_wheel": args.et_wheel, "tolerance_max_abs": tol, "photos": rows, "classify": classify,
        "top1_agreement_vs_x86_executorch": sum(r["top1_arm64"] == r["top1_x86_executorch_python"] for r in rows) / len(rows),
        "top1_agreement_vs_x86_eager": sum(r["top1_arm64"] == r["top1_x86_eager"] for r in rows) / len(rows),
        "max_abs_diff_vs_x86_executorch": max(r["max_abs_diff_arm64_vs_x86_executorch_python"] for r in rows),
        "max_abs_diff_vs_x86_eager": max(r["max_abs_diff_arm64_vs_x86_eager"] for r in rows),
        "failures": failures, "passed": not failures,
    }
    if args.x86_bench:
        section["max_abs_diff_vs_x86_cpp"] = max(r["max_abs_diff_arm64_vs_x86_cpp"] for r in rows)
    return section, failures


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def classify_names(lines: list[str], png: Path, top1: int) -> bool:
    """True when classify's output names TOP1 first for PNG: its path line, then "  INDEX  LABEL  SCORE" lines."""
    start = next((i for i, ln in enumerate(lines) if ln.strip() == str(png)), None)
    block = lines[start + 1:start + 2] if start is not None else []
    return bool(block) and block[0].split()[:1] == [str(top1)]


def compare(args) -> int:
    started = time.perf_counter()
    art = args.artifact
    manifest = json.loads((art / "manifest.json").read_text())
    pre = manifest["preprocessing"]
    size = tuple(pre["size"])
    tol = float(manifest.get("parity", {}).get("tolerance", {}).get("max_abs", 1e-4))
    work = args.workdir
    (work / "photos").mkdir(parents=True, exist_ok=True)
    (work / "dumps").mkdir(parents=True, exist_ok=True)
    module = torch.jit.load(str(art / "model.pt")).eval()

    rows, failures = [], []
    pngs = []
    for photo in bundled_photo_paths():
        png = work / "photos" / f"{photo.stem}.png"
        resize_cover_crop(load_rgb(photo), size).save(png)
        pngs.append(png)
        with torch.inference_mode():
            ref = module(torch.from_numpy(preprocess(load_rgb(png), pre))[None]).numpy()
        arm, arm_wall = run_bench(args.arm64_bench, art, png, work / "dumps" / f"{photo.stem}.arm64.bin")
        if arm.shape != ref.shape:
            raise Failure(f"{photo.name}: arm64 output shape {arm.shape}, x86 PyTorch {ref.shape}")
        row = {"photo": photo.name, "size": list(size)}
        row["top1_x86_pytorch"], row["margin_x86_pytorch"] = top2(ref)
        row["top1_arm64"], _ = top2(arm)
        row["max_abs_diff_arm64_vs_x86_pytorch"] = float(np.abs(arm - ref).max())
        row["qemu_wall_s"] = round(arm_wall, 2)
        checks = [("x86 PyTorch", row["top1_x86_pytorch"], row["max_abs_diff_arm64_vs_x86_pytorch"])]
        if args.x86_bench:
            x86, _ = run_bench(args.x86_bench, art, png, work / "dumps" / f"{photo.stem}.x86.bin")
            row["top1_x86_cpp"], _ = top2(x86)
            row["max_abs_diff_arm64_vs_x86_cpp"] = float(np.abs(arm - x86).max())
            checks.append(("x86 C++", row["top1_x86_cpp"], row["max_abs_diff_arm64_vs_x86_cpp"]))
        failures += disagreements(f"{photo.name}: arm64", row["top1_arm64"], checks, tol)
        rows.append(row)
        print(f"  {photo.name}: arm64 top-1 {row['top1_arm64']}, x86 top-1 {row['top1_x86_pytorch']}, "
              f"max abs diff {row['max_abs_diff_arm64_vs_x86_pytorch']:.3g} ({arm_wall:.1f} s under qemu)", flush=True)

    classify = None
    if args.arm64_classify:
        lines, raw, wall = classify_top1(args.arm64_classify, art, pngs)
        classify = {"stdout": raw, "qemu_wall_s": round(wall, 2)}
        # classify prints each image's path, then its top-5 as "  INDEX  LABEL  SCORE" lines, best first:
        # the INDEX on the line after the image's path must be the x86 top-1.
        for row, png in zip(rows, pngs):
            ok = classify_names(lines, png, row["top1_x86_pytorch"])
            row["classify_top1_matches"] = ok
            if not ok:
                failures.append(f"{png.name}: classify does not name x86 top-1 {row['top1_x86_pytorch']} first")

    table = Table(title=f"arm64 (qemu-aarch64) vs x86 on the bundled photos: {manifest['model']['preset']} "
                        f"{size[0]}x{size[1]}, {manifest['model']['weights'].get('source')}-initialised")
    table.add_column("photo")
    table.add_column("top-1 x86 PyTorch", justify="right")
    if args.x86_bench:
        table.add_column("top-1 x86 C++", justify="right")
    table.add_column("top-1 arm64 C++", justify="right")
    table.add_column("top-1/top-2 margin", justify="right")
    table.add_column("max |arm64 - x86 PyTorch|", justify="right")
    if args.x86_bench:
        table.add_column("max |arm64 - x86 C++|", justify="right")
    if classify:
        table.add_column("arm64 classify top-1", justify="right")
    for r in rows:
        cells = [r["photo"], str(r["top1_x86_pytorch"])]
        if args.x86_bench:
            cells.append(str(r["top1_x86_cpp"]))
        cells += [str(r["top1_arm64"]), f"{r['margin_x86_pytorch']:.3g}", f"{r['max_abs_diff_arm64_vs_x86_pytorch']:.2e}"]
        if args.x86_bench:
            cells.append(f"{r['max_abs_diff_arm64_vs_x86_cpp']:.2e}")
        if classify:
            cells.append("same" if r["classify_top1_matches"] else "DIFFERS")
        table.add_row(*cells)
    Console(width=200).print(table)

    executorch_section = None
    if args.et_artifact:
        executorch_section, et_failures = compare_executorch(args, pngs, [r["photo"] for r in rows], work)
        failures += et_failures

    result = {
        "what": "vitedge C++ runner cross-built for aarch64, run under qemu-user on x86-64, vs x86 on the same pixels",
        "artifact": str(art), "preset": manifest["model"]["preset"], "input_size": list(size),
        "weights": manifest["model"]["weights"], "exported_with_torch": manifest["versions"]["torch"],
        "x86_torch": torch.__version__, "arm64_libtorch_wheel": args.wheel, "qemu": args.qemu_version,
        "cross_compiler": args.cross_compiler, "host": {"machine": platform.machine(), "cpu_count": os.cpu_count()},
        "tolerance_max_abs": tol, "photos": rows, "classify": classify,
        "top1_agreement": sum(r["top1_arm64"] == r["top1_x86_pytorch"] for r in rows) / len(rows),
        "max_abs_diff": max(r["max_abs_diff_arm64_vs_x86_pytorch"] for r in rows),
        "timings_s": {**args.timings, "photos_qemu_and_x86_s": round(time.perf_counter() - started, 1)},
        "executorch": executorch_section,
        "failures": failures, "passed": not failures,
        "note": "qemu emulates arm64 on x86: wall times are emulation times, not arm64 speed",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.json.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(tmp, args.json)
    print(f"wrote {args.json}")
    if failures:
        for f in failures:
            print(f"FAIL: {f}", file=sys.stderr)
        return 1
    print(f"arm64 top-1 equals x86 top-1 on all {len(rows)} photos{' (vitedge-bench and classify)' if classify else ''}; "
          f"max abs logit diff {result['max_abs_diff']:.2e} (tolerance {tol:g})")
    if executorch_section:
        print(f"ExecuTorch: arm64 top-1 equals x86 ExecuTorch and eager top-1 on all {len(rows)} photos; max abs "
              f"logit diff {executorch_section['max_abs_diff_vs_x86_executorch']:.2e} vs x86 ExecuTorch, "
              f"{executorch_section['max_abs_diff_vs_x86_eager']:.2e} vs eager "
              f"(tolerance {executorch_section['tolerance_max_abs']:g})")
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", required=True, type=Path, help="TorchScript artifact directory (exported on x86)")
    ap.add_argument("--arm64-bench", required=True, type=Path, help="qemu wrapper of the aarch64 vitedge-bench")
    ap.add_argument("--x86-bench", type=Path, help="x86 vitedge-bench built from the same sources (optional)")
    ap.add_argument("--arm64-classify", type=Path, help="qemu wrapper of the aarch64 classify example (optional)")
    ap.add_argument("--workdir", required=True, type=Path, help="scratch folder (PNG inputs, logit dumps)")
    ap.add_argument("--json", required=True, type=Path, help="result file to write")
    ap.add_argument("--qemu-version", required=True)
    ap.add_argument("--wheel", required=True, help="file name of the torch aarch64 wheel holding libtorch")
    ap.add_argument("--cross-compiler", default="")
    ap.add_argument("--et-artifact", type=Path,
                    help="ExecuTorch (.pte) artifact of the same model exported on x86: also compared (optional)")
    ap.add_argument("--et-wheel", default="", help="file name of the executorch aarch64 wheel (with --et-artifact)")
    ap.add_argument("--timing", action="append", default=[], metavar="NAME=SECONDS",
                    help="wall times measured by the calling script, recorded in the JSON")
    args = ap.parse_args()
    try:
        args.timings = {k: float(v) for k, v in (t.split("=", 1) for t in args.timing)}
    except ValueError:
        ap.error("--timing expects NAME=SECONDS")
    for p in (args.artifact / "manifest.json", args.arm64_bench,
              *((args.et_artifact / "manifest.json",) if args.et_artifact else ())):
        if not p.exists():
            ap.error(f"{p} does not exist")
    try:
        sys.exit(compare(args))
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
