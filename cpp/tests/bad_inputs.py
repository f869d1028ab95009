"""vitedge-bench on bad input: a clear one-line error and exit 1 (runtime) or 2 (usage), never a crash.

bad_inputs.py --bench PATH/vitedge-bench --workdir DIR

Each case checks the exit code (exactly the expected 1 or 2; a crash or abort gives 134/139 or a negative
code), that stderr is exactly one line "vitedge-bench: error: ..." holding the expected phrase, and that
nothing was printed on stdout.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from _common import Failure, copy_artifact, error_line_problems, export_tiny, load_json, main, run


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test(args) -> None:
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    good = export_tiny(work / "good")
    exe = args.bench

    # Sanity: the good artifact runs.
    r = run([exe, good, "--iters", 1, "--warmup", 0])
    if r.returncode != 0:
        raise Failure(f"the good artifact fails: exit {r.returncode}: {r.stderr.strip()}")

    trunc = copy_artifact(good, work / "truncated")
    truncate(trunc / "model.pt")
    trunc_unlisted = copy_artifact(good, work / "truncated_unlisted", lambda m: m.pop("files"))
    truncate(trunc_unlisted / "model.pt")
    garbage = copy_artifact(good, work / "garbage_model", lambda m: m.pop("files"))
    (garbage / "model.pt").write_bytes(b"this is not a TorchScript archive\n" * 10)
    future = copy_artifact(good, work / "schema99", lambda m: m.update(schema_version=99))
    trt = copy_artifact(good, work / "trt_backend", lambda m: m.update(backend="tensorrt", target="trt"))
    unknown = copy_artifact(good, work / "tflite_backend", lambda m: m.update(backend="tflite", target="tflite"))
    mismatch = copy_artifact(good, work / "ts_onnxruntime", lambda m: m.update(backend="onnxruntime"))
    aoti = copy_artifact(good, work / "aoti_target", lambda m: m.update(target="aotinductor"))
    badjson = copy_artifact(good, work / "bad_json")
    (badjson / "manifest.json").write_text('{"schema_version": 1, "artifact": ')
    no_manifest = copy_artifact(good, work / "no_manifest")
    (no_manifest / "manifest.json").unlink()
    no_model = copy_artifact(good, work / "no_model")
    (no_model / "model.pt").unlink()

    # Integrity (SHA-256 in manifest.json, checked unless --no-verify).
    no_files = copy_artifact(good, work / "no_files_block", lambda m: m.pop("files"))
    wrong_sha = copy_artifact(good, work / "wrong_sha256",
                              lambda m: m["files"]["model.pt"].update(sha256="0" * 64))
    flipped = copy_artifact(good, work / "flipped_byte")
    data = bytearray((flipped / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit changed
    (flipped / "model.pt").write_bytes(bytes(data))
    escape = copy_artifact(good, work / "escape_dotdot",
                           lambda m: m["files"].update({"../outside.bin": {"sha256": "0" * 64, "bytes": 1}}))
    absolute = copy_artifact(good, work / "escape_absolute", lambda m: m.update(artifact="/etc/passwd"))
    bad_hex = copy_artifact(good, work / "sha256_not_hex",
                            lambda m: m["files"]["model.pt"].update(sha256="xyz"))

    def fixed_batch(m):
        m["inputs"][0]["shape"][0] = 2
    static2 = copy_artifact(good, work / "static_batch2", fixed_batch)

    def wrong_size(m):
        m["inputs"][0]["shape"] = [-1, 3, 32, 32]
    size_mismatch = copy_artifact(good, work / "size_mismatch", wrong_size)

    def dyn_hw(m):  # the manifest lies: dynamic H, W and a 32x32 preprocessing size the model cannot take
        m["inputs"][0]["shape"] = [-1, 3, -1, -1]
        m["preprocessing"]["size"] = [32, 32]
    model_error = copy_artifact(good, work / "model_error", dyn_hw)

    text = work / "notes.txt"
    text.write_text("not an image\n")
    empty = work / "empty.png"
    empty.write_bytes(b"")

    cases = [
        # (name, argv, expected exit code, phrase in the message)
        ("missing artifact dir", [work / "nope"], 1, "does not exist"),
        ("no manifest.json", [no_manifest], 1, "cannot open"),
        ("manifest not JSON", [badjson], 1, "not valid JSON"),
        ("schema_version 99", [future], 1, "schema_version 99"),
        ("backend tensorrt (not built here)", [trt], 1,
         "backend 'tensorrt' (target 'trt') is not built: this runner was built without the tensorrt backend; "
         "rebuild with -DVITEDGE_WITH_TENSORRT=ON"),
        ("backend unknown", [unknown], 1, "backend 'tflite' (target 'tflite') is not known to this vitedge runner"),
        ("target/backend mismatch", [mismatch], 1, "runs 'torchscript' artifacts with backend 'libtorch'"),
        ("target aotinductor, TorchScript file", [aoti], 1, "cannot load AOTInductor package"),
        ("--device gpu", [good, "--device", "gpu"], 1, "device must be"),
        ("model.pt missing", [no_model], 1, "is missing"),
        ("truncated model.pt (size recorded)", [trunc], 1, "truncated"),
        ("truncated model.pt (size not recorded, --no-verify)", [trunc_unlisted, "--no-verify"], 1,
         "cannot load TorchScript model"),
        ("garbage model.pt (--no-verify)", [garbage, "--no-verify"], 1, "cannot load TorchScript model"),
        ("no files block: nothing to verify", [no_files], 1, "records no sha256 for the artifact file 'model.pt'"),
        ("sha256 in manifest wrong", [wrong_sha], 1, "model.pt does not match its manifest: sha256"),
        ("model.pt one bit flipped", [flipped], 1, "model.pt does not match its manifest: sha256"),
        ("files name with ..", [escape], 1, "leaves the artifact directory"),
        ("artifact absolute path", [absolute], 1, "is absolute"),
        ("sha256 not hex", [bad_hex], 1, "sha256 must be 64 hex digits"),
        ("text file as --image", [good, "--image", text], 1, "cannot decode image"),
        ("empty file as --image", [good, "--image", empty], 1, "cannot decode image"),
        ("missing --image", [good, "--image", work / "nope.png"], 1, "cannot decode image"),
        ("fixed batch 2, --batch 3", [static2, "--batch", 3], 1, "fixed batch of 2"),
        ("model raises inside libtorch", [model_error, "--iters", 1, "--warmup", 0], 1, "is invalid for input of size"),
        ("--batch 0", [good, "--batch", 0], 2, "--batch must be in"),
        ("--batch -2", [good, "--batch", -2], 2, "--batch must be in"),
        ("--batch abc", [good, "--batch", "abc"], 2, "--batch expects an integer"),
        ("--batch 2x", [good, "--batch", "2x"], 2, "--batch expects an integer"),
        ("--batch without value", [good, "--batch"], 2, "--batch needs a value"),
        ("--iters 0", [good, "--iters", 0], 2, "--iters must be in"),
        ("unknown option", [good, "--fast"], 2, "unknown option --fast"),
        ("no artifact", [], 2, "missing ARTIFACT_DIR"),
        ("two artifacts", [good, good], 2, "expected one ARTIFACT_DIR"),
    ]
    # A real image whose size does not match the (edited) input shape: the runner's shape check.
    from PIL import Image
    img = work / "gray_80x60.png"
    Image.new("RGB", (80, 60), (120, 130, 140)).save(img)
    cases.append(("input shape check", [size_mismatch, "--image", img], 1,
                  "input shape (1, 3, 64, 64) does not match the artifact's input 'pixel_values' of shape (any, 3, 32, 32)"))
    cases.append(("fixed batch, image batch 3", [static2, "--image", img, "--batch", 3], 1, "does not match"))

    # --no-verify skips the check: the artifact whose manifest records a wrong digest runs.
    r = run([exe, wrong_sha, "--iters", 1, "--warmup", 0, "--no-verify"])
    if r.returncode != 0:
        raise Failure(f"--no-verify did not skip the SHA-256 check: exit {r.returncode}: {r.stderr.strip()}")

    failures = []
    for name, argv, code, phrase in cases:
        r = run([exe, *argv])
        lines = r.stderr.splitlines()
        problems = error_line_problems(r, code, phrase)
        status = "ok  " if not problems else "FAIL"
        print(f"{status} {name}: exit {r.returncode}: {lines[0] if lines else '(no stderr)'}")
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")
    if failures:
        raise Failure(f"{len(failures)} case(s) failed: " + " | ".join(failures))
    print(f"all {len(cases)} bad-input cases OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, type=Path, help="path to the vitedge-bench executable")
    ap.add_argument("--workdir", required=True, type=Path, help="scratch directory (recreated)")
    main(lambda: test(ap.parse_args()))
