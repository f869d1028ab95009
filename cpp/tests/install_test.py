"""`cmake --install` + find_package(vitedge): build the example app against the installed package and run it.

install_test.py --fixtures DIR --build-dir BUILD --examples cpp/examples --workdir DIR

1. cmake --install BUILD --prefix WORKDIR/prefix: include/vitedge/{runner.h,vitedge.h}, lib/libvitedge.so and
   lib/cmake/vitedge/vitedgeConfig.cmake must be there.
2. Configure cpp/examples (find_package(vitedge) only, no libtorch) with CMAKE_PREFIX_PATH=prefix, build it.
3. The installed-package classify prints the same top-5 as the in-tree one on a real photo, per backend.
4. Bad input to classify: a clear one-line "classify: error: ..." and exit 1 (missing artifact, a manifest
   naming an absent backend, a text file as image, a truncated model), never a crash.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from _common import Failure, main, run


def test(args) -> None:
    work, fx = Path(args.workdir), Path(args.fixtures)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    prefix = work / "prefix"
    r = run(["cmake", "--install", args.build_dir, "--prefix", prefix], timeout=300)
    if r.returncode != 0:
        raise Failure(f"cmake --install failed: {r.stderr.strip()[-500:]}")
    for rel in ("include/vitedge/runner.h", "include/vitedge/vitedge.h", "lib/libvitedge.so",
                "lib/cmake/vitedge/vitedgeConfig.cmake", "lib/cmake/vitedge/vitedgeConfigVersion.cmake",
                "bin/classify", "bin/vitedge-bench"):
        if not (prefix / rel).exists():
            raise Failure(f"cmake --install did not install {rel}")
    build = work / "classify-build"
    r = run(["cmake", "-S", args.examples, "-B", build, "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_PREFIX_PATH={prefix}"])
    if r.returncode != 0:
        raise Failure(f"configuring the example against the installed vitedge failed: {r.stdout[-800:]} {r.stderr[-800:]}")
    r = run(["cmake", "--build", build], timeout=300)
    if r.returncode != 0:
        raise Failure(f"building the example against the installed vitedge failed: {r.stdout[-1500:]}")
    exe = build / "classify"
    photo = sorted((fx / "photos").glob("*.jpg"))[0]
    for target in ("torchscript", "aotinductor"):
        key = ["--key", fx / "keys" / "pub.pem"]  # the fixtures are signed
        mine = run([exe, *key, fx / target, photo])
        ref = run([args.build_dir / "cpp" / "classify", *key, fx / target, photo])
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
