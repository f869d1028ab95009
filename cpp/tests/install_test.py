"""`cmake --install` + find_package(vitedge): build the example app against the installed package and run it.

install_test.py --fixtures DIR --build-dir BUILD --examples cpp/examples --workdir DIR

1. cmake --install BUILD --prefix WORKDIR/staging: include/vitedge/{runner.h,vitedge.h}, lib/libvitedge.so,
   lib/cmake/vitedge/vitedgeConfig.cmake and the backend folders lib/vitedge/backends/<name>/ must be there.
2. The prefix is relocatable: it is moved to WORKDIR/moved/prefix (the staging folder no longer exists), no
   installed file contains a path of the source tree, the build tree or the venv, and every RUNPATH is $ORIGIN-relative.
3. Configure cpp/examples (find_package(vitedge) only, no libtorch) against the moved prefix, build it.
4. The installed-package classify prints the same top-5 as the in-tree one on a real photo, per backend
   (TorchScript, AOTInductor: the torch plugin and its bundled libtorch; ONNX: the bundled libonnxruntime).
4. Bad input to classify: a clear one-line "classify: error: ..." and exit 1 (missing artifact, a manifest
   naming an absent backend, a text file as image, a truncated model), never a crash.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from _common import PREPROCESSING, Failure, main, run, tiny_vit


def export_onnx(out: Path) -> Path:
    """The tiny seeded ViT of the fixtures as an ONNX artifact (no signature: a data format)."""
    import torch
    from vitedge.export import export
    return Path(export(tiny_vit(), torch.zeros(2, 3, 64, 64), "onnx", out, force=True,
                       preprocessing=dict(PREPROCESSING)).path)


def check_relocatable(prefix: Path, forbidden: list[Path]) -> None:
    """No installed file names a folder of this machine's build (source tree, build tree, venv); every ELF
    file's RUNPATH/RPATH uses only $ORIGIN."""
    needles = [str(p).encode() for p in forbidden]
    for f in sorted(prefix.rglob("*")):
        if not f.is_file() or f.is_symlink():
            continue
        data = f.read_bytes()
        for n in needles:
            if n in data:
                raise Failure(f"installed file {f.relative_to(prefix)} contains the build machine's path {n.decode()}")
        if data[:4] == b"\x7fELF":
            dyn = subprocess.run(["readelf", "-d", str(f)], capture_output=True, text=True).stdout
            for path in re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[([^\]]*)\]", dyn):
                if any(p and not p.startswith("$ORIGIN") for p in path.split(":")):
                    raise Failure(f"installed file {f.relative_to(prefix)} has RUNPATH {path!r} (not $ORIGIN-relative)")
    print(f"relocatable: no path of {[str(p) for p in forbidden]} in {prefix}, RUNPATHs $ORIGIN-relative")


