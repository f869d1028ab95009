"""ATS: our deterministic eval vs vit-pytorch's stochastic eval, on a checkpoint trained on real data.

Trains a tiny ATS ViT (``vitedge.models.ats.ATSViT`` in train mode, i.e. the reference's stochastic Gumbel-max
token sampling) on scikit-learn's digits (8x8 upsampled to 32x32, 3 channels, fixed stratified 75/25 split),
then on the 450 held-out digits compares:

* our eval (``deterministic=True``: fixed-quantile inverse-transform sampling, static shapes, exportable),
* ``vit_pytorch.ats_vit.ViT`` eval with the same weights (stochastic even in eval), ``--runs`` times,
* the same weights with no token sampling at all (every budget = number of patches).

Writes benchmarks/results/ats_vs_reference.json (numbers + machine). The training and comparison helpers live
in tests/models/test_ats.py, whose fast test runs a shorter version of the same measurement.

    .venv/bin/python benchmarks/ats_vs_reference.py [--steps 600] [--runs 10] [--config bench|test]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_ats import DIGITS_BENCH, DIGITS_TEST, compare_with_reference, train_digits_ats  # noqa: E402
from vitedge.machine import machine_info  # noqa: E402
from vitedge.files import write_json_atomic  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=["bench", "test"], default="bench")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--runs", type=int, default=10, help="stochastic evaluations of the reference")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ats_vs_reference.json")
    args = ap.parse_args()
    kw = DIGITS_BENCH if args.config == "bench" else DIGITS_TEST
    model, info = train_digits_ats(kw, steps=args.steps, seed=args.seed, batch=args.batch, lr=args.lr)
    res = compare_with_reference(model, kw, runs=args.runs)
    out = {"model_kwargs": kw, "training": {**info, "lr": args.lr, "seed": args.seed, "data": "sklearn load_digits, "
                                            "8x8 -> 32x32 bilinear, stratified 75/25 split, random_state=0"},
           "results": res, "machine": machine_info()}
    write_json_atomic(args.out, out)
    for k, v in {**info, **res}.items():
        print(f"{k:45s} {v}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
