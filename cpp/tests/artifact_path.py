"""The artifact path rule (issue 21): an artifact is opened from its folder or from the model file in it, by the
C++ tools, the C ABI and Python alike; any other file is refused with one line naming the path as given.

artifact_path.py --bench PATH/vitedge-bench --classify PATH/classify [--lib PATH/libvitedge.so] --workdir DIR

For every path below, vitedge-bench, classify, vitedge_open (through ctypes, when --lib is given) and Python's
vitedge.manifest.read_manifest / vitedge.runtime.open_artifact must agree: all accept it, or all refuse it. An
accepted model file must give what its folder gives (the same --dump-output bytes, the same classify output, the
bench JSON's "artifact" the folder). A refused file: exit 1, nothing on stdout, one stderr line holding
"<path>' is a file but not the model file of an artifact" and the reason, and Python's ArtifactError saying the
same. Paths: the folder; its model file (absolute, with a trailing "/", bare name from inside the folder); a
symlink to the folder and the model file through it; manifest.json; another file of the folder; a file with no
manifest.json beside it; a model file in a folder whose manifest names another file (and that other file, which
is accepted); a symlink to the model file from another folder (its own folder has no manifest.json: refused, as
Python's Path.parent rule gives); a missing path.
"""
from __future__ import annotations

import argparse
import ctypes as C
import json
import os
import shutil
from pathlib import Path

from _common import Failure, copy_artifact, error_line_problems, export_tiny, main, run

NOT_MODEL = "is a file but not the model file of an artifact"


class Options(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("threads", C.c_int), ("device", C.c_char_p), ("warmup", C.c_int),
                ("verify", C.c_int), ("trusted_keys", C.POINTER(C.c_char_p)), ("num_trusted_keys", C.c_size_t),
                ("allow_unsigned_code", C.c_int)]


def c_open(lib, path: str) -> tuple[int, str]:
    """vitedge_open(path) with allow_unsigned_code: (status, last error); the runner is closed."""
    o = Options()
    lib.vitedge_options_init(C.byref(o))
    o.allow_unsigned_code = 1
    r = C.c_void_p()
    status = lib.vitedge_open(path.encode(), C.byref(o), C.byref(r))
    err = lib.vitedge_last_error().decode()
    if r:
        lib.vitedge_close(r)
    return status, err


def python_open(path: str) -> str | None:
    """None if Python's read_manifest and open_artifact both accept ``path``, else the error (both must agree)."""
    from vitedge.errors import ArtifactError
    from vitedge.manifest import read_manifest
    from vitedge.runtime import open_artifact
    errors = []
    for fn, kw in ((read_manifest, {}), (open_artifact, {"trust_code": True})):
        try:
            fn(path, **kw)
            errors.append(None)
        except ArtifactError as e:
            errors.append(str(e))
    if (errors[0] is None) != (errors[1] is None):
        raise Failure(f"{path}: read_manifest and open_artifact disagree: {errors}")
    return errors[0]


