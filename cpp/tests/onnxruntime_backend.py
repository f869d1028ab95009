"""The C++ runner's ONNX Runtime backend (dlopen of the onnxruntime wheel's library) against Python ONNX Runtime.

onnxruntime_backend.py --bench PATH/vitedge-bench --workdir DIR

1. Exports a tiny seeded vitedge ViT (64x64, 10 classes) to ONNX with vitedge.export.export: fp32, and int8
   static (QDQ, calibrated on 32 scikit-learn digits as the CLI's default).
2. Saves skimage's astronaut photo resized with PIL to exactly 64x64 as PNG (the C++ side then only normalises).
3. Python reference: the PNG preprocessed as CONVENTIONS.md says, run by vitedge.targets.onnx.load (Python ONNX
   Runtime, same session config) on the same artifact.
4. vitedge-bench --image PNG --dump-output at batch 1 and 3: runtime "onnxruntime-cpp"; fp32 logits within 1e-4
   of Python's, int8 logits with the same top-1 and within INT8_TOL.
5. The artifact's quantization.session_config and onnxruntime.session_config are allow-listed: only the keys vitedge
   writes (session.intra_op.allow_spinning, session.inter_op.allow_spinning, session.disable_quant_qdq, each "0" or
   "1") load; any other key (session.optimized_model_filepath, which made ORT write a file, ...) or value is
   refused with one line naming the key, and no file is written; an unknown onnxruntime.graph_optimization_level
   is one clear error line.
5b. An ONNX file with external data (even listed in the manifest with its sha256) is refused: the runner hands ORT
   the verified .onnx bytes only. A signed ONNX artifact (model.sig) loads with --key and is refused with a wrong
   key or when a file changed (trusted keys apply to every target, data formats included).
6. Bad input: corrupt / truncated model.onnx, VITEDGE_ONNXRUNTIME_LIB naming a missing file or a library that
   is not ONNX Runtime, and a manifest whose input name is not the graph's: exit 1, one clear error line,
   nothing on stdout, no crash.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _common import Failure, PREPROCESSING, check_bench_json, copy_artifact, error_line_problems, load_json, main, read_dump, run, tiny_vit

FP32_TOL = 1e-4
INT8_TOL = 1e-3  # same library and graph on both sides; only float reduction order (threads) may differ
ENV = "VITEDGE_ONNXRUNTIME_LIB"


def export_onnx(out_dir: Path, precision: str) -> Path:
    from vitedge.export import export
    from vitedge.quantize import calibration_data
    model = tiny_vit()
    example = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    quant = None
    if precision == "int8":
        x, info = calibration_data("digits", dict(PREPROCESSING), 32)
        quant = {"mode": "static", "method": "minmax", "calibration": x.numpy(), "calibration_info": info}
    art = export(model, example, "onnx", out_dir, force=True, preprocessing=dict(PREPROCESSING), precision=precision,
                 quantization=quant)
    m = art.manifest
    if (m["backend"], m["target"], m["artifact"]) != ("onnxruntime", "onnx", "model.onnx"):
        raise Failure(f"unexpected manifest from vitedge.export.export: {m['backend']}/{m['target']}/{m['artifact']}")
    return Path(art.path)


def python_reference(art: Path, png: Path, batch: int) -> np.ndarray:
    from vitedge.manifest import read_manifest
    from vitedge.targets import onnx as onnx_target
    pre = load_json(art / "manifest.json")["preprocessing"]
    x = np.asarray(Image.open(png).convert("RGB"), dtype=np.uint8).astype(np.float32)
    x = (x * np.float32(pre["scale"]) - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    x = np.ascontiguousarray(np.repeat(x.transpose(2, 0, 1)[None], batch, axis=0))
    return onnx_target.load(read_manifest(art)).run(x)[0]


def bench(exe: Path, art: Path, png: Path, batch: int, work: Path, tag: str) -> np.ndarray:
    out_json, out_bin = work / f"{tag}.json", work / f"{tag}.bin"
    r = run([exe, art, "--image", png, "--batch", batch, "--iters", 3, "--warmup", 1, "--json", out_json,
             "--dump-output", out_bin])
    if r.returncode != 0:
        raise Failure(f"vitedge-bench ({tag}) exited {r.returncode}: {r.stderr.strip()}")
    check_bench_json(load_json(out_json), tag, runtime="onnxruntime-cpp")
    return read_dump(out_bin)


def compare(tag: str, ref: np.ndarray, got: np.ndarray, precision: str) -> float:
    if got.shape != ref.shape:
        raise Failure(f"{tag}: C++ output shape {got.shape} != Python {ref.shape}")
    diff = float(np.abs(got - ref).max())
    if precision == "fp32" and diff > FP32_TOL:
        raise Failure(f"{tag}: max abs diff {diff:.3g} > {FP32_TOL} vs Python ONNX Runtime")
    if precision == "int8":
        if not np.array_equal(got.argmax(1), ref.argmax(1)):
            raise Failure(f"{tag}: top-1 {got.argmax(1)} != Python's {ref.argmax(1)}")
        if diff > INT8_TOL:
            raise Failure(f"{tag}: max abs diff {diff:.3g} > {INT8_TOL} vs Python ONNX Runtime")
    print(f"ok   {tag}: max abs diff vs Python ONNX Runtime {diff:.3g} (top-1 {int(ref[0].argmax())})")
    return diff


def expect_error(name: str, argv: list, phrase: str, env: dict | None = None) -> None:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120,
                       env={**os.environ, **(env or {})})
    problems = error_line_problems(r, 1, phrase)
    if problems:
        raise Failure(f"{name}: {'; '.join(problems)}")
    print(f"ok   {name}: {r.stderr.strip()}")


def test(args) -> None:
    import skimage.data
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    exe = args.bench
    png = work / "astronaut_64.png"
    Image.fromarray(skimage.data.astronaut()).convert("RGB").resize((64, 64), Image.BILINEAR).save(png)

    arts = {p: export_onnx(work / f"tiny_vit_onnx_{p}", p) for p in ("fp32", "int8")}
    for precision, art in arts.items():
        for batch in (1, 3):
            tag = f"{precision}_batch{batch}"
            got = bench(exe, art, png, batch, work, tag)
            compare(tag, python_reference(art, png, batch), got, precision)
    fp32 = arts["fp32"]

    # An explicit VITEDGE_ONNXRUNTIME_LIB naming the wheel's library is used as given.
    import onnxruntime
    libs = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*"))
    if not libs:
        raise Failure("the onnxruntime wheel ships no libonnxruntime.so*")
    r = subprocess.run([str(exe), str(fp32), "--iters", "1", "--warmup", "0"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, ENV: str(libs[-1])})
    if r.returncode != 0:
        raise Failure(f"{ENV}={libs[-1]}: exit {r.returncode}: {r.stderr.strip()}")
    print(f"ok   {ENV} naming the wheel's library")

    # session_config from the manifest: allow-listed (the keys vitedge writes, values "0"/"1").
    def allowed(m):
        m.setdefault("onnxruntime", {})["session_config"] = {"session.intra_op.allow_spinning": "0",
                                                             "session.inter_op.allow_spinning": "1"}
        m["quantization"] = {"session_config": {"session.disable_quant_qdq": "1"}}
    r = run([exe, copy_artifact(fp32, work / "allowed_config", allowed), "--iters", 1, "--warmup", 0])
    if r.returncode != 0:
        raise Failure(f"allow-listed session config refused: {r.stderr.strip()}")
    print("ok   allow-listed session config keys load")
    written = work / "written_by_ort.onnx"
    for where, key, value in (("onnxruntime", "session.optimized_model_filepath", str(written)),
                              ("onnxruntime", "session.collect_node_memory_stats_to_file", str(written)),
                              ("onnxruntime", "session.load_model_format", "ORT"),
                              ("quantization", "session.optimized_model_filepath", str(written))):
        def edit(m, where=where, key=key, value=value):
            m[where] = {**(m.get(where) or {}), "session_config": {key: value}}
        cfg = copy_artifact(fp32, work / f"forbidden_{where}_{key}", edit)
        expect_error(f"{where}.session_config {key}", [exe, cfg, "--iters", 1, "--warmup", 0],
                     f"{where}.session_config key '{key}' is not one vitedge writes; refusing it")
        if written.exists():
            raise Failure(f"{where}.session_config {key}: ONNX Runtime wrote {written}")

    def bad_value(m):
        m.setdefault("onnxruntime", {})["session_config"] = {"session.intra_op.allow_spinning": "2"}
    expect_error("session_config value not 0/1", [exe, copy_artifact(fp32, work / "bad_value", bad_value),
                                                  "--iters", 1, "--warmup", 0], "must be \"0\" or \"1\"")

    # External data: refused even when listed with its sha256 (ORT would read it by path, unverified).
    import hashlib

    import onnx
    from onnx import external_data_helper
    ext = copy_artifact(fp32, work / "external_data")
    model = onnx.load(str(ext / "model.onnx"))
    external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin",
                                                        size_threshold=0)
    onnx.save(model, str(ext / "model.onnx"))
    m = load_json(ext / "manifest.json")
    for name in ("model.onnx", "weights.bin"):
        data = (ext / name).read_bytes()
        m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (ext / "manifest.json").write_text(json.dumps(m, indent=2))
    expect_error("ONNX external data (listed, hashed)", [exe, ext, "--iters", 1, "--warmup", 0],
                 "stores a tensor as external data")

    # Trusted keys apply to data formats too.
    from _common import make_keypair, sign_artifact
    priv, pub = make_keypair(work / "keys")
    _, other = make_keypair(work / "other_keys")
    signed = copy_artifact(fp32, work / "signed")
    sign_artifact(signed, priv)
    r = run([exe, signed, "--key", pub, "--iters", 1, "--warmup", 0])
    if r.returncode != 0:
        raise Failure(f"signed ONNX artifact with its key: exit {r.returncode}: {r.stderr.strip()}")
    print("ok   signed ONNX artifact loads with --key")
    expect_error("signed ONNX, wrong key", [exe, signed, "--key", other, "--iters", 1, "--warmup", 0],
                 "does not verify with any trusted key")
    expect_error("unsigned ONNX with --key", [exe, fp32, "--key", pub, "--iters", 1, "--warmup", 0],
                 "has no signature (model.sig)")
    changed = copy_artifact(signed, work / "signed_changed", lambda m: m.update(labels=None))
    expect_error("signed ONNX, manifest edited", [exe, changed, "--key", pub, "--iters", 1, "--warmup", 0],
                 "manifest.json of")

    def bad_level(m):
        m.setdefault("onnxruntime", {})["graph_optimization_level"] = "FASTEST"
    expect_error("unknown graph_optimization_level", [exe, copy_artifact(fp32, work / "bad_level", bad_level),
                                                      "--iters", 1, "--warmup", 0],
                 "onnxruntime.graph_optimization_level must be one of")

    # Bad inputs.
    # (--no-verify: past the runner's SHA-256 check, so that ONNX Runtime itself meets the corrupt file)
    garbage = copy_artifact(fp32, work / "garbage_model")
    (garbage / "model.onnx").write_bytes(b"this is not an ONNX model\n" * 10)
    expect_error("garbage model.onnx", [exe, garbage, "--no-verify", "--iters", 1, "--warmup", 0],
                 "is not a valid protobuf")
    trunc = copy_artifact(fp32, work / "truncated_model")
    data = (trunc / "model.onnx").read_bytes()
    (trunc / "model.onnx").write_bytes(data[: len(data) // 2])
    expect_error("truncated model.onnx", [exe, trunc, "--no-verify", "--iters", 1, "--warmup", 0],
                 "truncated_model/model.onnx")  # refused by the protobuf walk or by ONNX Runtime

    def rename_input(m):
        m["inputs"][0]["name"] = "not_the_graph_input"
    renamed = copy_artifact(fp32, work / "renamed_input", rename_input)
    expect_error("manifest input name", [exe, renamed, "--iters", 1, "--warmup", 0],
                 "but the manifest records 'not_the_graph_input'")
    expect_error("library not found", [exe, fp32, "--iters", 1, "--warmup", 0],
                 f"named by {ENV}: {work / 'nope' / 'libonnxruntime.so.1'}",
                 env={ENV: str(work / "nope" / "libonnxruntime.so.1")})
    libc = "libc.so.6"  # a real shared library that is not ONNX Runtime
    expect_error("not an ONNX Runtime library", [exe, fp32, "--iters", 1, "--warmup", 0],
                 "exports no OrtGetApiBase", env={ENV: libc})
    print("all ONNX Runtime backend checks OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, type=Path, help="path to the vitedge-bench executable")
    ap.add_argument("--workdir", required=True, type=Path, help="scratch directory (recreated)")
    main(lambda: test(ap.parse_args()))
