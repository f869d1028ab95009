"""The C ABI (vitedge/vitedge.h) from Python through ctypes, against the Python runtimes, and its errors.

c_api_ctypes.py --fixtures DIR --lib PATH/libvitedge.so

For each fixture artifact (TorchScript, AOTInductor):
1. vitedge_preprocess_file on the full-size bundled photos (JPEG and PNG) vs vitedge.data.load_batch (PIL):
   max abs difference <= 1/255 in pixel units (the normalised difference times std / scale).
2. vitedge_run on the Python-preprocessed batch of 8 photos vs the target's Python runner: max abs diff
   <= 1e-4, top-1 identical; output name "logits" and shape (8, 10).
3. vitedge_preprocess_rgb on PIL-decoded pixels equals vitedge_preprocess_file on the same PNG.
Then bad input through the ABI: each call returns the expected status with a one-line message, no crash.
"""
from __future__ import annotations

import argparse
import ctypes as C
import json
import shutil
from pathlib import Path

import numpy as np

from _common import Failure, main

OK, INVALID, ERROR = 0, 1, 2


class Options(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("threads", C.c_int), ("device", C.c_char_p), ("warmup", C.c_int),
                ("verify", C.c_int), ("trusted_keys", C.POINTER(C.c_char_p)), ("num_trusted_keys", C.c_size_t),
                ("allow_unsigned_code", C.c_int)]


def bind(path: Path) -> C.CDLL:
    lib = C.CDLL(str(path))
    P, S = C.c_void_p, C.c_size_t
    sig = {
        "vitedge_options_init": (None, [C.POINTER(Options)]),
        "vitedge_last_error": (C.c_char_p, []),
        "vitedge_version": (C.c_char_p, []),
        "vitedge_open": (C.c_int, [C.c_char_p, C.POINTER(Options), C.POINTER(P)]),
        "vitedge_close": (None, [P]),
        "vitedge_runtime": (C.c_char_p, [P]),
        "vitedge_input_shape": (C.c_int, [P, C.c_int64, C.POINTER(C.c_int64), C.POINTER(S)]),
        "vitedge_num_labels": (S, [P]),
        "vitedge_label": (C.c_char_p, [P, S]),
        "vitedge_preprocess_file": (C.c_int, [P, C.c_char_p, C.POINTER(C.c_float), S]),
        "vitedge_preprocess_rgb": (C.c_int, [P, C.POINTER(C.c_uint8), C.c_int, C.c_int, C.POINTER(C.c_float), S]),
        "vitedge_run": (C.c_int, [P, C.POINTER(C.c_float), C.POINTER(C.c_int64), S, C.POINTER(P)]),
        "vitedge_outputs_count": (S, [P]),
        "vitedge_output_name": (C.c_char_p, [P, S]),
        "vitedge_output_rank": (S, [P, S]),
        "vitedge_output_shape": (C.POINTER(C.c_int64), [P, S]),
        "vitedge_output_data": (C.POINTER(C.c_float), [P, S]),
        "vitedge_output_numel": (S, [P, S]),
        "vitedge_outputs_free": (None, [P]),
    }
    for name, (res, argtypes) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, argtypes
    return lib


def options(lib, key: Path | None = None, trust_code: bool = False) -> Options:
    """vitedge_options from vitedge_options_init (checked: it sets struct_size to this layout's size), with one
    trusted key and/or allow_unsigned_code."""
    opt = Options()
    lib.vitedge_options_init(C.byref(opt))
    if opt.struct_size != C.sizeof(Options):
        raise Failure(f"vitedge_options_init set struct_size {opt.struct_size}, the ctypes layout has {C.sizeof(Options)}")
    if key is not None:
        opt._keys = (C.c_char_p * 1)(str(key).encode())  # kept alive with the struct
        opt.trusted_keys = opt._keys
        opt.num_trusted_keys = 1
    opt.allow_unsigned_code = int(trust_code)
    return opt