def test(args) -> None:
    work = Path(args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    art = export_tiny(work / "art")
    from vitedge.data import bundled_photo_paths
    photo = str(bundled_photo_paths()[0])
    lib = None
    if args.lib:
        lib = C.CDLL(args.lib)
        lib.vitedge_options_init.argtypes = [C.POINTER(Options)]
        lib.vitedge_open.argtypes = [C.c_char_p, C.POINTER(Options), C.POINTER(C.c_void_p)]
        lib.vitedge_open.restype = C.c_int
        lib.vitedge_last_error.restype = C.c_char_p
        lib.vitedge_close.argtypes = [C.c_void_p]

    # The paths. Folder contents besides the artifact's own files are fine without a signature.
    with_notes = copy_artifact(art, work / "with_notes")
    (with_notes / "notes.txt").write_text("not a model\n")
    lone = work / "lone"
    lone.mkdir()
    shutil.copy(art / "model.pt", lone / "model.pt")

    def rename_main(m):  # the manifest names main.pt; model.pt is left beside it, a copy of the same bytes
        m["artifact"] = "main.pt"
        m["files"]["main.pt"] = m["files"].pop("model.pt")
    other = copy_artifact(art, work / "names_main", rename_main)
    shutil.copy(art / "model.pt", other / "main.pt")
    linkdir = work / "links"
    linkdir.mkdir()
    (linkdir / "model.pt").symlink_to(art / "model.pt")
    (linkdir / "art").symlink_to(art, target_is_directory=True)

    accepted = [("folder", str(art), None), ("model file", str(art / "model.pt"), None),
                ("model file with a trailing /", str(art / "model.pt") + "/", None),
                ("bare model file name", "model.pt", art),
                ("symlink to the folder", str(linkdir / "art"), None),
                ("model file through a symlinked folder", str(linkdir / "art" / "model.pt"), None),
                ("the file the manifest names", str(other / "main.pt"), None)]
    refused = [("manifest.json", str(art / "manifest.json"), "(it is the manifest; give its folder"),
               ("another file of the folder", str(with_notes / "notes.txt"), "names 'model.pt'"),
               ("a model file with no manifest.json beside it", str(lone / "model.pt"), "(no manifest.json beside it)"),
               ("a model file the folder's manifest does not name", str(other / "model.pt"), "names 'main.pt'"),
               ("symlink to the model file from another folder", str(linkdir / "model.pt"),
                "(no manifest.json beside it)")]
    failures: list[str] = []

    def in_cwd(cwd, fn):
        old = os.getcwd()
        os.chdir(cwd or work)
        try:
            return fn()
        finally:
            os.chdir(old)

    reference = None  # (dump bytes, classify stdout) of the folder
    for i, (what, path, cwd) in enumerate(accepted):
        dump = work / f"dump{i}.bin"
        out_json = work / f"bench{i}.json"
        rb = run_in([args.bench, path, "--trust-code", "--iters", 1, "--warmup", 0, "--image", photo,
                     "--dump-output", dump, "--json", out_json], cwd or work)
        rc = run_in([args.classify, "--trust-code", path, photo], cwd or work)
        for tool, r in (("vitedge-bench", rb), ("classify", rc)):
            if r.returncode != 0:
                failures.append(f"{what} ({path}): {tool} exit {r.returncode}: {r.stderr.strip()[:300]}")
        if rb.returncode != 0 or rc.returncode != 0:
            continue
        reported = json.loads(out_json.read_text())["artifact"]
        folder = str(Path(path.rstrip("/")).parent) if Path(path).is_file() else path
        if cwd is not None:
            folder = "."
        if reported != folder:
            failures.append(f"{what} ({path}): bench JSON artifact {reported!r}, expected the folder {folder!r}")
        got = (dump.read_bytes(), rc.stdout)
        if reference is None:
            reference = got
        elif got != reference:
            failures.append(f"{what} ({path}): output differs from the folder's (--dump-output bytes or classify)")
        if lib is not None:
            status, err = in_cwd(cwd, lambda: c_open(lib, path))
            if status != 0:
                failures.append(f"{what} ({path}): vitedge_open status {status}: {err}")
        err = in_cwd(cwd, lambda: python_open(path))
        if err is not None:
            failures.append(f"{what} ({path}): Python refuses it: {err}")

    for what, path, reason in refused:
        for tool, cmd, prefix in (("vitedge-bench", [args.bench, path, "--trust-code", "--iters", 1],
                                   "vitedge-bench: error: "),
                                  ("classify", [args.classify, "--trust-code", path, photo], "classify: error: ")):
            r = run_in(cmd, work)
            problems = error_line_problems(r, 1, f"{path}' {NOT_MODEL}", prefix)
            if not problems and reason not in r.stderr:
                problems.append(f"message lacks {reason!r}: {r.stderr.strip()!r}")
            failures += [f"{what} ({path}): {tool}: {p}" for p in problems]
        if lib is not None:
            status, err = c_open(lib, path)
            if status != 2 or f"{path}' {NOT_MODEL}" not in err or reason not in err or "\n" in err:
                failures.append(f"{what} ({path}): vitedge_open status {status}, message {err!r}")
        err = python_open(path)
        if err is None or not err.startswith(f"{path} {NOT_MODEL}") or reason not in err:
            failures.append(f"{what} ({path}): Python: {err!r} (expected a refusal naming the path, {reason!r})")

    # A missing path: refused by all, naming it.
    missing = str(work / "nope.pt")
    r = run_in([args.bench, missing], work)
    failures += [f"missing path: vitedge-bench: {p}" for p in error_line_problems(r, 1, f"'{missing}' does not exist")]
    r = run_in([args.classify, missing, photo], work)
    failures += [f"missing path: classify: {p}"
                 for p in error_line_problems(r, 1, f"'{missing}' does not exist", "classify: error: ")]
    if python_open(missing) is None:
        failures.append("missing path: Python accepts it")

    if failures:
        raise Failure(f"{len(failures)} problem(s): " + " | ".join(failures))
    print(f"artifact paths: {len(accepted)} accepted by vitedge-bench, classify, "
          f"{'vitedge_open, ' if lib else ''}Python (same output as the folder); {len(refused)} refused by all "
          "with the path named; a missing path refused")


def run_in(cmd, cwd):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return run(cmd)
    finally:
        os.chdir(old)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True)
    ap.add_argument("--classify", required=True)
    ap.add_argument("--lib")
    ap.add_argument("--workdir", required=True)
    main(lambda: test(ap.parse_args()))
