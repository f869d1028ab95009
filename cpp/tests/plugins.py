"""Backend plugins: each runtime stays in its own plugin, and a plugin that is not ours is refused.

plugins.py --bench PATH/vitedge-bench --lib PATH/libvitedge.so --fixtures DIR --bad-abi DIR --no-entry DIR
           --workdir DIR [--executorch]

1. libvitedge.so links no runtime: no NEEDED entry names libtorch, libc10, ExecuTorch, ONNX Runtime or OpenVINO.
2. Only the runtime an artifact needs is loaded (the dynamic loader's own list, LD_DEBUG=files): a TorchScript
   artifact loads libtorch_cpu and no ExecuTorch library; an ONNX artifact loads neither libtorch nor ExecuTorch;
   an ExecuTorch artifact (--executorch) loads ExecuTorch and no libtorch.
   One process (the C ABI through ctypes, no torch imported) that runs an ExecuTorch and a TorchScript artifact:
   no symbol a libtorch library looks up binds into an ExecuTorch library or the reverse (LD_DEBUG=bindings).
   Linked into libvitedge.so together, libtorch_cpu bound sgemm_ and pthreadpool_create/destroy to ExecuTorch's
   copies, which made the C++ runner slower than Python on libtorch artifacts.
3. Refusals, each one clear line and exit 1 (VITEDGE_BACKEND_DIR points the runner at test folders):
   a plugin of another build (ABI key), a library that is not a vitedge plugin, a file that is not a library,
   and no plugin at all (libvitedge.so copied to a folder without vitedge/backends/).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from _common import PREPROCESSING, Failure, error_line_problems, main, tiny_vit

RUNTIME_LIBS = re.compile(r"lib(torch|c10|executorch|onnxruntime|openvino)\w*\.so")


def needed(lib: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def loaded_files(cmd: list, work: Path, tag: str, env: dict | None = None) -> set[str]:
    """The shared objects the dynamic loader maps while running CMD (file names only)."""
    prefix = work / f"ld-{tag}"
    for old in work.glob(f"ld-{tag}.*"):
        old.unlink()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300,
                       env={**os.environ, **(env or {}), "LD_DEBUG": "files", "LD_DEBUG_OUTPUT": str(prefix)})
    if r.returncode != 0:
        raise Failure(f"{tag}: {cmd} failed ({r.returncode}): {r.stderr[-500:]}")
    names = set()
    for f in work.glob(f"ld-{tag}.*"):
        names |= {Path(p).name for p in re.findall(r"file=(\S+)\s+\[\d+\];\s+(?:needed by|dynamically loaded by)", f.read_text())}
    if not names:
        raise Failure(f"{tag}: LD_DEBUG=files reported nothing (is this glibc?)")
    return names


def check_scope(tag: str, names: set[str], must: str, must_not: list[str]) -> None:
    if not any(n.startswith(must) for n in names):
        raise Failure(f"{tag}: {must}* was not loaded; loaded: {sorted(names)}")
    for bad in must_not:
        hit = sorted(n for n in names if n.startswith(bad))
        if hit:
            raise Failure(f"{tag}: loaded {hit}, which this artifact does not need")
    print(f"{tag}: loads {must}*, none of {must_not}")


BOTH_CHILD = r"""
import ctypes as C, sys
import numpy as np
# No torch in this process (the test helpers import it): the C ABI's own options struct, as vitedge.h declares it.
class Options(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("threads", C.c_int), ("device", C.c_char_p), ("warmup", C.c_int),
                ("verify", C.c_int), ("trusted_keys", C.POINTER(C.c_char_p)), ("num_trusted_keys", C.c_size_t),
                ("allow_unsigned_code", C.c_int)]
lib = C.CDLL(sys.argv[1])
lib.vitedge_last_error.restype = C.c_char_p
for art in sys.argv[2:]:
    opt = Options()
    lib.vitedge_options_init(C.byref(opt))
    opt.threads, opt.allow_unsigned_code = 1, 1
    h = C.c_void_p()
    if lib.vitedge_open(art.encode(), C.byref(opt), C.byref(h)) != 0:
        sys.exit("vitedge_open(%s): %s" % (art, lib.vitedge_last_error().decode()))
    x = np.zeros((1, 3, 64, 64), np.float32)
    o = C.c_void_p()
    if lib.vitedge_run(h, x.ctypes.data_as(C.POINTER(C.c_float)), (C.c_int64 * 4)(1, 3, 64, 64), C.c_size_t(4), C.byref(o)) != 0:
        sys.exit("vitedge_run(%s): %s" % (art, lib.vitedge_last_error().decode()))
    lib.vitedge_outputs_free(o)
    if "torch" in sys.modules:
        sys.exit("torch was imported")
