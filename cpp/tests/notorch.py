"""A runner built with -DVITEDGE_WITH_TORCH=OFF (the `make cpp-notorch` build): no libtorch anywhere.

notorch.py --bench PATH/vitedge-bench --build-dir BUILD --workdir DIR

1. No ELF file the build produced (library, plugins, tools, tests) links libtorch or libc10 (readelf NEEDED).
2. A TorchScript artifact is refused with one clear line naming the CMake option, exit 1.
3. An ONNX artifact runs (ONNX Runtime backend; its parity is cpp_onnxruntime's job): valid bench JSON.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

import torch

from _common import PREPROCESSING, Failure, check_bench_json, error_line_problems, export_tiny, main, run, tiny_vit


def test(a) -> None:
    work = Path(a.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    elves = 0
    for f in sorted(Path(a.build_dir).rglob("*")):
        if f.is_symlink() or not f.is_file() or f.suffix in (".o", ".a") or "CMakeFiles" in f.parts:
            continue
        with open(f, "rb") as fh:
            if fh.read(4) != b"\x7fELF":
                continue
        elves += 1
        dyn = subprocess.run(["readelf", "-d", str(f)], capture_output=True, text=True).stdout
        bad = [n for n in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn) if re.match(r"lib(torch|c10)", n)]
        if bad:
            raise Failure(f"{f} links {bad} in a -DVITEDGE_WITH_TORCH=OFF build")
    if elves < 3:
        raise Failure(f"only {elves} ELF files under {a.build_dir}: wrong build folder?")
    print(f"{elves} ELF files in {a.build_dir}, none links libtorch/libc10")

    ts = export_tiny(work / "ts")
    photo = work / "photo.png"
    from PIL import Image
    from vitedge.data import bundled_photo_paths
    Image.open(bundled_photo_paths()[0]).convert("RGB").resize((64, 64)).save(photo)
    r = run([a.bench, ts, "--trust-code", "--image", photo, "--iters", "1"])
    problems = error_line_problems(r, 1, "rebuild with -DVITEDGE_WITH_TORCH=ON")
    if problems:
        raise Failure("TorchScript artifact in a no-torch runner: " + "; ".join(problems))
    print(f"TorchScript refused: {r.stderr.strip()}")

    from vitedge.export import export
    onnx = Path(export(tiny_vit(), torch.zeros(2, 3, 64, 64), "onnx", work / "onnx", force=True,
                       preprocessing=dict(PREPROCESSING)).path)
    out = work / "onnx.json"
    r = run([a.bench, onnx, "--image", photo, "--iters", "3", "--warmup", "1", "--json", out])
    if r.returncode != 0:
        raise Failure(f"ONNX artifact in a no-torch runner failed: {r.stderr[-500:]}")
    check_bench_json(json.loads(out.read_text()), "onnx (no torch)", runtime="onnxruntime-cpp")
    print("no-torch runner OK")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for name in ("--bench", "--build-dir", "--workdir"):
        p.add_argument(name, required=True)
    main(lambda: test(p.parse_args()))
