"""The C++ runner's OpenVINO backend against Python OpenVINO (vitedge.targets.openvino), and hostile artifacts.

openvino_backend.py --bench PATH/vitedge-bench --classify PATH/classify --lib PATH/libvitedge.so --workdir DIR

1. Exports a tiny seeded vitedge ViT (64x64, 10 classes) to OpenVINO IR with vitedge.export.export: fp32, int8
   (NNCF, calibrated on 32 scikit-learn digits) and, where OpenVINO's CPU plugin reports BF16, bf16.
2. vitedge-bench --image (a bundled photo resized with PIL to exactly 64x64 as PNG) --dump-output at batch 1 and 3
   vs the Python runner (vitedge.targets.openvino.load, same compile config) on the same preprocessed pixels: runtime
   "openvino-cpp"; fp32 within FP32_TOL, int8 / bf16 with the same top-1 and within LOWP_TOL. --bare works.
3. classify on the full-size bundled photos (JPEG/PNG decoding + resize in C++) vs Python's preprocessing + runner:
   identical top-1 for every photo and every precision.
4. The C ABI through ctypes: vitedge_run on the Python-preprocessed batch of photos equals the Python runner; four
   Python threads calling vitedge_run on one runner at once (batches 1, 2, 3, 5: more batch sizes than the static
   compile cache holds) get the single-threaded results (the infer-request pool).
5. --threads 1 and 2 give the same logits (INFERENCE_NUM_THREADS only changes the split of the work).
6. Hostile artifacts, each refused by BOTH the C++ runner (vitedge-bench: exit 1, one error line, nothing on stdout)
   and the Python loader (vitedge.runtime.open_artifact: ArtifactError/one line) with a clear reason: an ONNX model
   renamed model.xml, an XML with a DOCTYPE/ENTITY, an XML whose root is not <net>, a changed model.bin, model.bin
   listed without a sha256, an oversized model.xml (65 MiB), unknown openvino.config keys and values, weights named outside the folder ("..",
   absolute) or not listed in the manifest, and a signed artifact whose weights were changed (with --key).
   Corrupt weights under --no-verify reach OpenVINO and give one error line, no crash.
"""
from __future__ import annotations

import argparse
import ctypes as C
import hashlib
import json
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _common import (Failure, PREPROCESSING, check_bench_json, copy_artifact, error_line_problems, load_json, main,
                     parse_classify, read_dump, run, tiny_vit)

FP32_TOL = 1e-4   # same library, same IR, same compile config: only reduction order may differ
LOWP_TOL = 2e-2   # int8 / bf16: same kernels on both sides; a last-bit difference may move a quantized value
RT = "openvino-cpp"


def export_ov(out_dir: Path, precision: str) -> Path:
    from vitedge.export import export
    from vitedge.quantize import calibration_data
    model = tiny_vit()
    example = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    quant = None
    if precision == "int8":
        x, info = calibration_data("digits", dict(PREPROCESSING), 32)
        quant = {"mode": "static", "calibration": x.numpy(), "calibration_info": info}
    art = export(model, example, "openvino", out_dir, force=True, preprocessing=dict(PREPROCESSING),
                 precision=precision, quantization=quant)
    m = art.manifest
    if (m["backend"], m["target"], m["artifact"]) != ("openvino", "openvino", "model.xml"):
        raise Failure(f"unexpected manifest from vitedge.export.export: {m['backend']}/{m['target']}/{m['artifact']}")
    return Path(art.path)


def py_runner(art: Path, threads: int = 2):
    from vitedge.manifest import read_manifest
    from vitedge.targets import openvino as tov
    return tov.load(read_manifest(art), threads)


