"""vitedge-bench on bad input: a clear one-line error and exit 1 (runtime) or 2 (usage), never a crash.

bad_inputs.py --bench PATH/vitedge-bench --workdir DIR

Each case checks the exit code (exactly the expected 1 or 2; a crash or abort gives 134/139 or a negative
code), that stderr is exactly one line "vitedge-bench: error: ..." holding the expected phrase, and that
nothing was printed on stdout. The cases run with --trust-code (they are not about signatures; the unsigned
TorchScript refusal itself is one case), and include issue 17's findings: zip members escaping the extraction
folder (.pt and .pt2), a FIFO or oversized manifest.json, a FIFO model file, a symlink out of the folder, a
"sha256": null entry, ONNX Runtime session_config keys vitedge does not write, a preprocessing.size that is not
the input's (H, W), and ONNX external data.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

from _common import Failure, copy_artifact, error_line_problems, export_tiny, load_json, main, run


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def rehash(art: Path, edit_manifest=None) -> Path:
    """Recompute manifest.json's sha256/bytes of every listed file (what an attacker who edits files does)."""
    m = load_json(art / "manifest.json")
    if edit_manifest:
        edit_manifest(m)
    for name in list(m.get("files") or {}):
        if (art / name).is_file() and (m["files"][name] or {}).get("sha256", "") is not None:
            data = (art / name).read_bytes()
            m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (art / "manifest.json").write_text(json.dumps(m, indent=2))
    return art


def add_zip_member(path: Path, name: str, data: bytes = b"pwned\n", mode: int | None = None,
                   flag_bits: int = 0) -> None:
    """Append a member to a zip archive (the way an attacker edits a .pt / .pt2), then fix the manifest."""
    buf = io.BytesIO(path.read_bytes())
    with zipfile.ZipFile(buf, "a") as zf:
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        info.flag_bits |= flag_bits
        zf.writestr(info, data)
    path.write_bytes(buf.getvalue())


