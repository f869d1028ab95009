"""C++ runner vs Python on real photos, for every libtorch backend (TorchScript, AOTInductor).

backend_parity.py --fixtures DIR --bench PATH/vitedge-bench --classify PATH/classify

For each artifact in the fixtures (make_fixtures.py: the same tiny ViT exported to each target):
1. Model parity: the 8 bundled photos pre-resized to 64x64 (so both sides only normalise) through
   vitedge-bench --image --dump-output vs the target's Python runner (vitedge.targets.<t>.load) on
   vitedge.data.load_batch: max abs diff <= 1e-4 and the same top-1, per photo.
2. Batch 8 (dynamic batch): each row equals the batch-1 Python reference within 1e-4; bench JSON schema.
3. --bare (the bare backend loop): valid bench JSON with runtime "<runtime>-cpp-bare".
4. End to end: `classify` on the full-size originals (JPEG and PNG decoding + resize in C++) vs Python's
   preprocessing (PIL) + Python runner: identical top-1 for every photo; softmax scores printed by classify
   within 0.01 of Python's.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from _common import Failure, check_bench_json, load_json, main, parse_classify, read_dump, run

TOL = 1e-4
SCORE_TOL = 0.01
RUNTIMES = {"torchscript": "libtorch", "aotinductor": "aotinductor"}


def bench(exe, art, work: Path, tag: str, *extra) -> tuple[dict, np.ndarray | None]:
    out_json, out_bin = work / f"{tag}.json", work / f"{tag}.bin"
    dump = [] if "--bare" in extra else ["--dump-output", out_bin]
    key = Path(art).parent / "keys" / "pub.pem"  # the fixtures are signed (make_fixtures.py)
    r = run([exe, art, "--key", key, "--iters", 2, "--warmup", 1, "--threads", 1, "--json", out_json, *dump, *extra])
    if r.returncode != 0:
        raise Failure(f"vitedge-bench {tag} exited {r.returncode}: {r.stderr.strip()}")
    return load_json(out_json), (None if not dump else read_dump(out_bin))


def check_target(target: str, fx: Path, args, work: Path) -> None:
    from vitedge.data import load_batch
    from vitedge.manifest import read_manifest
    from vitedge.targets import target_module

    art = fx / target
    manifest = read_manifest(art)
    pre = manifest.manifest["preprocessing"]
    py = target_module(target).load(manifest, 1)
    work.mkdir(parents=True, exist_ok=True)
    rt = RUNTIMES[target]

    small = sorted((fx / "photos64").glob("*.png"))
    ref = py.run(load_batch(small, pre).numpy())[0]
    worst = 0.0
    for i, png in enumerate(small):
        data, got = bench(args.bench, art, work, f"{png.stem}_b1", "--image", png)
        check_bench_json(data, f"{target} {png.name}", runtime=f"{rt}-cpp")
        d = float(np.abs(got[0] - ref[i]).max())
        worst = max(worst, d)
        if not d <= TOL or int(got[0].argmax()) != int(ref[i].argmax()):
            raise Failure(f"{target} {png.name}: max abs diff {d:.3g} (tol {TOL:g}), top-1 C++ {int(got[0].argmax())} "
                          f"vs Python {int(ref[i].argmax())}")
    print(f"{target}: {len(small)} photos at batch 1, C++ vs Python max abs diff {worst:.3g}, top-1 identical")

    data, got8 = bench(args.bench, art, work, "batch8", "--image", small[0], "--batch", 8)
    check_bench_json(data, f"{target} batch 8", runtime=f"{rt}-cpp")
    d8 = float(np.abs(got8 - ref[0]).max())
    if got8.shape[0] != 8 or not d8 <= TOL:
        raise Failure(f"{target} batch 8: shape {got8.shape}, max abs diff {d8:.3g}")
    print(f"{target}: batch 8 rows vs batch-1 Python reference, max abs diff {d8:.3g}")

    data, _ = bench(args.bench, art, work, "bare", "--bare")
    check_bench_json(data, f"{target} --bare", runtime=f"{rt}-cpp-bare")

    originals = sorted((fx / "photos").iterdir())
    r = run([args.classify, "--key", Path(art).parent / "keys" / "pub.pem", art, *originals])
    if r.returncode != 0:
        raise Failure(f"classify {target} exited {r.returncode}: {r.stderr.strip()}")
    got = parse_classify(r.stdout)
    with torch.inference_mode():
        logits = py.run(load_batch(originals, pre).numpy())[0].astype(np.float64)
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    worst_score = 0.0
    for i, p in enumerate(originals):
        top = got.get(str(p))
        if not top or len(top) != 5:
            raise Failure(f"classify {target}: no top-5 for {p}: {r.stdout[:300]!r}")
        if top[0][0] != int(prob[i].argmax()):
            raise Failure(f"classify {target} {p.name}: top-1 {top[0][0]} vs Python {int(prob[i].argmax())}")
        for k, score in top:
            worst_score = max(worst_score, abs(score - prob[i, k]))
    if not worst_score <= SCORE_TOL:
        raise Failure(f"classify {target}: a top-5 score differs from Python's by {worst_score:.3g} > {SCORE_TOL}")
    print(f"{target}: classify on {len(originals)} full-size photos (JPEG/PNG + resize in C++): top-1 identical to "
          f"Python, top-5 scores within {worst_score:.3g}")


def test(args) -> None:
    fx = Path(args.fixtures)
    for target in RUNTIMES:
        check_target(target, fx, args, fx.parent / "test-backend-parity" / target)
    print("backend parity OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", required=True, type=Path)
    ap.add_argument("--bench", required=True, type=Path)
    ap.add_argument("--classify", required=True, type=Path)
    main(lambda: test(ap.parse_args()))