def bench(exe: Path, art: Path, png: Path, batch: int, work: Path, tag: str, threads: int = 2) -> np.ndarray:
    out_json, out_bin = work / f"{tag}.json", work / f"{tag}.bin"
    r = run([exe, art, "--image", png, "--batch", batch, "--threads", threads, "--iters", 3, "--warmup", 1,
             "--json", out_json, "--dump-output", out_bin])
    if r.returncode != 0:
        raise Failure(f"vitedge-bench ({tag}) exited {r.returncode}: {r.stderr.strip()}")
    check_bench_json(load_json(out_json), tag, runtime=RT)
    return read_dump(out_bin)


def compare(tag: str, ref: np.ndarray, got: np.ndarray, precision: str) -> float:
    if got.shape != ref.shape:
        raise Failure(f"{tag}: C++ output shape {got.shape} != Python {ref.shape}")
    diff = float(np.abs(got - ref).max())
    tol = FP32_TOL if precision == "fp32" else LOWP_TOL
    if not np.array_equal(got.argmax(1), ref.argmax(1)):
        raise Failure(f"{tag}: top-1 {got.argmax(1)} != Python's {ref.argmax(1)}")
    if not diff <= tol:
        raise Failure(f"{tag}: max abs diff {diff:.3g} > {tol} vs Python OpenVINO")
    print(f"ok   {tag}: max abs diff vs Python OpenVINO {diff:.3g}, top-1 identical")
    return diff


def check_classify(classify: Path, art: Path, photos: list[Path], tag: str) -> None:
    from vitedge.data import load_batch
    pre = load_json(art / "manifest.json")["preprocessing"]
    ref = py_runner(art).run(load_batch(photos, pre).numpy())[0]
    r = run([classify, art, *photos])
    if r.returncode != 0:
        raise Failure(f"classify {tag} exited {r.returncode}: {r.stderr.strip()}")
    got = parse_classify(r.stdout)
    for i, p in enumerate(photos):
        top = got.get(str(p))
        if not top or top[0][0] != int(ref[i].argmax()):
            raise Failure(f"classify {tag} {p.name}: top-1 {top[0][0] if top else None} vs Python "
                          f"{int(ref[i].argmax())}")
    print(f"ok   classify {tag}: {len(photos)} full-size photos, top-1 identical to Python")


def check_c_abi(lib_path: Path, art: Path, photos: list[Path]) -> None:
    from c_api_ctypes import OK, Options, bind
    from vitedge.data import load_batch
    lib = bind(lib_path)
    pre = load_json(art / "manifest.json")["preprocessing"]
    x = np.ascontiguousarray(load_batch(photos, pre).numpy(), dtype=np.float32)
    py = py_runner(art)
    opts = Options()
    lib.vitedge_options_init(C.byref(opts))
    opts.threads = 1
    runner = C.c_void_p()
    if lib.vitedge_open(str(art).encode(), C.byref(opts), C.byref(runner)) != OK:
        raise Failure(f"vitedge_open: {lib.vitedge_last_error().decode()}")
    if lib.vitedge_runtime(runner).decode() != "openvino":
        raise Failure(f"vitedge_runtime says {lib.vitedge_runtime(runner)!r}")

    def c_run(batch: np.ndarray) -> np.ndarray:
        shape = (C.c_int64 * 4)(*batch.shape)
        outs = C.c_void_p()
        st = lib.vitedge_run(runner, batch.ctypes.data_as(C.POINTER(C.c_float)), shape, 4, C.byref(outs))
        if st != OK:
            raise Failure(f"vitedge_run: {lib.vitedge_last_error().decode()}")
        n = lib.vitedge_output_numel(outs, 0)
        rank = lib.vitedge_output_rank(outs, 0)
        shp = [lib.vitedge_output_shape(outs, 0)[i] for i in range(rank)]
        data = np.ctypeslib.as_array(lib.vitedge_output_data(outs, 0), shape=(n,)).copy().reshape(shp)
        lib.vitedge_outputs_free(outs)
        return data

    try:
        got = c_run(x)
        ref = py.run(x)[0]
        compare(f"C ABI fp32 batch {len(photos)}", ref, got, "fp32")
        batches = {b: np.ascontiguousarray(np.concatenate([x] * 2)[:b]) for b in (1, 2, 3, 5)}
        single = {b: c_run(v) for b, v in batches.items()}
        results, errors = {}, []

        def worker(b: int) -> None:
            try:
                for _ in range(3):
                    results.setdefault(b, []).append(c_run(batches[b]))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"batch {b}: {e}")
        threads = [threading.Thread(target=worker, args=(b,)) for b in batches]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise Failure(f"concurrent vitedge_run: {errors}")
        for b, outs in results.items():
            for o in outs:
                if o.shape != single[b].shape or not float(np.abs(o - single[b]).max()) <= FP32_TOL:
                    raise Failure(f"concurrent vitedge_run batch {b}: result differs from the single-threaded one")
        print("ok   C ABI: 4 threads x 3 runs on one runner (batches 1, 2, 3, 5) equal the single-threaded results")
    finally:
        lib.vitedge_close(runner)