class Runner:
    def __init__(self, lib, art: Path, threads: int = 1, key: Path | None = None):
        self.lib = lib
        opt = options(lib, key=key if key is not None else Path(art).parent / "keys" / "pub.pem")
        opt.threads = threads
        self.h = C.c_void_p()
        st = lib.vitedge_open(str(art).encode(), C.byref(opt), C.byref(self.h))
        if st != OK:
            raise Failure(f"vitedge_open({art}) = {st}: {lib.vitedge_last_error().decode()}")

    def close(self):
        self.lib.vitedge_close(self.h)

    def input_shape(self, batch: int) -> list[int]:
        shape, rank = (C.c_int64 * 8)(), C.c_size_t(8)
        st = self.lib.vitedge_input_shape(self.h, batch, shape, C.byref(rank))
        if st != OK:
            raise Failure(f"vitedge_input_shape = {st}: {self.lib.vitedge_last_error().decode()}")
        return list(shape[: rank.value])

    def preprocess_file(self, path: Path) -> np.ndarray:
        _, c, h, w = self.input_shape(1)
        out = np.empty((c, h, w), dtype=np.float32)
        st = self.lib.vitedge_preprocess_file(self.h, str(path).encode(), out.ctypes.data_as(C.POINTER(C.c_float)), out.size)
        if st != OK:
            raise Failure(f"vitedge_preprocess_file({path}) = {st}: {self.lib.vitedge_last_error().decode()}")
        return out

    def preprocess_rgb(self, rgb: np.ndarray) -> np.ndarray:
        _, c, h, w = self.input_shape(1)
        out = np.empty((c, h, w), dtype=np.float32)
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        st = self.lib.vitedge_preprocess_rgb(self.h, rgb.ctypes.data_as(C.POINTER(C.c_uint8)), rgb.shape[1],
                                             rgb.shape[0], out.ctypes.data_as(C.POINTER(C.c_float)), out.size)
        if st != OK:
            raise Failure(f"vitedge_preprocess_rgb = {st}: {self.lib.vitedge_last_error().decode()}")
        return out

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        shape = (C.c_int64 * x.ndim)(*x.shape)
        o = C.c_void_p()
        st = self.lib.vitedge_run(self.h, x.ctypes.data_as(C.POINTER(C.c_float)), shape, x.ndim, C.byref(o))
        if st != OK:
            raise Failure(f"vitedge_run = {st}: {self.lib.vitedge_last_error().decode()}")
        try:
            out = {}
            for i in range(self.lib.vitedge_outputs_count(o)):
                rank = self.lib.vitedge_output_rank(o, i)
                shp = [self.lib.vitedge_output_shape(o, i)[k] for k in range(rank)]
                n = self.lib.vitedge_output_numel(o, i)
                data = np.ctypeslib.as_array(self.lib.vitedge_output_data(o, i), shape=(n,)).copy()
                out[self.lib.vitedge_output_name(o, i).decode()] = data.reshape(shp)
            return out
        finally:
            self.lib.vitedge_outputs_free(o)


def check_target(lib, fx: Path, target: str) -> None:
    from PIL import Image

    from vitedge.data import load_batch
    from vitedge.manifest import read_manifest
    from vitedge.targets import target_module

    art = fx / target
    manifest = read_manifest(art)
    pre = manifest.manifest["preprocessing"]
    r = Runner(lib, art)
    try:
        expect_rt = {"torchscript": "libtorch", "aotinductor": "aotinductor"}[target]
        if lib.vitedge_runtime(r.h).decode() != expect_rt:
            raise Failure(f"{target}: vitedge_runtime = {lib.vitedge_runtime(r.h)!r}")
        if lib.vitedge_num_labels(r.h) != len(manifest.manifest["labels"]) or \
                lib.vitedge_label(r.h, 3).decode() != manifest.manifest["labels"][3] or lib.vitedge_label(r.h, 99) is not None:
            raise Failure(f"{target}: labels through the C ABI differ from the manifest")
        photos = sorted((fx / "photos").iterdir())
        py_x = load_batch(photos, pre).numpy()
        c_x = np.stack([r.preprocess_file(p) for p in photos])
        std = np.asarray(pre["std"], dtype=np.float32)[None, :, None, None]
        pix = float((np.abs(c_x - py_x) * std / pre["scale"]).max())
        print(f"{target}: C preprocessing (stb decode + resize) vs Python (PIL) on {len(photos)} photos: "
              f"max abs diff {pix:.3f} pixel levels (of 255)")
        if not pix <= 1.0 + 1e-3:
            raise Failure(f"{target}: preprocessing differs by {pix:.3f} pixel levels > 1 (1/255)")
        png = next(p for p in photos if p.suffix == ".png")
        rgb = np.asarray(Image.open(png).convert("RGB"))
        if not np.array_equal(r.preprocess_rgb(rgb), r.preprocess_file(png)):
            raise Failure(f"{target}: vitedge_preprocess_rgb differs from vitedge_preprocess_file on {png.name}")

        ref = target_module(target).load(manifest, 1).run(py_x)[0]
        out = r.run(py_x)
        if list(out) != ["logits"] or out["logits"].shape != ref.shape:
            raise Failure(f"{target}: outputs {[(k, v.shape) for k, v in out.items()]}, expected logits {ref.shape}")
        d = float(np.abs(out["logits"] - ref).max())
        print(f"{target}: vitedge_run on {len(photos)} photos (batch {len(photos)}) vs Python runner: max abs diff {d:.3g}")
        if not d <= 1e-4 or not (out["logits"].argmax(1) == ref.argmax(1)).all():
            raise Failure(f"{target}: C ABI output differs from Python: max abs diff {d:.3g}")
        if r.input_shape(3) != [3, 3, 64, 64]:
            raise Failure(f"{target}: vitedge_input_shape(batch 3) = {r.input_shape(3)}")
    finally:
        r.close()