def test(args) -> None:
    work, fx = Path(args.workdir), Path(args.fixtures)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    staging = work / "staging"
    r = run(["cmake", "--install", args.build_dir, "--prefix", staging], timeout=600)
    if r.returncode != 0:
        raise Failure(f"cmake --install failed: {r.stderr.strip()[-500:]}")
    for rel in ("include/vitedge/runner.h", "include/vitedge/vitedge.h", "lib/libvitedge.so",
                "lib/cmake/vitedge/vitedgeConfig.cmake", "lib/cmake/vitedge/vitedgeConfigVersion.cmake",
                "bin/classify", "bin/vitedge-bench", "lib/vitedge/backends/torch/libvitedge_backend_torch.so",
                "lib/vitedge/backends/torch/libtorch_cpu.so", "lib/vitedge/backends/onnxruntime/libonnxruntime.so.1"):
        if not (staging / rel).exists():
            raise Failure(f"cmake --install did not install {rel}")
    (work / "moved").mkdir()
    prefix = work / "moved" / "prefix"
    shutil.move(str(staging), str(prefix))
    check_relocatable(prefix, [Path(args.build_dir).resolve(), Path(__file__).resolve().parents[2], Path(sys.prefix)])
    for d in sorted((prefix / "lib" / "vitedge" / "backends").iterdir()):
        mb = sum(f.stat().st_size for f in d.iterdir()) / 2**20
        print(f"installed backend folder {d.name}: {mb:.0f} MB ({len(list(d.iterdir()))} files)")
    build = work / "classify-build"
    r = run(["cmake", "-S", args.examples, "-B", build, "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_PREFIX_PATH={prefix}"])
    if r.returncode != 0:
        raise Failure(f"configuring the example against the installed vitedge failed: {r.stdout[-800:]} {r.stderr[-800:]}")
    r = run(["cmake", "--build", build], timeout=300)
    if r.returncode != 0:
        raise Failure(f"building the example against the installed vitedge failed: {r.stdout[-1500:]}")
    exe = build / "classify"
    photo = sorted((fx / "photos").glob("*.jpg"))[0]
    onnx = export_onnx(work / "onnx")
    for target, art in (("torchscript", fx / "torchscript"), ("aotinductor", fx / "aotinductor"), ("onnx", onnx)):
        key = ["--key", fx / "keys" / "pub.pem"] if target != "onnx" else []  # the fixtures are signed
        mine = run([exe, *key, art, photo])
        ref = run([args.build_dir / "cpp" / "classify", *key, art, photo])
        if mine.returncode != 0 or mine.stdout != ref.stdout or len(mine.stdout.splitlines()) != 6:
            raise Failure(f"installed classify on {target}: exit {mine.returncode}, {mine.stdout!r} {mine.stderr!r} "
                          f"vs in-tree {ref.stdout!r}")
        print(f"installed classify ({target}):\n{mine.stdout.rstrip()}")
    print(f"find_package(vitedge) example built against {prefix} and matches the in-tree build")

    bad = work / "bad"
    bad.mkdir()

    def edited(name, edit):
        d = bad / name
        shutil.copytree(fx / "torchscript", d)
        m = json.loads((d / "manifest.json").read_text())
        edit(m)
        (d / "manifest.json").write_text(json.dumps(m))
        return d

    trunc = edited("truncated", lambda m: m["files"].clear())
    (trunc / "model.pt").write_bytes((trunc / "model.pt").read_bytes()[:5000])
    cases = [
        ("missing artifact", [bad / "nope", photo], "does not exist"),
        ("absent backend", [edited("trt", lambda m: m.update(backend="tensorrt", target="trt")), photo],
         "this runner was built without the tensorrt backend"),
        ("text file as image", [fx / "torchscript", fx / "notes.txt"], "cannot decode image"),
        ("truncated model", [trunc, photo], "model.pt"),
    ]
    cases = [(name, ["--trust-code", *argv], phrase) for name, argv, phrase in cases]  # not about signatures
    cases += [
        ("unsigned TorchScript without --key/--trust-code", [fx / "torchscript", photo],
         "its TorchScript file runs code when it is loaded and it is not signed by a trusted key"),
        ("signed artifact, wrong key", ["--key", fx / "notes.txt", fx / "torchscript", photo], "is not a PEM public key"),
    ]
    failures = []
    for name, argv, phrase in cases:
        r = run([exe, *argv])
        lines = r.stderr.splitlines()
        ok = r.returncode == 1 and len(lines) == 1 and lines[0].startswith("classify: error: ") and phrase in lines[0]
        print(f"{'ok  ' if ok else 'FAIL'} classify {name}: exit {r.returncode}: {r.stderr.strip()[:300]}")
        if not ok:
            failures.append(name)
    r = run([exe])
    if r.returncode != 2 or "usage" not in r.stderr:
        failures.append("no arguments")
    if failures:
        raise Failure(f"classify bad inputs failed: {failures}")
    print("classify bad inputs OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", required=True, type=Path)
    ap.add_argument("--build-dir", required=True, type=Path)
    ap.add_argument("--examples", required=True, type=Path)
    ap.add_argument("--workdir", required=True, type=Path)
    main(lambda: test(ap.parse_args()))