def rehash(art: Path, *names: str) -> None:
    """Record the current SHA-256 and size of NAMES in ART's manifest (what an attacker editing the folder does)."""
    m = load_json(art / "manifest.json")
    for name in names:
        data = (art / name).read_bytes()
        m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (art / "manifest.json").write_text(json.dumps(m, indent=2))


def expect_refused(name: str, exe: Path, art: Path, cpp_phrase: str, py_phrase: str, extra=(), py_kwargs=None) -> None:
    """Both the C++ runner and the Python loader refuse ART with one clear line."""
    r = run([exe, art, "--iters", 1, "--warmup", 0, *extra])
    problems = error_line_problems(r, 1, cpp_phrase)
    if problems:
        raise Failure(f"{name} (C++): {'; '.join(problems)}")
    from vitedge.errors import VitedgeError
    from vitedge.runtime import open_artifact
    try:
        open_artifact(art, threads=1, **(py_kwargs or {}))
    except VitedgeError as e:
        msg = str(e)
        if "\n" in msg.strip() or py_phrase not in msg:
            raise Failure(f"{name} (Python): message lacks {py_phrase!r} or is not one line: {msg[:300]!r}")
    else:
        raise Failure(f"{name} (Python): the loader accepted it")
    print(f"ok   {name}: C++ {r.stderr.strip()[:150]!r} | Python {msg[:150]!r}")