print("ran", len(sys.argv) - 2)
"""


def check_no_cross_binding(lib: Path, arts: list[Path], work: Path) -> None:
    """Run ARTS in one process through the C ABI and check that no libtorch/libc10 lookup binds into an
    ExecuTorch library and no ExecuTorch lookup binds into libtorch/libc10."""
    prefix = work / "ld-both"
    r = subprocess.run([sys.executable, "-c", BOTH_CHILD, str(lib), *map(str, arts)],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "LD_DEBUG": "bindings", "LD_DEBUG_OUTPUT": str(prefix)})
    if r.returncode != 0 or "ran" not in r.stdout:
        raise Failure(f"one process, both runtimes: {r.stdout[-300:]} {r.stderr[-800:]}")
    cross, n = [], 0
    pattern = re.compile(r"binding file (\S+) \[\d+\] to (\S+) \[\d+\]: normal symbol `([^']+)'")
    for f in work.glob("ld-both.*"):
        for m in pattern.finditer(f.read_text()):
            n += 1
            src, dst = Path(m.group(1)).name, Path(m.group(2)).name
            torch_src, et_src = src.startswith(("libtorch", "libc10")), src.startswith("libexecutorch")
            if (torch_src and dst.startswith("libexecutorch")) or (et_src and dst.startswith(("libtorch", "libc10"))):
                cross.append(f"{src} -> {dst}: {m.group(3)}")
    if n == 0:
        raise Failure("LD_DEBUG=bindings reported no binding")
    if cross:
        raise Failure(f"symbols bound across runtimes ({len(cross)}): {sorted(set(cross))[:10]}")
    print(f"one process ran {[a.name for a in arts]}: {n} symbol bindings, none across libtorch/ExecuTorch")


def refused(bench: Path, art: Path, photo: Path, env: dict, phrase: str, tag: str) -> None:
    r = subprocess.run([str(bench), str(art), "--trust-code", "--image", str(photo), "--iters", "1", "--warmup", "0"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    problems = error_line_problems(r, 1, phrase)
    if problems:
        raise Failure(f"{tag}: " + "; ".join(problems))
    print(f"{tag}: refused: {r.stderr.strip()}")


def test(a) -> None:
    work = Path(a.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lib = Path(a.lib)
    ts = Path(a.fixtures) / "torchscript"
    photo = Path(a.fixtures) / "photos64" / "astronaut.png"

    bad = [n for n in needed(lib) if RUNTIME_LIBS.search(n)]
    if bad:
        raise Failure(f"{lib} links runtime libraries {bad}: they belong in backend plugins")
    print(f"{lib.name}: NEEDED {needed(lib)}")

    from vitedge.export import export
    model = tiny_vit()
    onnx = Path(export(model, torch.zeros(2, 3, 64, 64), "onnx", work / "onnx", force=True,
                       preprocessing=dict(PREPROCESSING)).path)
    base = [a.bench, "--image", photo, "--iters", "2", "--warmup", "0"]
    check_scope("torchscript", loaded_files([a.bench, ts, "--trust-code", *base[1:]], work, "ts"),
                "libtorch_cpu", ["libexecutorch", "libonnxruntime"])
    check_scope("onnx", loaded_files([a.bench, onnx, *base[1:]], work, "onnx"),
                "libonnxruntime", ["libtorch", "libc10", "libexecutorch"])
    if a.executorch:
        et = Path(export(model, torch.zeros(2, 3, 64, 64), "executorch", work / "et", force=True,
                             preprocessing=dict(PREPROCESSING)).path)
        check_scope("executorch", loaded_files([a.bench, et, *base[1:]], work, "et"),
                    "libexecutorch", ["libtorch", "libc10", "libonnxruntime"])
        check_no_cross_binding(lib, [et, ts], work)

    refused(a.bench, ts, photo, {"VITEDGE_BACKEND_DIR": a.bad_abi}, "was built for another vitedge", "ABI key")
    refused(a.bench, ts, photo, {"VITEDGE_BACKEND_DIR": a.no_entry}, "is not a vitedge backend plugin", "no entry points")
    junk = work / "junk" / "torch"
    junk.mkdir(parents=True)
    (junk / "libvitedge_backend_torch.so").write_bytes(b"\x7fELF not really a library")
    refused(a.bench, ts, photo, {"VITEDGE_BACKEND_DIR": str(junk.parent)}, "cannot load the torch backend plugin",
            "not a library")
    # libvitedge.so alone in a folder (LD_LIBRARY_PATH wins over vitedge-bench's RUNPATH): no plugin next to it.
    alone = work / "alone"
    alone.mkdir()
    shutil.copy2(lib, alone / lib.name)
    refused(a.bench, ts, photo, {"LD_LIBRARY_PATH": str(alone)}, "the torch backend plugin (libvitedge_backend_torch.so) "
            "was not found", "no plugin")
    print("plugins OK")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for name in ("--bench", "--lib", "--fixtures", "--bad-abi", "--no-entry", "--workdir"):
        p.add_argument(name, required=True)
    p.add_argument("--executorch", action="store_true")
    main(lambda: test(p.parse_args()))
