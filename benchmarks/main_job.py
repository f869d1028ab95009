"""The main job (`make demo`): export mobilevit_xs and levit_128s to TorchScript and ONNX, validate each on the
bundled photos, benchmark each in Python and (TorchScript) in the C++ tool, print one table.

Every artifact is signed at export (`--sign`, with a key pair that `vitedge keygen` writes once under
artifacts/keys) and loaded only after its signature verifies (`--key`, in Python and in the C++ tool): a
TorchScript file runs code when it is loaded, so the demo shows the way to load one without `--trust-code`.

Everything runs through the same commands a user types (`vitedge export|validate|bench`, `vitedge-bench`), so
the demo proves the CLI. The table goes to artifacts/main/main_job.{json,md} with the machine's CPU flags, so a run
changes no tracked file; `--record` (`make demo RECORD=1`) writes it to benchmarks/results/ instead, the committed
results, for a deliberate run that updates them.
Weights are each preset's seeded random initialisation (no pretrained weights can be downloaded here), so
the numbers measure export fidelity and speed, not ImageNet accuracy.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitedge.data import bundled_photo_paths  # noqa: E402
from vitedge.machine import machine_info  # noqa: E402
from vitedge.files import write_json_atomic, write_text_atomic  # noqa: E402
from vitedge.report import main_rows, markdown_table, print_table  # noqa: E402

VITEDGE = [sys.executable, "-m", "vitedge.cli"]
CPP_BENCH = ROOT / "build/cpp/cpp/vitedge-bench"
OUT = ROOT / "artifacts/main"  # artifacts, per-run JSON and (without --record) the table: all git-ignored
RECORDED = ROOT / "benchmarks/results"  # the committed results: written only with --record
KEY = ROOT / "artifacts/keys/main_job"  # KEY.pem (private) and KEY.pub.pem, made by `vitedge keygen` if absent


def sh(cmd: list) -> None:
    """Run a command, echoing it; stop the job with its exit code if it fails."""
    print("$", " ".join(str(c) for c in cmd), flush=True)
    rc = subprocess.run([str(c) for c in cmd], cwd=ROOT).returncode
    if rc != 0:
        sys.exit(f"main job: command failed with exit code {rc}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["mobilevit_xs", "levit_128s"])
    ap.add_argument("--targets", nargs="+", default=["torchscript", "onnx"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=machine_info()["cores"])
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--out", default=str(OUT), help="artifacts and per-run JSON (default: %(default)s)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--results", help="folder for main_job.{md,json} (default: the --out folder)")
    where.add_argument("--record", action="store_true",
                       help=f"write main_job.{{md,json}} to {RECORDED.relative_to(ROOT)}/, the committed results")
    return ap.parse_args(argv)


def results_dir(args: argparse.Namespace) -> Path:
    """Where main_job.{md,json} go: --results, else the committed results with --record, else the --out folder."""
    if args.results:
        return Path(args.results)
    return RECORDED if args.record else Path(args.out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out, results = Path(args.out), results_dir(args)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    photo = next(p for p in bundled_photo_paths() if p.name == "astronaut.png")
    timing = ["--batch", args.batch, "--threads", args.threads, "--warmup", args.warmup, "--iters", args.iters]
    rows, records = [], []
    priv, pub = Path(f"{KEY}.pem"), Path(f"{KEY}.pub.pem")
    if not (priv.exists() and pub.exists()):
        sh(VITEDGE + ["keygen", "-o", KEY])
    for preset in args.presets:
        for target in args.targets:
            name = f"{preset}-{target}"
            art = out / name
            sh(VITEDGE + ["export", preset, "--target", target, "--force", "-o", art, "--sign", priv])
            sh(VITEDGE + ["validate", art, "--key", pub, "--json", runs / f"{name}.validate.json"])
            sh(VITEDGE + ["bench", art, "--key", pub, "--no-progress", "--json", runs / f"{name}.bench.json"]
               + timing)
            v = json.loads((runs / f"{name}.validate.json").read_text())
            benches = [json.loads((runs / f"{name}.bench.json").read_text())]
            if target == "torchscript":
                if not CPP_BENCH.exists():
                    sys.exit(f"main job: {CPP_BENCH} not built (run `make setup`)")
                sh([CPP_BENCH, art, "--key", pub, "--image", photo, "--json", runs / f"{name}.cpp-bench.json"]
                   + timing)
                benches.append(json.loads((runs / f"{name}.cpp-bench.json").read_text()))
            for b in benches:
                rows.append(main_rows(v, b, name))
                records.append({"artifact": name, "validate": v, "bench": b})
    machine = machine_info()
    title = (f"vitedge main job on {machine['cpu']} ({machine['cores']} cores; "
             f"{', '.join(machine['flags']) or 'no listed ISA flags'})")
    print()
    print_table(rows, title)
    write_json_atomic(results / "main_job.json", {"machine": machine, "rows": rows, "runs": records})
    write_text_atomic(
        results / "main_job.md",
        f"# {title}\n\nbatch {args.batch}, {args.threads} threads, {args.warmup} warm-up + {args.iters} timed runs; "
        "max abs diff and top-1 agreement vs eager PyTorch on the 8 bundled scikit-image photos.\n\n"
        + markdown_table(rows) + "\n")
    print(f"\nwrote {results / 'main_job.md'} and {results / 'main_job.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
