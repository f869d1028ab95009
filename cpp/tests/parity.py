"""Parity of the C++ runner (vitedge-bench) with Python on a real photo.

parity.py --bench PATH/vitedge-bench --workdir DIR

1. Exports a tiny seeded vitedge ViT (64x64, 10 classes) with vitedge.export.export(..., "torchscript", ...).
2. Saves skimage's astronaut photo resized with PIL to exactly 64x64 as PNG (the C++ side then only normalises).
3. Python reference: PNG -> uint8 RGB (PIL) -> float32 (x * scale - mean) / std, NCHW -> torch.jit.load'ed module.
4. vitedge-bench --image PNG --batch 1 --dump-output: bench JSON has every schema key, logits within 1e-4.
5. Batch 3 (dynamic batch): every row of the dumped output equals the batch-1 reference within 1e-4.
6. Resize path: the 512x512 PNG original through the C++ resize (Pillow's bilinear resampling, reimplemented)
   vs PIL's: the same uint8 pixels, so the logits agree within 1e-4 too.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _common import Failure, PREPROCESSING, check_bench_json, export_tiny, load_json, main, read_dump, run

TOL = 1e-4
RESIZE_TOL = TOL  # image.cpp follows Pillow's Resample.c (fixed-point weights, uint8 between passes)


def python_reference(module, png: Path, pre: dict) -> np.ndarray:
    x = np.asarray(Image.open(png).convert("RGB"), dtype=np.uint8).astype(np.float32)
    mean = np.asarray(pre["mean"], dtype=np.float32)
    std = np.asarray(pre["std"], dtype=np.float32)
    x = (x * np.float32(pre["scale"]) - mean) / std
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


def bench(exe: Path, art: Path, png: Path, batch: int, work: Path, tag: str) -> np.ndarray:
    out_json, out_bin = work / f"{tag}.json", work / f"{tag}.bin"
    r = run([exe, art, "--trust-code", "--image", png, "--batch", batch, "--iters", 3, "--warmup", 1, "--json", out_json,
             "--dump-output", out_bin])
    if r.returncode != 0:
        raise Failure(f"vitedge-bench ({tag}) exited {r.returncode}: {r.stderr.strip()}")
    data = load_json(out_json)
    check_bench_json(data, tag)
    if json.loads(r.stdout) != data:
        raise Failure(f"{tag}: the JSON on stdout differs from --json {out_json}")
    if data["batch"] != batch or data["iters"] != 3 or data["warmup"] != 1:
        raise Failure(f"{tag}: batch/iters/warmup recorded as {data['batch']}/{data['iters']}/{data['warmup']}")
    return read_dump(out_bin)


def test(args) -> None:
    import skimage.data
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    art = export_tiny(work / "tiny_vit_ts")
    manifest = load_json(art / "manifest.json")
    pre = manifest["preprocessing"]
    if pre["size"] != PREPROCESSING["size"]:
        raise Failure(f"manifest preprocessing size {pre['size']}")

    photo = Image.fromarray(skimage.data.astronaut()).convert("RGB")
    png = work / "astronaut_64.png"
    photo.resize((64, 64), Image.BILINEAR).save(png)
    module = torch.jit.load(str(art / "model.pt")).eval()
    ref = python_reference(module, png, pre)

    got1 = bench(args.bench, art, png, 1, work, "batch1")
    if got1.shape != ref.shape:
        raise Failure(f"batch 1: C++ output shape {got1.shape}, Python {ref.shape}")
    d1 = float(np.abs(got1 - ref).max())
    print(f"batch 1: max abs diff C++ vs Python = {d1:.3g} (logits range {ref.min():.3f}..{ref.max():.3f})")
    if not d1 <= TOL:
        raise Failure(f"batch 1: max abs diff {d1:.3g} > {TOL:g}")
    if int(got1.argmax()) != int(ref.argmax()):
        raise Failure("batch 1: top-1 differs")

    got3 = bench(args.bench, art, png, 3, work, "batch3")
    if got3.shape != (3, ref.shape[1]):
        raise Failure(f"batch 3: C++ output shape {got3.shape}, expected {(3, ref.shape[1])}")
    d3 = float(np.abs(got3 - ref).max())
    print(f"batch 3: max abs diff C++ vs Python (each row vs the batch-1 reference) = {d3:.3g}")
    if not d3 <= TOL:
        raise Failure(f"batch 3: max abs diff {d3:.3g} > {TOL:g}")

    # Resize path: full-size photo, C++ (Pillow-compatible bilinear) vs vitedge.data (PIL BILINEAR) preprocessing.
    from vitedge.data import load_batch
    big = work / "astronaut_512.png"
    photo.save(big)
    with torch.inference_mode():
        ref_big = module(load_batch([big], pre)).numpy()
    got_big = bench(args.bench, art, big, 1, work, "resize")
    dr = float(np.abs(got_big - ref_big).max())
    print(f"resize 512->64: max abs diff C++ vs Python (PIL) = {dr:.3g} (bound {RESIZE_TOL:g})")
    if not dr <= RESIZE_TOL:
        raise Failure(f"resize path: max abs diff {dr:.3g} > {RESIZE_TOL}")
    print("parity OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, type=Path, help="path to the vitedge-bench executable")
    ap.add_argument("--workdir", required=True, type=Path, help="scratch directory (recreated)")
    main(lambda: test(ap.parse_args()))