def hostile(exe: Path, fp32: Path, work: Path) -> None:
    import onnx  # noqa: F401 - the ONNX model renamed model.xml is a real one
    from vitedge.export import export
    h = work / "hostile"
    h.mkdir()

    # An ONNX model (any frontend's format would be read by Core.read_model) renamed model.xml, hashes updated.
    onnx_art = Path(export(tiny_vit(), torch.zeros(1, 3, 64, 64), "onnx", h / "onnx_src",
                           preprocessing=dict(PREPROCESSING)).path)
    a = copy_artifact(fp32, h / "onnx_as_xml")
    shutil.copyfile(onnx_art / "model.onnx", a / "model.xml")
    rehash(a, "model.xml")
    expect_refused("ONNX renamed model.xml", exe, a, "is not an OpenVINO IR graph", "is not an OpenVINO IR graph")

    xml = (fp32 / "model.xml").read_bytes()
    doctype = xml.replace(b"<net ", b'<!DOCTYPE net [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n<net ', 1)
    for tag, data, phrase in (("DOCTYPE/ENTITY", doctype, "DOCTYPE or ENTITY"),
                              ("ENTITY only", xml + b"<!-- <!ENTITY y 'z'> -->", "DOCTYPE or ENTITY"),
                              ("root not <net>",
                               xml.replace(b"<net ", b"<network ", 1).replace(b"</net>", b"</network>"),
                               "root element is not <net>"),
                              ("NUL byte", xml + b"\0", "NUL byte")):
        a = copy_artifact(fp32, h / tag.replace("/", "_").replace(" ", "_").replace("<", "").replace(">", ""))
        (a / "model.xml").write_bytes(data)
        rehash(a, "model.xml")
        expect_refused(f"model.xml {tag}", exe, a, phrase, phrase)

    a = copy_artifact(fp32, h / "bin_changed")
    w = bytearray((a / "model.bin").read_bytes())
    w[len(w) // 2] ^= 0xFF
    (a / "model.bin").write_bytes(bytes(w))
    expect_refused("model.bin changed (manifest hash kept)", exe, a, "model.bin does not match its manifest",
                   "model.bin does not match")

    def no_sha(m):
        m["files"]["model.bin"]["sha256"] = None
    expect_refused("model.bin listed without a sha256", exe, copy_artifact(fp32, h / "bin_no_sha", no_sha),
                   "records no sha256 for 'model.bin'", "file entry 'model.bin' is not")

    a = copy_artifact(fp32, h / "oversized_xml")
    with open(a / "model.xml", "ab") as f:
        f.write(b" " * (65 << 20))
    rehash(a, "model.xml")
    expect_refused("model.xml of 65 MiB", exe, a, "more than the limit of 67108864", "above the 67108864-byte limit")

    for tag, config, phrase in (("unknown key CACHE_DIR", {"CACHE_DIR": str(h / "cache")}, "CACHE_DIR"),
                                ("unknown value", {"INFERENCE_PRECISION_HINT": "i8"}, "INFERENCE_PRECISION_HINT"),
                                ("non-string value", {"PERFORMANCE_HINT": ["LATENCY"]}, "PERFORMANCE_HINT"),
                                ("threads from the manifest", {"INFERENCE_NUM_THREADS": "64"},
                                 "INFERENCE_NUM_THREADS")):
        def edit(m, config=config):
            m["openvino"]["config"] = config
        a = copy_artifact(fp32, h / f"config_{tag.replace(' ', '_')}", edit)
        expect_refused(f"openvino.config {tag}", exe, a, "is not one vitedge applies", "is not one vitedge applies")
        if (h / "cache").exists():
            raise Failure("OpenVINO wrote a model cache named by the manifest")

    def not_mapping(m):
        m["openvino"]["config"] = "PERFORMANCE_HINT=LATENCY"
    expect_refused("openvino.config not a mapping", exe, copy_artifact(fp32, h / "config_str", not_mapping),
                   "openvino.config is not a mapping", "openvino config is not a mapping")

    for tag, weights, cpp_phrase, py_phrase in (("..", "../model.bin", "leaves the artifact directory",
                                                 "escapes its folder"),
                                                ("absolute", "/etc/passwd", "is absolute", "is an absolute path"),
                                                ("not a string", 7, "must be a file name", "must be a file name")):
        def edit(m, weights=weights):
            m["openvino"]["weights"] = weights
        a = copy_artifact(fp32, h / f"weights_{tag.replace('.', 'dot').replace(' ', '_')}", edit)
        expect_refused(f"openvino.weights {tag}", exe, a, cpp_phrase, py_phrase)

    def other_weights(m):
        m["openvino"]["weights"] = "other.bin"
    a = copy_artifact(fp32, h / "weights_unlisted", other_weights)
    shutil.copyfile(a / "model.bin", a / "other.bin")
    expect_refused("weights not listed in the manifest", exe, a, "are not listed in the manifest",
                   "are not listed in the manifest")

    # Signed: the weights are covered by the signature (with --key the runner checks them against model.sig).
    from _common import make_keypair, sign_artifact
    priv, pub = make_keypair(h / "keys")
    signed = copy_artifact(fp32, h / "signed")
    sign_artifact(signed, priv)
    r = run([exe, signed, "--key", pub, "--iters", 1, "--warmup", 0])
    if r.returncode != 0:
        raise Failure(f"signed OpenVINO artifact with its key: exit {r.returncode}: {r.stderr.strip()}")
    print("ok   signed OpenVINO artifact loads with --key")
    a = copy_artifact(signed, h / "signed_bin_changed")
    w = bytearray((a / "model.bin").read_bytes())
    w[len(w) // 3] ^= 0x01
    (a / "model.bin").write_bytes(bytes(w))
    # --no-verify: past the manifest's SHA-256, so that the signature's digest of the weights is what refuses them
    expect_refused("signed, weights changed (--key --no-verify)", exe, a, "model.bin does not match its signature",
                   "model.bin", extra=("--key", pub, "--no-verify"),
                   py_kwargs={"trusted_keys": [str(pub)], "verify": False})

    # --no-verify: truncated weights reach OpenVINO, which must fail with one line (no crash).
    a = copy_artifact(fp32, h / "bin_truncated")
    (a / "model.bin").write_bytes((a / "model.bin").read_bytes()[:100])
    r = run([exe, a, "--no-verify", "--iters", 1, "--warmup", 0])
    problems = error_line_problems(r, 1, "OpenVINO IR")
    if problems:
        raise Failure(f"truncated model.bin with --no-verify: {'; '.join(problems)}")
    print(f"ok   truncated model.bin (--no-verify): {r.stderr.strip()[:200]!r}")


def test(args) -> None:
    import skimage.data  # noqa: F401 - the bundled photos
    from vitedge.data import bundled_photo_paths, load_batch
    from vitedge.targets import openvino as tov
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    exe = args.bench
    photos = bundled_photo_paths()
    png = work / "photo_64.png"
    Image.open(photos[0]).convert("RGB").resize((64, 64), Image.BILINEAR).save(png)

    precisions = ["fp32", "int8"] + (["bf16"] if "BF16" in tov.cpu_capabilities() else [])
    if "bf16" not in precisions:
        print("note bf16: this CPU's OpenVINO plugin does not report BF16; bf16 artifacts not exported here")
    arts = {p: export_ov(work / f"tiny_vit_openvino_{p}", p) for p in precisions}
    pre = dict(PREPROCESSING)
    x1 = load_batch([png], pre).numpy()
    for precision, art in arts.items():
        py = py_runner(art)
        for batch in (1, 3):
            tag = f"{precision}_batch{batch}"
            got = bench(exe, art, png, batch, work, tag)
            compare(tag, py.run(np.ascontiguousarray(np.repeat(x1, batch, axis=0)))[0], got, precision)
        check_classify(args.classify, art, photos, precision)
    fp32 = arts["fp32"]

    out_json = work / "bare.json"
    r = run([exe, fp32, "--bare", "--iters", 3, "--warmup", 1, "--json", out_json])
    if r.returncode != 0:
        raise Failure(f"vitedge-bench --bare exited {r.returncode}: {r.stderr.strip()}")
    check_bench_json(load_json(out_json), "--bare", runtime="openvino-cpp-bare")
    print("ok   --bare loop")

    t1 = bench(exe, fp32, png, 2, work, "threads1", threads=1)
    t2 = bench(exe, fp32, png, 2, work, "threads2", threads=2)
    if not float(np.abs(t1 - t2).max()) <= FP32_TOL:
        raise Failure(f"--threads 1 vs 2: max abs diff {float(np.abs(t1 - t2).max()):.3g}")
    print("ok   --threads 1 and 2 give the same logits")

    check_c_abi(args.lib, fp32, photos)
    hostile(exe, fp32, work)
    print("all OpenVINO backend checks OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, type=Path, help="path to the vitedge-bench executable")
    ap.add_argument("--classify", required=True, type=Path, help="path to the classify example")
    ap.add_argument("--lib", required=True, type=Path, help="path to libvitedge.so (the C ABI)")
    ap.add_argument("--workdir", required=True, type=Path, help="scratch directory (recreated)")
    main(lambda: test(ap.parse_args()))