def test(args) -> None:
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    good = export_tiny(work / "good")
    exe = args.bench

    # Sanity: the good artifact runs (with --trust-code: an unsigned TorchScript file).
    r = run([exe, good, "--trust-code", "--iters", 1, "--warmup", 0])
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
    huge_size = copy_artifact(good, work / "preprocessing_8192", lambda m: m["preprocessing"].update(size=[8192, 8192]))

    # Issue 17: zip members that would leave libtorch's extraction folder (checked before libtorch reads the file).
    zip_cases = []
    for tag, member, kw, phrase in (("dotdot", "../../evil.txt", {}, "escapes its folder ('..')"),
                                    ("absolute", "/tmp/vitedge-evil.txt", {}, "is an absolute path"),
                                    ("backslash", "model\\..\\..\\evil.txt", {}, "holds a NUL or backslash"),
                                    ("symlink", "model/evil_link", {"mode": 0o120777}, "is a symlink"),
                                    ("duplicate", None, {}, "appears twice")):
        for target, fname in (("torchscript", "model.pt"), ("aotinductor", "model.pt")):
            d = copy_artifact(good, work / f"zip_{tag}_{target}", lambda m, t=target: m.update(target=t))
            if member is None:  # the first member again
                with zipfile.ZipFile(d / fname) as zf:
                    first = zf.namelist()[0]
                add_zip_member(d / fname, first, b"x")
            else:
                add_zip_member(d / fname, member, **kw)
            rehash(d)
            zip_cases.append((f"{target} zip member {tag}", [d], 1, phrase))
    not_zip = rehash(copy_artifact(good, work / "pt_not_zip"))
    (not_zip / "model.pt").write_bytes(b"not a zip" * 100)
    rehash(not_zip)

    # Issue 17: manifest.json / model file that is not a regular file, oversized, symlinked out, or "sha256": null.
    fifo_manifest = copy_artifact(good, work / "fifo_manifest")
    (fifo_manifest / "manifest.json").unlink()
    os.mkfifo(fifo_manifest / "manifest.json")
    fifo_model = copy_artifact(good, work / "fifo_model")
    (fifo_model / "model.pt").unlink()
    os.mkfifo(fifo_model / "model.pt")
    big_manifest = copy_artifact(good, work / "big_manifest")
    text_m = (big_manifest / "manifest.json").read_text()
    (big_manifest / "manifest.json").write_text(text_m[:-1] + " " * (17 << 20) + text_m[-1:])
    outside = work / "outside_model.pt"
    shutil.copyfile(good / "model.pt", outside)
    symlink_out = copy_artifact(good, work / "symlink_out")
    (symlink_out / "model.pt").unlink()
    (symlink_out / "model.pt").symlink_to(outside)
    symlink_in = copy_artifact(good, work / "symlink_in")  # a symlink that stays inside the folder is fine
    (symlink_in / "model.pt").rename(symlink_in / "real_model.pt")
    (symlink_in / "model.pt").symlink_to("real_model.pt")
    null_sha = copy_artifact(good, work / "sha256_null")
    (null_sha / "extra.bin").write_bytes(b"abc")
    rehash(null_sha, lambda m: m["files"].update({"extra.bin": {"sha256": None, "bytes": 3}}))

    def forbidden_ort(m):
        m["onnxruntime"] = {"session_config": {"session.optimized_model_filepath": str(work / "ort_wrote_this")}}
    ort_key = copy_artifact(good, work / "ort_session_config", forbidden_ort)

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
         "not a zip archive"),
        ("garbage model.pt (--no-verify)", [garbage, "--no-verify"], 1, "not a zip archive"),
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
        ("no artifact", [], 2, "missing ARTIFACT"),
        ("two artifacts", [good, good], 2, "expected one ARTIFACT"),
    ]
    # A real image whose size does not match the (edited) input shape: the runner's shape check.
    from PIL import Image
    img = work / "gray_80x60.png"
    Image.new("RGB", (80, 60), (120, 130, 140)).save(img)
    cases.append(("preprocessing.size vs input (H, W)", [size_mismatch, "--image", img], 1,
                  "preprocessing.size [64, 64] differs from the input's (H, W) = (32, 32)"))
    cases.append(("preprocessing.size 8192x8192 on a 64x64 model", [huge_size], 1,
                  "preprocessing.size [8192, 8192] differs from the input's (H, W) = (64, 64)"))
    cases += zip_cases
    cases += [
        ("model.pt not a zip", [not_zip], 1, "not a zip archive"),
        ("manifest.json is a FIFO", [fifo_manifest], 1, "is not a regular file"),
        ("model.pt is a FIFO (--no-verify)", [fifo_model, "--no-verify"], 1, "is not a regular file"),
        ("manifest.json over 16 MiB", [big_manifest], 1, "more than the limit of 16777216"),
        ("model.pt symlink out of the folder", [symlink_out], 1, "outside the artifact directory"),
        ("files entry with sha256 null", [null_sha], 1, "without a sha256"),
        ("onnxruntime.session_config key not written by vitedge", [ort_key], 1,
         "onnxruntime.session_config key 'session.optimized_model_filepath' is not one vitedge writes; refusing it"),
    ]
    # ONNX external data (the check runs before ONNX Runtime is loaded).
    try:
        import onnx
        from onnx import TensorProto, external_data_helper, helper, numpy_helper
        import numpy as np
        w = numpy_helper.from_array(np.ones((1, 10), np.float32), "w")
        g = helper.make_graph([helper.make_node("Add", ["pixel_values", "w"], ["logits"])], "g",
                              [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], [w])
        model = helper.make_model(g)
        external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.bin",
                                                            size_threshold=0)
        ext = work / "onnx_external_data"
        ext.mkdir()
        onnx.save(model, str(ext / "model.onnx"))
        (ext / "manifest.json").write_text(json.dumps({
            "schema_version": 1, "artifact": "model.onnx", "target": "onnx", "backend": "onnxruntime",
            "inputs": [{"name": "pixel_values", "shape": [1, 10], "dtype": "float32"}],
            "outputs": [{"name": "logits", "shape": [1, 10], "dtype": "float32"}],
            "files": {"model.onnx": {}, "w.bin": {}}}))
        rehash(ext)
        cases.append(("ONNX external data (listed and hashed)", [ext], 1, "stores a tensor as external data"))
    except ImportError:
        print("skip ONNX external data case: no onnx package")
    cases.append(("fixed batch, image batch 3", [static2, "--image", img, "--batch", 3], 1, "does not match"))

    # --no-verify skips the check: the artifact whose manifest records a wrong digest runs.
    r = run([exe, wrong_sha, "--trust-code", "--iters", 1, "--warmup", 0, "--no-verify"])
    if r.returncode != 0:
        raise Failure(f"--no-verify did not skip the SHA-256 check: exit {r.returncode}: {r.stderr.strip()}")

    cases = [(name, ["--trust-code", *argv], code, phrase) for name, argv, code, phrase in cases]
    cases.append(("unsigned TorchScript without --key / --trust-code", [good], 1,
                  f"refusing to load torchscript artifact {good}: its TorchScript file runs code when it is loaded and it "
                  "is not signed by a trusted key; pass --key PUB.pem to check its signature, or --trust-code if you "
                  "trust its source"))
    cases.append(("unsigned AOTInductor without --key / --trust-code", [aoti], 1,
                  "its AOTInductor package runs code when it is loaded"))
    failures = []
    for name, argv, code, phrase in cases:
        r = run([exe, *argv], timeout=60)
        lines = r.stderr.splitlines()
        problems = error_line_problems(r, code, phrase)
        status = "ok  " if not problems else "FAIL"
        print(f"{status} {name}: exit {r.returncode}: {lines[0] if lines else '(no stderr)'}")
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")
    if failures:
        raise Failure(f"{len(failures)} case(s) failed: " + " | ".join(failures))
    for p in (work / "evil.txt", Path("/tmp/vitedge-evil.txt"), work / "ort_wrote_this"):
        if p.exists():
            raise Failure(f"a refused artifact still wrote {p}")
    r = run([exe, symlink_in, "--trust-code", "--iters", 1, "--warmup", 0])
    if r.returncode != 0:
        raise Failure(f"a symlink inside the artifact folder was refused: {r.stderr.strip()}")
    print(f"all {len(cases)} bad-input cases OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, type=Path, help="path to the vitedge-bench executable")
    ap.add_argument("--workdir", required=True, type=Path, help="scratch directory (recreated)")
    main(lambda: test(ap.parse_args()))
