"""The C++ runner's ExecuTorch backend (the executorch wheel's runtime + XNNPACK delegate) against the Python
ExecuTorch runtime, on a real photo.

executorch_backend.py --bench PATH/vitedge-bench --workdir DIR

1. Exports the tiny seeded ViT (64x64, 10 classes) with vitedge.export.export(..., "executorch", ...):
   an XNNPACK-delegated .pte with a dynamic batch (max 8).
2. Saves skimage's astronaut photo resized with PIL to exactly 64x64 as PNG.
3. Python reference: PNG -> float32 (x * scale - mean) / std, NCHW -> executorch.runtime (Python bindings).
4. vitedge-bench --image PNG --dump-output at batch 1 and 3: runtime "executorch-cpp", logits within 1e-4 of the
   Python runtime's (every row at batch 3), same top-1.
5. A corrupt .pte (manifest hash check skipped): exit 1 with one error line, no crash.
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _common import PREPROCESSING, Failure, check_bench_json, load_json, main, run, tiny_vit
from parity import read_dump

TOL = 1e-4


def python_reference(pte: Path, png: Path, pre: dict) -> np.ndarray:
    from executorch.runtime import Runtime
    x = np.asarray(Image.open(png).convert("RGB"), dtype=np.uint8).astype(np.float32)
    x = (x * np.float32(pre["scale"]) - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
    method = Runtime.get().load_program(pte).load_method("forward")
    return method.execute([x])[0].numpy()


def bench(exe: Path, art: Path, png: Path, batch: int, work: Path, tag: str) -> np.ndarray:
    out_json, out_bin = work / f"{tag}.json", work / f"{tag}.bin"
    r = run([exe, art, "--image", png, "--batch", batch, "--iters", 3, "--warmup", 1, "--threads", 1,
             "--json", out_json, "--dump-output", out_bin], timeout=300)
    if r.returncode != 0:
        raise Failure(f"vitedge-bench ({tag}) exited {r.returncode}: {r.stderr.strip()[-800:]}")
    check_bench_json(load_json(out_json), tag, runtime="executorch-cpp")
    return read_dump(out_bin)


def test(args) -> None:
    import skimage.data
    from vitedge.export import export
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = tiny_vit()
    art = Path(export(model, torch.zeros(2, 3, 64, 64), "executorch", work / "tiny_vit_et",
                      preprocessing=dict(PREPROCESSING), target_options={"max_batch": 8}).path)
    m = load_json(art / "manifest.json")
    if (m["backend"], m["target"], m["artifact"]) != ("executorch", "executorch", "model.pte"):
        raise Failure(f"unexpected manifest: {m['backend']}/{m['target']}/{m['artifact']}")
    png = work / "astronaut_64.png"
    Image.fromarray(skimage.data.astronaut()).convert("RGB").resize((64, 64), Image.BILINEAR).save(png)
    ref = python_reference(art / "model.pte", png, m["preprocessing"])

    got1 = bench(args.bench, art, png, 1, work, "batch1")
    d1 = float(np.abs(got1 - ref).max())
    print(f"batch 1: max abs diff C++ ExecuTorch vs Python ExecuTorch = {d1:.3g}")
    if got1.shape != ref.shape or not d1 <= TOL:
        raise Failure(f"batch 1: shape {got1.shape} vs {ref.shape}, max abs diff {d1:.3g} > {TOL:g}")
    if int(got1.argmax()) != int(ref.argmax()):
        raise Failure("batch 1: top-1 differs")
    got3 = bench(args.bench, art, png, 3, work, "batch3")
    d3 = float(np.abs(got3 - ref).max()) if got3.shape == (3, ref.shape[1]) else float("inf")
    print(f"batch 3: max abs diff (each row vs the batch-1 reference) = {d3:.3g}")
    if not d3 <= TOL:
        raise Failure(f"batch 3: shape {got3.shape}, max abs diff {d3:.3g} > {TOL:g}")

    bad = work / "corrupt"
    shutil.copytree(art, bad)
    (bad / "model.pte").write_bytes((art / "model.pte").read_bytes()[:2000])
    r = run([args.bench, bad, "--image", png, "--iters", 1, "--no-verify"], timeout=120)
    # The runtime's own log lines ("[file.cpp:N] ..." / "E 00:00:00.000909 executorch:file.cpp:N] ...") aside,
    # stderr is the runner's one error line.
    et_log = re.compile(r"^(\[[\w.]+:\d+\]|[EWID] \d\d:\d\d:\d\d\.\d+ executorch:)")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not et_log.match(ln)]
    if r.returncode != 1 or len(lines) != 1 or not lines[0].startswith("vitedge-bench: error: cannot load ExecuTorch"):
        raise Failure(f"corrupt .pte: exit {r.returncode}, stderr {r.stderr.strip()[-600:]!r}")
    print(f"corrupt .pte: exit 1, {lines[0]}")
    print("executorch backend parity OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, type=Path, help="path to the vitedge-bench executable")
    ap.add_argument("--workdir", required=True, type=Path, help="scratch directory (recreated)")
    main(lambda: test(ap.parse_args()))
