"""vitedge's artifacts against the runtimes a user would pick by hand, side by side in one run, with each row's
distance from the machine's floor. Not a test: ``python benchmarks/compare.py`` (about 30-60 min for the three
default presets at their native sizes on 2 cores; ``--presets``, ``--image-size``, ``--variants``, ``--peers``
make smaller runs; ``tests/test_compare.py`` runs it on a tiny configuration).

For each preset (default ``deit_tiny``, ``mobilevit_xs``, ``levit_128s``, each at its native input size):

* weights and accuracy: timing runs at the preset's own input size with its seeded initialisation and a 10-class
  head; the top-1 columns come from the same recipes applied to the preset trained on the scikit-learn digits
  (train split, upsampled to ``--accuracy-size``, default 64x64; ``vitedge.train.train_digits``, cached under
  ``--out``/checkpoints) and measured on the held-out digits. Training at 224x224 costs about 10 min per epoch on
  2 cores, so the two sizes differ unless ``--accuracy-size`` equals the timed size (then one model does both);
* peers, "done by hand" with the same weights loaded into the ``vit-pytorch`` class: eager PyTorch,
  ``torch.jit.trace``, ``torch.onnx.export`` + an ONNX Runtime default session, OpenVINO from that ONNX with
  ``INFERENCE_PRECISION_HINT=f32`` and with its default precision (bf16 on CPUs with AVX-512 BF16 / AMX), and
  ONNX Runtime ``quantize_dynamic`` of that ONNX. The peers' ONNX files are exported per batch (static shapes,
  which favours them);
* vitedge: every artifact that runs here (``--variants``), exported by ``vitedge.export.export`` with the
  defaults ``vitedge export`` uses (int8: each target's default recipe, calibrated on 128 digits train images);
* the floor: the preset's FLOPs (``torch.utils.flop_counter.FlopCounterMode`` on the vit-pytorch model, the full
  computation; vitedge's ViT skips the 7% its class-token head never reads: 2 per multiply-add of matmuls,
  convolutions and attention) divided by the machine's fp32 peak, measured in this run
  as the best of repeated large square fp32 GEMMs (torch.mm, ONNX Runtime and OpenVINO MatMul) at the same thread
  count, at the start and the end of the run.
  ``x floor`` = p50 / floor (1.0 would be a model running entirely at GEMM peak).

Latency: p50 of ``--rounds`` interleaved rounds (every row once per round, :func:`vitedge.bench.time_interleaved`)
at each (batch, threads) in ``--batches`` x ``--threads``; rows of one thread count share one interleaved group.
In each round a row's timed calls follow ``--settle`` untimed ones (default 2): the first calls after another
runtime pay for that runtime's still-spinning threads, which no app running one model pays.
Cold start: wall time from spawning a fresh Python process to its first batch-1 result (imports + load + first
run), and that process's peak RSS (MiB), one process per row, ``--cold-runs`` times (median).
Outputs ``--results``/compare.{json,md,png} (``--name`` changes the stem): JSON with the CPU model and ISA flags,
a markdown table and a plot of digits top-1 vs batch-1 latency (one point per row).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitedge.bench import time_interleaved  # noqa: E402
from vitedge.data import DIGITS_LABELS, digits_batch, digits_split  # noqa: E402
from vitedge.errors import VitedgeError, first_line  # noqa: E402
from vitedge.export import export, prepare_preset  # noqa: E402
from vitedge.files import write_json_atomic, write_text_atomic  # noqa: E402
from vitedge.machine import machine_info  # noqa: E402
from vitedge.models.upstream import upstream_class  # noqa: E402
from vitedge.models.zoo import get_preset  # noqa: E402
from vitedge.quantize import calibration_data  # noqa: E402
from vitedge.targets import default_int8_options  # noqa: E402
from vitedge.report import markdown_table, plot_latency_bars  # noqa: E402
from vitedge.runtime import open_artifact  # noqa: E402
from vitedge.train import train_digits  # noqa: E402
from vitedge.validate import validate  # noqa: E402

VARIANTS = ["onnx:fp32", "onnx:int8", "torchscript:fp32", "aotinductor:fp32", "executorch:fp32", "executorch:int8",
            "openvino:fp32", "openvino:bf16", "openvino:int8", "openvino:int8:int8_float_precision=bf16"]
PEERS = ["eager", "jit", "ort", "openvino_f32", "openvino_default", "ort_qdyn"]
PEER_NAMES = {"eager": "vit-pytorch eager", "jit": "vit-pytorch torch.jit.trace", "ort": "ONNX Runtime default",
              "openvino_f32": "OpenVINO f32 hint", "openvino_default": "OpenVINO default",
              "ort_qdyn": "ONNX Runtime quantize_dynamic"}
COLUMNS = [("preset", "preset", "{}"), ("who", "who", "{}"), ("artifact", "name", "{}"),
           ("precision", "precision", "{}"), ("top-1 %", "top1", "{:.2f}"), ("drop", "drop_points", "{:+.2f}")]
CPU_FLAGS_BF16 = ("avx512_bf16", "amx_bf16")


# ---------------------------------------------------------------------------------------------- the machine floor
def gemm_peak_gflops(threads: int, n: int = 2048, reps: int = 8) -> dict:
    """fp32 GEMM peak at ``threads`` threads: the best GFLOP/s of ``reps`` (n x n) @ (n x n) products in each of
    torch.mm (MKL/oneDNN), ONNX Runtime's MatMul (MLAS) and OpenVINO's MatMul (oneDNN) where installed.
    Returns {"torch": .., "onnxruntime": .., "openvino": .., "best": max}. The libraries' GEMMs differ by CPU
    vendor (MKL's sgemm is not at its best on AMD), so the floor uses the best of them."""
    g = np.random.default_rng(0)
    a = g.standard_normal((n, n), dtype=np.float32)
    b = g.standard_normal((n, n), dtype=np.float32)

    def best_of(f) -> float:
        for _ in range(2):
            f()
        t = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            t = min(t, time.perf_counter() - t0)
        return 2 * n ** 3 / t / 1e9
    out = {}
    torch.set_num_threads(threads)
    ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.empty(n, n)
    out["torch"] = best_of(lambda: torch.mm(ta, tb, out=tc))
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                                  [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
                                  [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 9
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        out["onnxruntime"] = best_of(lambda: sess.run(None, {"a": a, "b": b}))
    except ImportError:
        pass
    try:
        from vitedge.targets.openvino import without_usage_telemetry
        with without_usage_telemetry():
            import openvino as ov
            import openvino.opset13 as ops
            pa = ops.parameter([n, n], np.float32)
            pb = ops.parameter([n, n], np.float32)
            m = ov.Model([ops.matmul(pa, pb, False, False)], [pa, pb])
            req = ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                     "INFERENCE_NUM_THREADS": threads}).create_infer_request()
        out["openvino"] = best_of(lambda: req.infer({0: a, 1: b}))
    except Exception:  # noqa: BLE001 - not installed, or no CPU plugin: the others still count
        pass
    out["best"] = max(out.values())
    return out


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass at input ``x`` (B, C, H, W), counted by ``FlopCounterMode`` (2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------------------------------- the peers
def upstream_model(spec: dict, model: torch.nn.Module) -> torch.nn.Module:
    """The vit-pytorch model of ``spec`` with ``model``'s weights (same constructor kwargs, same state_dict)."""
    ref = upstream_class(spec["family"])(**spec["kwargs"]).eval()
    ref.load_state_dict(model.state_dict())
    return ref


def export_peer_onnx(ref: torch.nn.Module, batch: int, chw: tuple, path: Path) -> dict:
    """``torch.onnx.export(model, (x,), path)`` as a user would call it (static batch); the legacy exporter if the
    default one fails. Returns how it was exported."""
    x = torch.zeros(batch, *chw)
    import logging
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(ref, (x,), str(path), input_names=["input"], output_names=["logits"], verbose=False)
            return {"exporter": "torch.onnx.export (default)"}
        except Exception as e:  # noqa: BLE001 - record it and try the other exporter, as a user would
            reason = first_line(e, 200)
            torch.onnx.export(ref, (x,), str(path), input_names=["input"], output_names=["logits"], dynamo=False)
            return {"exporter": "torch.onnx.export(dynamo=False)", "default_exporter_failed": reason}


class OrtPeer:
    """An ONNX Runtime CPU session with default options except the intra-op thread count."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name

    def run(self, x):
        return self.session.run(None, {self.name: x})


class OpenVinoPeer:
    """OpenVINO's CPU plugin on an ONNX file; ``config`` on top of the thread count (default precision if empty)."""

    def __init__(self, path: Path, threads: int, config: dict):
        from vitedge.targets.openvino import without_usage_telemetry
        with without_usage_telemetry():  # openvino's import and compile send usage events unless CI=true
            import openvino as ov
            self.compiled = ov.Core().compile_model(str(path), "CPU", {**config, "INFERENCE_NUM_THREADS": threads})
        self.request = self.compiled.create_infer_request()
        self.precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(self, x):
        self.request.infer({0: x})
        return [self.request.get_output_tensor(0).data.copy()]


class TorchPeer:
    """A torch module (eager or traced) called under ``torch.inference_mode``."""

    def __init__(self, module):
        self.module = module

    def run(self, x):
        with torch.inference_mode():
            out = self.module(torch.from_numpy(x))
        return [out.numpy()]


def build_peers(which: list[str], ref, chw, batches, folder: Path) -> tuple[dict, dict]:
    """Files and info of the by-hand peers: {peer: {batch: path}} and {peer: info}. Failures are recorded."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict = {}
    info: dict = {}
    onnx_needed = any(p in which for p in ("ort", "openvino_f32", "openvino_default", "ort_qdyn"))
    if "jit" in which:
        files["jit"] = {}
        for b in batches:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(ref, torch.zeros(b, *chw))
            p = folder / f"traced_b{b}.pt"
            traced.save(str(p))
            files["jit"][b] = p
    if onnx_needed:
        files["onnx"] = {}
        for b in batches:
            p = folder / f"peer_b{b}.onnx"
            try:
                info["onnx"] = export_peer_onnx(ref, b, chw, p)
                files["onnx"][b] = p
            except Exception as e:  # noqa: BLE001 - a peer that cannot export is a result
                info["onnx"] = {"error": first_line(e)}
                break
    if "ort_qdyn" in which and files.get("onnx"):
        from onnxruntime.quantization import quantize_dynamic
        files["ort_qdyn"] = {}
        for b, p in files["onnx"].items():
            q = folder / f"peer_b{b}.qdyn.onnx"
            try:
                import logging
                root = logging.getLogger()
                level = root.level
                root.setLevel(logging.ERROR)  # "Please consider to run pre-processing before quantization"
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        quantize_dynamic(str(p), str(q))
                finally:
                    root.setLevel(level)
                files["ort_qdyn"][b] = q
            except Exception as e:  # noqa: BLE001
                info["ort_qdyn"] = {"error": first_line(e)}
                break
    return files, info


def open_peer(peer: str, ref, files: dict, batch: int, threads: int):
    """A runner (``run(x) -> [logits]``) for one peer at one batch. Raises whatever the peer's runtime raises."""
    if peer == "eager":
        return TorchPeer(ref)
    if peer == "jit":
        return TorchPeer(torch.jit.load(str(files["jit"][batch])))
    if peer == "ort":
        return OrtPeer(files["onnx"][batch], threads)
    if peer == "ort_qdyn":
        return OrtPeer(files["ort_qdyn"][batch], threads)
    if peer == "openvino_f32":
        return OpenVinoPeer(files["onnx"][batch], threads, {"INFERENCE_PRECISION_HINT": "f32"})
    if peer == "openvino_default":
        return OpenVinoPeer(files["onnx"][batch], threads, {})
    raise ValueError(peer)


def peer_precision(peer: str, runner) -> str:
    if peer == "ort_qdyn":
        return "int8"
    if peer == "openvino_default":  # what the compiled model reports; without one, what the CPU implies
        if runner is None:
            return "bf16" if set(machine_info()["flags"]) & set(CPU_FLAGS_BF16) else "fp32"
        p = runner.precision.lower()  # e.g. "<Type: 'bfloat16'>"
        return "bf16" if "bf" in p else "fp16" if "f16" in p else "fp32"
    return "fp32"


def digits_top1(runner, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    """Top-1 (%) of ``runner`` on (x, y), run in chunks of ``batch`` (the last chunk padded)."""
    correct = 0
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        logits = runner.run(np.ascontiguousarray(chunk))[0][:n]
        correct += int((logits.argmax(1) == y[i:i + n]).sum())
    return 100.0 * correct / len(x)


# ------------------------------------------------------------------------------------------------ cold start
COLD_CHILD = r"""
import json, sys
kind, path, threads, shape = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
import numpy as np
x = np.zeros(shape, np.float32)
if kind == "vitedge":
    from vitedge.runtime import open_artifact
    out = open_artifact(path, threads=threads, trust_code=True)[1].run(x)  # exported by this script
elif kind == "ort":
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = threads
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    out = s.run(None, {s.get_inputs()[0].name: x})
elif kind.startswith("openvino"):
    import openvino as ov
    cfg = {"INFERENCE_NUM_THREADS": threads, **({"INFERENCE_PRECISION_HINT": "f32"} if kind == "openvino_f32" else {})}
    out = ov.Core().compile_model(path, "CPU", cfg)({0: x})
elif kind == "jit":
    import torch
    torch.set_num_threads(threads)
    with torch.inference_mode():
        out = torch.jit.load(path)(torch.from_numpy(x))
print("READY", flush=True)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]  # ru_maxrss would carry the parent's
print(json.dumps({"peak_rss_mb": int(hwm[0].split()[1]) / 1024 if hwm else None}), flush=True)
"""


def cold_start(kind: str, path: Path, threads: int, shape: list[int], runs: int) -> dict:
    """Median wall time (ms) from spawning a Python process to its first result, and its peak RSS (MiB)."""
    times, rss = [], []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1",
           "CI": "true"}  # OpenVINO's usage telemetry off (it is declined in CI jobs)
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", COLD_CHILD, kind, str(path), str(threads), json.dumps(shape)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = proc.stdout.readline()
        t1 = time.perf_counter()
        stats = proc.stdout.readline()
        _, err = proc.communicate(timeout=600)
        if not line.startswith("READY") or proc.returncode != 0:
            return {"error": (err.strip().splitlines() or ["no output"])[-1][:300]}
        times.append((t1 - t0) * 1e3)
        rss.append(json.loads(stats)["peak_rss_mb"])
    return {"first_result_ms": float(np.median(times)), "peak_rss_mb": float(np.median(rss))}


def size_mb(paths) -> float:
    """MiB of the given files and folders; a file's external data (``<name>.data`` etc. beside it) included."""
    total = 0
    for p in paths:
        p = Path(p)
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        else:
            total += sum(f.stat().st_size for f in p.parent.glob(p.name + "*") if f.is_file())
    return total / 2 ** 20


# ---------------------------------------------------------------------------------------------------- the run
def _dirname(variant: str) -> str:
    return variant.replace(":", "-").replace("=", "-").replace(",", "-")


def export_variants(variants, model, spec, pre, folder: Path, calib, reuse: bool = False) -> tuple[dict, list]:
    """Export each "target:precision" of ``variants``; returns ({variant: Artifact}, [error rows]).
    ``reuse``: keep an artifact already in ``folder`` whose manifest verifies (same checkpoint: the caller's folder
    is per preset and size)."""
    from vitedge.manifest import read_manifest
    arts, errors = {}, []
    flags = set(machine_info()["flags"])
    for v in variants:
        target, precision, *extra = v.split(":")
        topts = dict(kv.split("=", 1) for kv in extra[0].split(",")) if extra else {}
        if precision == "bf16" and not flags & set(CPU_FLAGS_BF16):
            errors.append({"name": f"{target} {precision}", "key": v, "error": "the CPU has no BF16 instructions"})
            continue
        if reuse and (folder / _dirname(v) / "manifest.json").exists():
            try:
                arts[v] = read_manifest(folder / _dirname(v))
                continue
            except VitedgeError:
                pass
        quant = None
        if precision == "int8":
            quant = default_int8_options(target, spec["family"])
            if quant.get("mode") == "static":
                quant.update(calibration=calib[0].numpy(), calibration_info=calib[1])
        t0 = time.perf_counter()
        try:
            art = export(model, torch.zeros(2, 3, *pre["size"]), target, folder / _dirname(v), force=True, spec=spec,
                         preprocessing=pre, precision=precision, quantization=quant, labels=DIGITS_LABELS,
                         target_options=topts)
        except VitedgeError as e:
            print(f"  {v}: {e}", flush=True)
            errors.append({"name": f"{target} {precision}", "key": v, "error": str(e)[:300]})
            continue
        print(f"  exported {v} in {time.perf_counter() - t0:.0f} s", flush=True)
        arts[v] = art
    return arts, errors


def run_preset(preset: str, args, size: tuple[int, int], trained: bool, timing: bool) -> tuple:
    """Rows of one preset at input ``size`` (see the module docstring): ``(rows, meta)``.

    ``trained``: weights trained on the digits at ``size`` (cached), top-1 measured; else the preset's seeded
    initialisation with a 10-class head (same graph, for timing at a size too costly to train at here).
    ``timing``: interleaved latency, floor ratios and cold start.
    """
    tag = f"{preset}-{size[0]}x{size[1]}" + ("" if trained else "-untrained")
    out = Path(args.out) / tag
    if trained:
        ck = Path(args.out) / "checkpoints" / f"{preset}-{size[0]}x{size[1]}-e{args.epochs}.safetensors"
        if not ck.exists():
            print(f"{preset}: training on digits at {size[0]}x{size[1]}, {args.epochs} epochs ...", flush=True)
            train_digits(preset, ck, image_size=size, epochs=args.epochs, log=None)
        model, spec, pre = prepare_preset(preset, checkpoint=ck)
    else:
        ck = None
        model, spec, pre = prepare_preset(preset, num_classes=10, image_size=size)
    chw = (3, *pre["size"])
    test_idx = digits_split(0)[1]
    xte, yte = (t.numpy() for t in digits_batch(test_idx, pre))
    calib = calibration_data("digits", pre, 128)
    batches = args.batches if timing else [max(args.batches)]

    arts, rows = export_variants(args.variants, model, spec, pre, out, calib, args.reuse)
    for r in rows:
        r.update(preset=preset, who="vitedge")
    ref, peer_files, peer_info = None, {}, {}
    try:
        ref = upstream_model(spec, model)
    except VitedgeError as e:
        rows.append({"preset": preset, "who": "peer", "name": "vit-pytorch", "error": str(e)})
    # the floor counts the model's full computation (vit-pytorch's; ours skips what its head never reads)
    flops = {b: count_flops(ref if ref is not None else model, torch.zeros(b, *chw)) for b in batches}
    print(f"{tag}: {flops[batches[0]] / batches[0] / 1e9:.3f} GFLOPs/image", flush=True)
    if args.peers and ref is not None:
        peer_files, peer_info = build_peers(args.peers, ref, chw, batches, out / "peers")

    entries = []  # one per row: how to open it at (batch, threads), its files, its cold-start kind
    for v, art in arts.items():
        opts = v.split(":")[2] if v.count(":") >= 2 else ""
        name = f"{art.manifest['target']} {art.manifest['precision']}" + (f" ({opts})" if opts else "")
        entries.append({"key": v, "who": "vitedge", "name": name,
                        "precision": art.manifest["precision"], "art": art,
                        # artifacts this script exported (trusted code); the timed loop runs the bare runner
                        # (inputs are float32 digits of the artifact's shape): no input check per call
                        "open": lambda b, t, art=art: open_artifact(art.path, threads=t, trust_code=True)[1].inner,
                        "files": [art.path], "cold": ("vitedge", art.path)})
    for p in args.peers if ref is not None else []:
        need = {"jit": "jit", "ort": "onnx", "openvino_f32": "onnx", "openvino_default": "onnx",
                "ort_qdyn": "ort_qdyn"}.get(p)
        if need and not peer_files.get(need):
            err = (peer_info.get(need) or peer_info.get("onnx") or {}).get("error", "no file")
            rows.append({"preset": preset, "who": "peer", "name": PEER_NAMES[p], "key": p, "error": err})
            continue
        b1 = peer_files.get(need, {}).get(min(batches)) if need else None
        cold = {"jit": "jit", "ort": "ort", "ort_qdyn": "ort", "openvino_f32": "openvino_f32",
                "openvino_default": "openvino_default"}.get(p)
        entries.append({"key": p, "who": "peer", "name": PEER_NAMES[p], "precision": None,
                        "open": lambda b, t, p=p: open_peer(p, ref, peer_files, b, t), "files": [b1] if b1 else [],
                        "cold": (cold, b1) if cold and b1 and min(batches) == 1 else None})

    results = {e["key"]: {"latency": {}, "errors": {}} for e in entries}
    for t in args.threads if timing else []:
        torch.set_num_threads(t)
        runners, inputs, iters = {}, {}, {}
        for e in entries:
            for b in batches:
                try:
                    runners[(e["key"], b)] = e["open"](b, t)
                except Exception as ex:  # noqa: BLE001 - a runtime that cannot open this is a result
                    results[e["key"]]["errors"][f"b{b}_t{t}"] = first_line(ex)
                    continue
                inputs[(e["key"], b)] = np.ascontiguousarray(xte[np.arange(b) % len(xte)])
                iters[(e["key"], b)] = max(3, args.iters // b)
        print(f"{tag}: timing {len(runners)} runners at {t} thread(s) ...", flush=True)
        timed = time_interleaved(runners, inputs, args.rounds, iters, warmup=args.warmup, settle=args.settle)
        for (k, b), s in timed.items():
            results[k]["latency"][f"b{b}_t{t}"] = s
        del runners

    eager_top1 = None
    t = max(args.threads)
    torch.set_num_threads(t)
    for e in entries if trained else []:  # accuracy on the held-out digits
        res = results[e["key"]]
        try:
            if e["who"] == "vitedge":
                m = validate(e["art"].path, dataset="digits", threads=t, trust_code=True)["metrics"]
                res.update(top1=100 * m["top1"], eager_top1=100 * m["eager_top1"])
            else:
                b = max(batches)
                r = e["open"](b, t)
                res["top1"] = digits_top1(r, xte, yte, b)
                if e["key"] == "openvino_default":
                    res["precision"] = peer_precision(e["key"], r)
                if e["key"] == "eager":
                    eager_top1 = res["top1"]
        except Exception as ex:  # noqa: BLE001
            res["errors"]["accuracy"] = first_line(ex)

    for e in entries:
        res = results[e["key"]]
        precision = e["precision"] or res.get("precision") or peer_precision(e["key"], None)
        row = {"preset": preset, "who": e["who"], "name": e["name"], "key": e["key"], "precision": precision,
               "image_size": list(size), "top1": res.get("top1"),
               "size_mb": size_mb(e["files"]) if e["files"] else None, "latency": res["latency"],
               "open_errors": res["errors"]}
        base = res.get("eager_top1", eager_top1)
        if row["top1"] is not None and base is not None:
            row["drop_points"] = base - row["top1"]
        for key, s in res["latency"].items():
            row[f"p50_{key}"] = s["p50"]  # floor_{key} is added by add_floor once the run's GEMM peak is known
        if e["who"] == "vitedge":
            m = e["art"].manifest
            row["manifest"] = {k: m.get(k) for k in ("export", "quantization", "onnxruntime", "openvino", "executorch")
                               if m.get(k) is not None}
        if timing and args.cold_runs and e.get("cold"):
            kind, path = e["cold"]
            row["cold_start"] = cold_start(kind, path, t, [1, *chw], args.cold_runs)
        rows.append(row)
    meta = {"preset": preset, "image_size": list(size), "trained": trained, "flops": flops,
            "checkpoint": str(ck) if ck else None, "peer_export": peer_info, "eager_top1": eager_top1}
    return rows, meta


def add_floor(rows: list[dict], flops: dict, peaks: dict) -> None:
    """``floor_b{B}_t{T}`` = p50 / (FLOPs at batch B / GEMM peak at T threads) on each timed row."""
    for row in rows:
        for key in [k for k in row if k.startswith("p50_b")]:
            b, t = (int(v[1:]) for v in key[4:].split("_"))
            row["floor" + key[3:]] = row[key] / (flops[b] / (peaks[t] * 1e9) * 1e3)


def merge_accuracy(rows: list[dict], acc_rows: list[dict], acc_size) -> None:
    """Copy top-1 and drop from the rows of the digits-trained run at ``acc_size`` onto the timed rows (same key:
    the same target, precision and recipe, or the same peer)."""
    by_key = {r.get("key"): r for r in acc_rows if r.get("key")}
    for r in rows:
        a = by_key.get(r.get("key"))
        if a is None:
            continue
        for k in ("top1", "drop_points"):
            if a.get(k) is not None:
                r[k] = a[k]
        if a.get("precision") and r["who"] == "peer":
            r["precision"] = a["precision"]
        r["accuracy_image_size"] = list(acc_size)
        if a.get("error"):
            r["accuracy_error"] = a["error"]
        if a.get("open_errors"):
            r["accuracy_errors"] = a["open_errors"]



# ------------------------------------------------------------------------------------------------- reporting
GOAL_VS_FASTEST_PEER = 1.3  # issue: the best artifact within MAX_DROP_POINTS is >= 1.3x the fastest peer
GOAL_X_FLOOR = 1.15  # issue: best fp32 within 1.15x of the GEMM-peak floor
MAX_DROP_POINTS = 0.5  # "within 0.5 points of fp32 top-1" on the held-out digits


def summarize(rows: list[dict], preset: str, b: int, t: int) -> dict:
    """The speed goals at (batch b, threads t) for one preset, from the measured rows.

    * ``best`` / ``best_ms`` / ``best_drop``: the fastest vitedge row of any precision whose digits top-1 is within
      :data:`MAX_DROP_POINTS` of eager fp32 (a row without a measured top-1 does not qualify);
    * ``fastest_peer`` / ``fastest_peer_ms``: the fastest by-hand peer of any precision (no accuracy filter, so the
      comparison is never flattered); ``speedup_vs_fastest_peer`` = peer ms / best ms, ``meets_1_3x`` against
      :data:`GOAL_VS_FASTEST_PEER`;
    * ``best_fp32`` / ``best_fp32_x_floor``: the fastest vitedge fp32 row and its p50 / floor (goal
      :data:`GOAL_X_FLOOR`); ``best_peer_fp32`` / ``best_peer_fp32_ms`` for reference;
    * ``int8_slower_than_fp32``: the targets whose default int8 row (``target:int8``) has a higher p50 than their
      fp32 row (``target:fp32``) in this cell, as ``"target (int8 ms vs fp32 ms)"``; ``"none"`` when none is.
    """
    key = f"p50_b{b}_t{t}"
    ok = [r for r in rows if r["preset"] == preset and r.get(key) and "error" not in r]

    def fastest(pred):
        c = [r for r in ok if pred(r)]
        return min(c, key=lambda r: r[key]) if c else None
    best = fastest(lambda r: r["who"] == "vitedge" and r.get("drop_points") is not None
                   and r["drop_points"] <= MAX_DROP_POINTS)
    best32 = fastest(lambda r: r["who"] == "vitedge" and r["precision"] == "fp32")
    peer32 = fastest(lambda r: r["who"] == "peer" and r["precision"] == "fp32")
    peer = fastest(lambda r: r["who"] == "peer")
    s = {"preset": preset, "batch": b, "threads": t}
    if best:
        s.update(best=best["name"], best_ms=best[key], best_drop=best["drop_points"])
    if peer:
        s.update(fastest_peer=f"{peer['name']} ({peer['precision']})", fastest_peer_ms=peer[key])
    if best and peer:
        s["speedup_vs_fastest_peer"] = peer[key] / best[key]
        s["meets_1_3x"] = s["speedup_vs_fastest_peer"] >= GOAL_VS_FASTEST_PEER
    if best32:
        s.update(best_fp32=best32["name"], best_fp32_ms=best32[key], best_fp32_x_floor=best32.get(f"floor_b{b}_t{t}"))
        if s["best_fp32_x_floor"] is not None:
            s["fp32_within_1_15x_floor"] = s["best_fp32_x_floor"] <= GOAL_X_FLOOR
    if peer32:
        s.update(best_peer_fp32=peer32["name"], best_peer_fp32_ms=peer32[key])
    by_key = {r.get("key"): r for r in ok if r["who"] == "vitedge"}
    slower = []
    for target in sorted({k.split(":")[0] for k in by_key}):
        r8, r32 = by_key.get(f"{target}:int8"), by_key.get(f"{target}:fp32")
        if r8 is not None and r32 is not None and r8[key] > r32[key]:
            slower.append(f"{target} ({r8[key]:.2f} vs {r32[key]:.2f})")
    s["int8_slower_than_fp32"] = ", ".join(slower) or "none"
    return s


SUMMARY_COLUMNS = [
    ("preset", "preset", "{}"), ("batch", "batch", "{}"), ("threads", "threads", "{}"),
    (f"best vitedge (drop <= {MAX_DROP_POINTS} pt)", "best", "{}"), ("ms", "best_ms", "{:.2f}"),
    ("drop", "best_drop", "{:+.2f}"), ("fastest peer, any precision", "fastest_peer", "{}"),
    ("ms", "fastest_peer_ms", "{:.2f}"), (f"x fastest peer (goal {GOAL_VS_FASTEST_PEER})", "speedup_vs_fastest_peer",
                                          "{:.2f}"),
    ("met", "meets_1_3x", "{}"), ("best vitedge fp32", "best_fp32", "{}"), ("ms", "best_fp32_ms", "{:.2f}"),
    (f"x floor (goal {GOAL_X_FLOOR})", "best_fp32_x_floor", "{:.2f}"), ("best peer fp32 ms", "best_peer_fp32_ms",
                                                                       "{:.2f}"),
    ("default int8 slower than fp32 (target: int8 vs fp32 ms)", "int8_slower_than_fp32", "{}")]


def write_markdown(path: Path, data: dict) -> None:
    m = data["machine"]
    lines = [f"# vitedge vs the by-hand runtimes, one run ({data['date']})", "",
             f"{m['cpu']}, {m['cores']} cores, flags: {', '.join(m['flags'])}. fp32 GEMM peak (best {data['gemm_n']}^2 "
             "product of torch.mm, ONNX Runtime MatMul and OpenVINO MatMul, at the start and the end of the run): " + ", ".join(f"{v:.0f} GFLOP/s at {t} thread(s)" for t, v in data["gemm_peak_gflops"].items())
             + f". p50 of {data['rounds']} interleaved rounds ({data.get('settle', 0)} untimed calls before each row's "
             "timed calls in a round); `x floor` = p50 / (FLOPs / GEMM peak); top-1 on the "
             f"{data['digits_test']} held-out digits, from the same recipe on the preset trained on the digits at "
             f"{data['accuracy_size']} (timing at the preset's own size; see the script's docstring); drop = "
             "eager top-1 minus the row's. Cold start = spawn to first batch-1 result, median of "
             f"{data['cold_runs']} fresh processes.", ""]
    lines += ["## Must show: every (batch, threads) cell", "",
              f"best vitedge = the fastest artifact of any precision within {MAX_DROP_POINTS} points of eager fp32 "
              "top-1 on the held-out digits; fastest peer = the fastest by-hand row of any precision (OpenVINO's "
              f"bf16 default included); goal: best >= {GOAL_VS_FASTEST_PEER}x faster than that peer, best fp32 "
              f"within {GOAL_X_FLOOR}x of the floor, and no target's default int8 slower than its fp32.", ""]
    cols = SUMMARY_COLUMNS
    lines += [markdown_table(data["summary"], cols), ""]
    for preset in data["presets"]:
        meta = data["meta"][preset]
        rows = [r for r in data["rows"] if r["preset"] == preset]
        per_img = {int(b): f / int(b) / 1e9 for b, f in meta["flops"].items()}
        lines += [f"## {preset} ({meta['image_size'][0]}x{meta['image_size'][1]}, "
                  f"{next(iter(per_img.values())):.3f} GFLOPs/image)", ""]
        cols = list(COLUMNS)
        for t in data["threads"]:
            for b in data["batches"]:
                cols += [(f"p50 ms b{b} t{t}", f"p50_b{b}_t{t}", "{:.2f}"), (f"x floor b{b} t{t}", f"floor_b{b}_t{t}",
                                                                             "{:.2f}")]
        cols += [("size MB", "size_mb", "{:.1f}"), ("cold start ms", "cold_ms", "{:.0f}"),
                 ("peak RSS MB", "rss_mb", "{:.0f}")]
        ok = []
        for r in rows:
            if "error" in r:
                continue
            cs = r.get("cold_start") or {}
            ok.append({**r, "cold_ms": cs.get("first_result_ms"), "rss_mb": cs.get("peak_rss_mb")})
        lines += [markdown_table(ok, cols), ""]
        errs = [r for r in rows if "error" in r or r.get("open_errors")]
        for r in errs:
            lines.append(f"- {r['who']} {r['name']}: {r.get('error') or r.get('open_errors')}")
        if errs:
            lines.append("")
    write_text_atomic(path, "\n".join(lines) + "\n")


def plot(data: dict, path: Path) -> None:
    """A panel per preset: every row's p50 at batch 1 (most threads) as a bar, fastest at the top, vitedge artifacts
    solid and by-hand peers hatched, coloured by precision, labelled with p50 and top-1 drop on the held-out digits;
    the dashed line is the goal, the fastest peer / 1.3 (:func:`vitedge.report.plot_latency_bars`)."""
    t = max(data["threads"])
    b = 1 if 1 in data["batches"] else data["batches"][0]
    key = f"p50_b{b}_t{t}"
    panels, goals = [], {}
    for preset in data["presets"]:
        rows = [{"label": ("by hand: " if r["who"] != "vitedge" else "") + r["name"], "p50_ms": r[key],
                 "precision": r["precision"], "drop_points": r.get("drop_points"), "hatched": r["who"] != "vitedge"}
                for r in data["rows"] if r["preset"] == preset and r.get(key)]
        size = next((r["image_size"] for r in data["rows"] if r["preset"] == preset), None)
        name = f"{preset} ({size[0]}x{size[1]})" if size else preset
        peers = [r["p50_ms"] for r in rows if r["hatched"]]
        if peers:
            goals[name] = min(peers) / 1.3
        panels.append((name, rows))
    plot_latency_bars(panels, path, title=f"{data['machine']['cpu']}, {t} threads: p50 latency and top-1 drop on the "
                                          "held-out digits", xlabel=f"p50 latency, batch {b}, {t} threads (ms; "
                                          "shorter is faster)", goal_ms=goals, goal_label="goal = fastest peer / 1.3")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["deit_tiny", "mobilevit_xs", "levit_128s"])
    ap.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="default: each preset's own")
    ap.add_argument("--accuracy-size", type=int, nargs=2, metavar=("H", "W"), default=[64, 64],
                    help="input size of the digits-trained models that give the top-1 columns (default 64 64; "
                         "training at 224 costs ~10 min/epoch on 2 cores); when it differs from the timed size, "
                         "every row's recipe is exported a second time at this size for its accuracy")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--variants", nargs="*", default=VARIANTS,
                    help="vitedge rows, target:precision[:target_option=value,...] (options as in export's "
                         "target_options)")
    ap.add_argument("--peers", nargs="*", default=PEERS, choices=PEERS)
    ap.add_argument("--epochs", type=int, default=4, help="digits training epochs (cached per preset/size)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20, help="timed calls per row per round at batch 1 (/B at batch B)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--settle", type=int, default=2, help="untimed calls before each row's timed calls in every "
                    "round (see the module docstring)")
    ap.add_argument("--cold-runs", type=int, default=3, help="fresh processes per row for cold start (0: skip)")
    ap.add_argument("--reuse", action="store_true", help="reuse artifacts already exported under --out")
    ap.add_argument("--gemm-n", type=int, default=2048)
    ap.add_argument("--out", default=str(ROOT / "artifacts/compare"))
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    ap.add_argument("--name", default="compare", help="stem of the result files")
    args = ap.parse_args(argv)
    for v in args.variants:
        parts = v.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and not all("=" in kv for kv in parts[2].split(","))):
            ap.error(f"--variants takes target:precision[:option=value,...], got {v!r}")
    for preset in args.presets:  # an unknown preset fails here, before minutes of measuring
        get_preset(preset)
    machine = machine_info()
    gemm = {}
    for t in args.threads:
        gemm[t] = gemm_peak_gflops(t, args.gemm_n)
        print(f"fp32 GEMM peak at {t} thread(s): " + ", ".join(f"{k} {v:.1f}" for k, v in gemm[t].items())
              + " GFLOP/s", flush=True)
    rows, metas = [], {}
    for preset in args.presets:
        size = tuple(args.image_size) if args.image_size else tuple(get_preset(preset).input_size)
        acc = tuple(args.accuracy_size) if args.accuracy_size else size
        r, meta = run_preset(preset, args, size, trained=acc == size, timing=True)
        if acc != size:  # accuracy from the same recipes on a model trained at the smaller size
            acc_rows, acc_meta = run_preset(preset, args, acc, trained=True, timing=False)
            merge_accuracy(r, acc_rows, acc)
            meta["accuracy"] = acc_meta
        rows += r
        metas[preset] = meta
    for t in args.threads:  # the peak again at the end (the best of both counts: load only slows a GEMM down)
        again = gemm_peak_gflops(t, args.gemm_n)
        gemm[t] = {k: max(v, again.get(k, 0)) for k, v in gemm[t].items()}
    peaks = {t: g["best"] for t, g in gemm.items()}
    for preset in args.presets:
        add_floor([r for r in rows if r["preset"] == preset], metas[preset]["flops"], peaks)
    summary = [summarize(rows, p, b, t) for p in args.presets for t in args.threads for b in args.batches]
    data = {"date": time.strftime("%Y-%m-%d"), "machine": machine, "gemm_peak_gflops": peaks, "gemm_by_library": gemm, "gemm_n": args.gemm_n,
            "presets": args.presets, "batches": args.batches, "threads": args.threads, "rounds": args.rounds,
            "iters": args.iters, "settle": args.settle,
            "accuracy_size": "x".join(map(str, args.accuracy_size or [])) or "the timed size",
            "cold_runs": args.cold_runs, "digits_test": len(digits_split(0)[1]),
            "versions": _versions(), "meta": metas, "summary": summary, "rows": rows}
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    write_json_atomic(res / f"{args.name}.json", data, default=str)
    write_markdown(res / f"{args.name}.md", data)
    plot(data, res / f"{args.name}.png")
    print((res / f"{args.name}.md").read_text())
    print(f"wrote {res / args.name}.json, .md, .png")
    return 0


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for pkg in ("torch", "onnxruntime", "openvino", "nncf", "executorch", "vit-pytorch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def cli() -> int:
    """``main`` with vitedge's errors (unknown preset, bad image size, missing runtime) as one line, exit 1."""
    try:
        return main()
    except VitedgeError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(cli())