def expect(lib, name: str, status: int, want: int, phrase: str, failures: list) -> None:
    msg = lib.vitedge_last_error().decode()
    ok = status == want and phrase in msg and "\n" not in msg
    print(f"{'ok  ' if ok else 'FAIL'} {name}: status {status}: {msg}")
    if not ok:
        failures.append(f"{name}: status {status} (want {want}), message {msg!r} (want {phrase!r})")


def bad_inputs(lib, fx: Path, work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    failures: list[str] = []
    h = C.c_void_p()

    trusting = options(lib, trust_code=True)  # these cases are not about signatures

    def open_(path, opt=trusting) -> int:
        return lib.vitedge_open(None if path is None else str(path).encode(), None if opt is None else C.byref(opt),
                                C.byref(h))

    def edited(name, edit):
        d = work / name
        shutil.copytree(fx / "torchscript", d)
        m = json.loads((d / "manifest.json").read_text())
        edit(m, d)
        (d / "manifest.json").write_text(json.dumps(m))
        return d

    expect(lib, "missing artifact", open_(work / "nope"), ERROR, "does not exist", failures)
    expect(lib, "NULL artifact", open_(None), INVALID, "artifact is NULL", failures)
    expect(lib, "NULL out pointer", lib.vitedge_open(b"x", None, None), INVALID, "is NULL", failures)
    corrupt = edited("corrupt_manifest", lambda m, d: None)
    (corrupt / "manifest.json").write_text('{"schema_version": 1, "artifact": ')
    expect(lib, "corrupt manifest", open_(corrupt), ERROR, "not valid JSON", failures)
    trunc = edited("truncated_model", lambda m, d: None)
    (trunc / "model.pt").write_bytes((trunc / "model.pt").read_bytes()[:1000])
    expect(lib, "truncated model", open_(trunc), ERROR, "model.pt", failures)
    absent = edited("absent_backend", lambda m, d: m.update(backend="tensorrt", target="trt"))
    expect(lib, "manifest names an absent backend", open_(absent), ERROR,
           "this runner was built without the tensorrt backend; rebuild with -DVITEDGE_WITH_TENSORRT=ON", failures)
    expect(lib, "unsigned TorchScript, NULL options", open_(fx / "torchscript", None), ERROR,
           "runs code when it is loaded and it is not signed by a trusted key", failures)
    wrong_size = options(lib)
    wrong_size.struct_size = 8
    expect(lib, "options.struct_size unknown", open_(fx / "torchscript", wrong_size), INVALID, "struct_size is 8", failures)
    wrong_size.struct_size = 0
    expect(lib, "options.struct_size 0", open_(fx / "torchscript", wrong_size), INVALID, "not initialized", failures)
    wrong_size.struct_size = C.sizeof(Options) + 16
    expect(lib, "options of a newer vitedge.h", open_(fx / "torchscript", wrong_size), INVALID, "newer vitedge.h",
           failures)
    tampered = edited("tampered_signed", lambda m, d: m.update(labels=["x"] * 10))  # manifest no longer signed
    expect(lib, "signed artifact, manifest edited", open_(tampered, options(lib, key=fx / "keys" / "pub.pem")), ERROR,
           "does not match its signature", failures)
    if h.value is not None:
        failures.append("vitedge_open left a handle after failing")

    r = Runner(lib, fx / "torchscript")
    o = C.c_void_p()
    x = np.zeros((1, 3, 32, 32), dtype=np.float32)
    st = lib.vitedge_run(r.h, x.ctypes.data_as(C.POINTER(C.c_float)), (C.c_int64 * 4)(1, 3, 32, 32), 4, C.byref(o))
    expect(lib, "wrong input shape", st, ERROR, "input shape (1, 3, 32, 32) does not match", failures)
    if o.value is not None:
        failures.append("vitedge_run left an outputs handle after failing")
    st = lib.vitedge_run(r.h, x.ctypes.data_as(C.POINTER(C.c_float)), (C.c_int64 * 4)(1, 3, -5, 32), 4, C.byref(o))
    expect(lib, "negative dimension", st, ERROR, "every dimension must be", failures)
    st = lib.vitedge_run(None, x.ctypes.data_as(C.POINTER(C.c_float)), (C.c_int64 * 4)(1, 3, 32, 32), 4, C.byref(o))
    expect(lib, "NULL runner", st, INVALID, "NULL argument", failures)
    buf = np.empty(3 * 64 * 64, dtype=np.float32)
    fp = buf.ctypes.data_as(C.POINTER(C.c_float))
    expect(lib, "text file as image", lib.vitedge_preprocess_file(r.h, str(fx / "notes.txt").encode(), fp, buf.size),
           ERROR, "cannot decode image", failures)
    expect(lib, "buffer too small", lib.vitedge_preprocess_file(r.h, str(next((fx / "photos").iterdir())).encode(), fp, 10),
           INVALID, "output buffer holds 10 floats", failures)
    rgb = np.zeros(12, dtype=np.uint8)
    expect(lib, "zero-size RGB image", lib.vitedge_preprocess_rgb(r.h, rgb.ctypes.data_as(C.POINTER(C.c_uint8)), 0, 4,
                                                                  fp, buf.size), ERROR, "must be positive", failures)
    nan = np.full((1, 3, 64, 64), np.nan, dtype=np.float32)
    st = lib.vitedge_run(r.h, nan.ctypes.data_as(C.POINTER(C.c_float)), (C.c_int64 * 4)(1, 3, 64, 64), 4, C.byref(o))
    expect(lib, "NaN input", st, ERROR, "non-finite", failures)
    shape, rank = (C.c_int64 * 2)(), C.c_size_t(2)
    expect(lib, "input_shape capacity 2", lib.vitedge_input_shape(r.h, 1, shape, C.byref(rank)), INVALID, "rank 4", failures)
    r.close()
    lib.vitedge_close(None)
    lib.vitedge_outputs_free(None)
    if lib.vitedge_outputs_count(None) != 0 or lib.vitedge_output_data(None, 0) or lib.vitedge_runtime(None) is not None:
        failures.append("NULL handles are not answered with 0 / NULL")
    if failures:
        raise Failure(f"{len(failures)} C ABI bad-input case(s) failed: " + " | ".join(failures))
    print("C ABI bad inputs OK")


def test(args) -> None:
    import PIL.Image
    import torch  # noqa: F401 - torch's own libraries first, then libvitedge.so (linked to the same libtorch)

    import vitedge
    import vitedge.data  # noqa: F401
    PIL.Image.init()
    lib = bind(args.lib)
    if lib.vitedge_version().decode() != vitedge.__version__:
        raise Failure(f"vitedge_version {lib.vitedge_version()!r} != Python's {vitedge.__version__}")
    fx = Path(args.fixtures)
    for target in ("torchscript", "aotinductor"):
        check_target(lib, fx, target)
    bad_inputs(lib, fx, fx.parent / "test-c-api")
    print("C ABI through ctypes OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", required=True, type=Path)
    ap.add_argument("--lib", required=True, type=Path, help="path to libvitedge.so")
    main(lambda: test(ap.parse_args()))
