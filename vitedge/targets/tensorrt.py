"""TensorRT target: an ONNX graph tuned for TensorRT's ONNX parser, built into a serialized engine.

Flow (``write``):

1. ONNX export through :mod:`vitedge.targets.onnx_graph` (dynamo exporter, opset 18 by default, constants folded;
   TensorRT 10.0's parser reads opsets 9-20, 10.15's 9-24). The precision lives in the graph, because the engine is built as a
   **strongly typed** network (TensorRT >= 10; weak typing and ``BuilderFlag.FP16/INT8`` are deprecated since
   TensorRT 10.12 and removed in 11.x, see NVIDIA's "10.x to 11.x API migration" guide):

   * fp32: the float32 graph;
   * fp16: float16 weights and compute with float32 inputs/outputs (ONNX Runtime's float16 converter,
     ``keep_io_types=True``), the same file the ONNX target writes for fp16;
   * int8: explicit quantization, a QDQ graph from :func:`vitedge.quantize.onnx.quantize_int8` with the options
     TensorRT requires: int8 activations **and** weights, both symmetric (every zero point 0: TensorRT's
     QuantizeLinear / DequantizeLinear restriction), per-channel weights, full 8-bit range (no reduce_range),
     calibrated on real images. No implicit (calibrator) int8: deprecated since TensorRT 10.1.

2. A graph check (:func:`check_graph`): ``onnx.shape_inference.infer_shapes(strict_mode=True)``, ``onnx.checker``
   with ``full_check=True``, every op in :data:`SUPPORTED_OPS` (TensorRT's ONNX parser support matrix, source
   below) at an opset in :data:`PARSER_OPSETS`, and the parser's Q/DQ restrictions. Fails the export naming the
   unsupported ops.

3. Parity of that ONNX graph against eager PyTorch through ONNX Runtime on the bundled photos (always: the file
   is the network TensorRT parses, so a mismatch here is the exporter's, not TensorRT's).

4. With TensorRT and a CUDA GPU: ``tensorrt.Builder`` + ``OnnxParser`` + an optimization profile on the batch
   dimension (min/opt/max) + the timing cache, ``build_serialized_network`` -> ``model.engine``; export then
   checks the engine's own parity. Without them: ``model.onnx`` and ``trtexec.sh`` (the equivalent ``trtexec``
   command line) are written, the manifest records ``"engine": null`` and why, and the CLI exits with code 3
   (:class:`vitedge.errors.PartialArtifactError`) after the directory is committed.

Options (``options["target_options"]``): ``profile`` = (min, opt, max) batch of the optimization profile
(default :data:`DEFAULT_PROFILE`; ignored for a fixed batch), ``workspace_mb`` (builder workspace memory pool
limit, MiB; default: TensorRT's, the device's global memory), ``timing_cache`` (path of a timing cache file:
read if it exists, updated after the build; the artifact also gets its own ``timing.cache``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
import shlex
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError, ExportError, RuntimeMissingError, UsageError
from ..manifest import Artifact
from ..parity import check_batches, export_tolerance, parity_photos
from . import Target, register_target
from .base import positive_int
from .onnx_graph import write_graph
from ..errors import PartialArtifactError
from ..quantize.onnx import topological_sort_graph
from .onnx import OnnxRuntimeRunner

ONNX_FILE = "model.onnx"
ENGINE_FILE = "model.engine"
TRTEXEC_FILE = "trtexec.sh"
TIMING_CACHE_FILE = "timing.cache"
DEFAULT_PROFILE = (1, 1, 16)  # latency-oriented: kernels tuned for batch 1, engine valid up to 16
PARITY_BATCHES = (1, 3, 8)
INSTALL_HINT = "pip install 'vitedge[tensorrt]' on a machine with an NVIDIA GPU"

PRECISIONS = {"fp32": None, "fp16": None, "int8": ("static",)}

# TensorRT's ONNX parser: operators marked supported ("Y") in onnx-tensorrt's support matrix,
# https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md, revision for TensorRT 10.15
# ("supports operators in the inclusive range of opset 9 to opset 24"). Ops added late in 10.x (Attention,
# RMSNormalization, RotaryEmbedding, TensorScatter; 10.14-10.15) are left out so that a graph passing this
# check parses on every TensorRT 10.x; TensorRT 10.0's range is opset 9-20 (same document at 10.0).
SUPPORTED_OPS_SOURCE = ("https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md (TensorRT 10.15 "
                        "support matrix, minus ops added after 10.13)")
PARSER_OPSETS = (9, 20)
SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization BlackmanWindow Cast
CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND
Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU
HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max
MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round STFT ScaledTanh Scan Scatter
ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample
Where Xor
""".split())
# Quantized types TensorRT's Q/DQ accept (same document: "INT8, FP8, FP4, INT4"; UINT8 only as network I/O).
_QUANT_TYPES = frozenset({3, 17, 22})  # onnx.TensorProto.INT8, FLOAT8E4M3FN, INT4
# Inputs the parser needs as initializers / build-time constants (same document's "Restrictions" column at 10.15:
# Reduce* `axes`, CumSum `axis`). Squeeze/Unsqueeze `axes` need only be "resolvable to a constant" and TopK's `K`
# may be computed (e.g. from Shape), so those are left to the parser.
_CONST_INPUTS = {**{op: 1 for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                                     "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")},
                 "CumSum": 1}
TOPK_MAX_K = 3840  # "`K` input must be less than 3840" (TopK row)


class GraphCheckError(ExportError):
    """The ONNX graph would not parse in TensorRT (unsupported op, opset, or a parser restriction)."""


# ---------------------------------------------------------------------------------------------------------------
# What this machine has

def _import_tensorrt():
    """The ``tensorrt`` module, or None. Any import failure counts (the bindings without libnvinfer raise OSError)."""
    try:
        import tensorrt
        return tensorrt
    except Exception:  # noqa: BLE001 - ImportError, OSError (missing libnvinfer.so), RuntimeError
        return None


def runs_here() -> str | None:
    """None when TensorRT imports and PyTorch sees a CUDA GPU, else the one-line reason (what is missing)."""
    if _import_tensorrt() is None:
        return f"TensorRT is not installed ({INSTALL_HINT})"
    if not torch.cuda.is_available():
        build = ("this PyTorch is a CPU-only build" if torch.version.cuda is None
                 else "torch.cuda.is_available() is False")
        return f"no CUDA GPU is visible ({build}); TensorRT engines run on NVIDIA GPUs only"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Graph check

def check_graph(path_or_model, *, supported: frozenset[str] = SUPPORTED_OPS,
                opsets: tuple[int, int] = PARSER_OPSETS) -> dict:
    """Check that an ONNX graph is valid and would be accepted by TensorRT's ONNX parser.

    Runs ``onnx.shape_inference.infer_shapes(strict_mode=True, data_prop=True)`` and
    ``onnx.checker.check_model(full_check=True)``, then checks: the default-domain opset is in ``opsets``; no
    node uses a custom domain (e.g. ``com.microsoft`` contrib ops); every op type is in ``supported``
    (:data:`SUPPORTED_OPS`, from onnx-tensorrt's docs/operators.md); QuantizeLinear/DequantizeLinear zero points
    are constant zeros (the parser's restriction: symmetric quantization only) of a type TensorRT quantizes to
    (int8, fp8, int4: no int32 biases); inputs the parser needs as constants (Reduce* ``axes``, CumSum
    ``axis``) are constants; TopK is sorted, with K below 3840 where K is constant.

    Args:
        path_or_model: an ``.onnx`` path or an ``onnx.ModelProto``.
    Returns:
        ``{"opset", "ops": {op_type: count}, "source"}`` for the manifest.
    Raises:
        GraphCheckError (an ExportError): the first failing check, one line naming the offending ops/nodes.
    """
    import onnx

    model = onnx.load(str(path_or_model)) if isinstance(path_or_model, (str, os.PathLike)) else path_or_model
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        onnx.checker.check_model(inferred, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise GraphCheckError(f"ONNX graph fails strict shape inference / onnx.checker: "
                              f"{str(e).strip().splitlines()[0][:300]}") from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not opsets[0] <= opset <= opsets[1]:
        raise GraphCheckError(f"ONNX opset {opset} is outside TensorRT's parser range {opsets[0]}-{opsets[1]}; "
                              f"export with --opset {min(max(opset or 18, opsets[0]), opsets[1])}")
    ops: dict[str, int] = {}
    custom, unsupported = set(), set()
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    init_values = {i.name: i for i in model.graph.initializer}
    bad_zero, not_const, bad_type = [], [], set()
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
        if n.domain not in ("", "ai.onnx"):
            custom.add(f"{n.domain}.{n.op_type}")
        elif n.op_type not in supported:
            unsupported.add(n.op_type)
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2]:
            zp = n.input[2]
            if zp not in init_values or np.any(onnx.numpy_helper.to_array(init_values[zp]) != 0):
                bad_zero.append(n.name or n.output[0])
            elif init_values[zp].data_type not in _QUANT_TYPES:
                bad_type.add(onnx.helper.tensor_dtype_to_np_dtype(init_values[zp].data_type).name)
        if n.op_type == "TopK":
            if any(a.name == "sorted" and a.i == 0 for a in n.attribute):
                not_const.append(f"TopK {n.name or n.output[0]} with sorted=0 (TensorRT needs sorted=1)")
            k = init_values.get(n.input[1]) if len(n.input) > 1 else None
            if k is not None and int(onnx.numpy_helper.to_array(k).max()) >= TOPK_MAX_K:
                not_const.append(f"TopK {n.name or n.output[0]} with K >= {TOPK_MAX_K}")
        idx = _CONST_INPUTS.get(n.op_type)
        if idx is not None and len(n.input) > idx and n.input[idx] and n.input[idx] not in consts:
            not_const.append(f"{n.op_type} {n.name or n.output[0]} computes at run time an input TensorRT needs "
                             f"as an initializer")
    if custom:
        raise GraphCheckError(f"the graph uses custom-domain ops TensorRT's ONNX parser does not know: "
                              f"{', '.join(sorted(custom))}")
    if unsupported:
        raise GraphCheckError(f"ops not supported by TensorRT's ONNX parser: {', '.join(sorted(unsupported))} "
                              f"(list: {SUPPORTED_OPS_SOURCE})")
    if bad_zero:
        raise GraphCheckError(f"{len(bad_zero)} Q/DQ nodes have a non-zero or non-constant zero point (TensorRT "
                              f"needs symmetric quantization), e.g. {bad_zero[0]}")
    if bad_type:
        raise GraphCheckError(f"Q/DQ nodes quantize to {', '.join(sorted(bad_type))}; TensorRT's QuantizeLinear/"
                              f"DequantizeLinear take int8 (or fp8/int4) only (e.g. keep biases float, not int32)")
    if not_const:
        raise GraphCheckError(f"the graph breaks TensorRT's ONNX parser restrictions: {', '.join(not_const[:3])}")
    return {"opset": opset, "ops": dict(sorted(ops.items())), "source": SUPPORTED_OPS_SOURCE}


def topological_sort(path: Path) -> bool:
    """Reorder the nodes of the ONNX file at ``path`` topologically (stable), rewriting the file only if the order
    changes (:func:`vitedge.quantize.onnx.topological_sort_graph`). Returns whether it did.
    Raises GraphCheckError on a cycle."""
    import onnx

    model = onnx.load(str(path))
    try:
        changed = topological_sort_graph(model.graph)
    except ValueError as e:
        raise GraphCheckError(str(e)) from None
    if changed:
        onnx.save(model, str(path))
    return changed


# ---------------------------------------------------------------------------------------------------------------
# trtexec command line and profile

def parse_profile(text: str) -> tuple[int, int, int]:
    """``"MIN:OPT:MAX"`` (e.g. ``"1:4:16"``) -> (min, opt, max) batch sizes for the optimization profile.

    Raises UsageError unless three positive integers with min <= opt <= max."""
    parts = text.split(":")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise UsageError(f"--batch MIN:OPT:MAX needs three integers, e.g. 1:4:16, got {text!r}")
    lo, opt, hi = values
    if lo < 1 or not lo <= opt <= hi:
        raise UsageError(f"--batch {text}: need 1 <= MIN <= OPT <= MAX")
    return values


def _shape(batch: int, chw) -> str:
    return "x".join(str(d) for d in (batch, *chw))


def trtexec_command(onnx_file: str, input_name: str, chw: tuple[int, ...], profile: tuple[int, int, int] | None,
                    *, workspace_mb: int | None = None, timing_cache: str = TIMING_CACHE_FILE,
                    engine_file: str = ENGINE_FILE) -> list[str]:
    """The ``trtexec`` argument list that builds the same engine as :func:`build_engine`.

    ``profile`` None means a static input shape (no --minShapes/--optShapes/--maxShapes, which trtexec refuses
    for static inputs). Always ``--stronglyTyped``: the precision is in the ONNX graph (fp16 weights, int8 QDQ).
    """
    cmd = ["trtexec", f"--onnx={onnx_file}"]
    if profile is not None:
        for flag, b in zip(("--minShapes", "--optShapes", "--maxShapes"), profile):
            cmd.append(f"{flag}={input_name}:{_shape(b, chw)}")
    cmd.append("--stronglyTyped")
    if workspace_mb:
        cmd.append(f"--memPoolSize=workspace:{int(workspace_mb)}M")
    cmd += [f"--timingCacheFile={timing_cache}", f"--saveEngine={engine_file}"]
    return cmd


def _write_trtexec_script(directory: Path, cmd: list[str]) -> None:
    text = ("#!/bin/sh\n"
            "# Builds model.engine from model.onnx with TensorRT's trtexec (same settings as `vitedge export "
            "--target trt`).\n"
            "# Run on the machine that will run the engine: engines are specific to the GPU and TensorRT version.\n"
            "set -e\ncd \"$(dirname \"$0\")\"\n"
            f"exec {shlex.join(cmd)} \"$@\"\n")
    path = directory / TRTEXEC_FILE
    path.write_text(text)
    path.chmod(0o755)


# ---------------------------------------------------------------------------------------------------------------
# Engine build and runner (need TensorRT + CUDA)

def _trt_logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def gpu_info() -> dict:
    """``{"gpu": name, "compute_capability": "8.9"}`` of CUDA device 0 (needs CUDA)."""
    major, minor = torch.cuda.get_device_capability(0)
    return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}


def build_engine(onnx_path: Path, engine_path: Path, *, profile: tuple[int, int, int] | None,
                 workspace_mb: int | None = None, timing_cache: Path | None = None,
                 timing_cache_out: list[Path] = ()) -> dict:
    """Parse ``onnx_path`` with TensorRT's ONNX parser and build a serialized engine at ``engine_path``.

    Args:
        profile: (min, opt, max) batch for the first input's optimization profile; None for a static input.
        workspace_mb: ``IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)`` in MiB.
        timing_cache: timing cache file to start from (read if it exists).
        timing_cache_out: files to write the updated timing cache to.
    Returns:
        Manifest dict: TensorRT version, GPU name, compute capability, network flags, profile, build settings.
    Raises:
        ExportError: the parser or the builder failed (with TensorRT's first error message).
    """
    trt = _import_tensorrt()
    if trt is None:
        raise RuntimeMissingError(f"TensorRT is not installed ({INSTALL_HINT})")
    logger = _trt_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    if typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path.name}: "
                          f"{(errors[0] if errors else 'no message').splitlines()[0][:300]}")
    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    inp = network.get_input(0)
    chw = tuple(inp.shape)[1:]
    if profile is not None:
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(inp.name, *[(b, *chw) for b in profile])
        config.add_optimization_profile(opt_profile)
    cached = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cached)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT's builder failed to build the engine (see TensorRT's log above)")
    engine_path.write_bytes(bytes(serialized))
    blob = bytes(config.get_timing_cache().serialize())
    for out in timing_cache_out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, out)
    return {"tensorrt_version": trt.__version__, **gpu_info(), "network": "strongly typed" if typed else "weakly typed",
            "workspace_mb": workspace_mb, "timing_cache_reused": bool(cached)}


_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int32": torch.int32, "int64": torch.int64,
                 "int8": torch.int8, "bool": torch.bool, "uint8": torch.uint8}


class TensorRTRunner:
    """Runs a serialized engine: ``tensorrt.Runtime.deserialize_cuda_engine``, one execution context, I/O through
    torch CUDA tensors (``set_tensor_address``), ``execute_async_v3`` on a dedicated torch CUDA stream."""

    def __init__(self, engine_path: Path, output_names: list[str] | None = None, data: bytes | None = None):
        """Deserialize the engine file ``engine_path``, or the engine bytes ``data`` already read (and hashed) by
        :meth:`Artifact.read_file` (``engine_path`` then only names it in messages)."""
        trt = _import_tensorrt()
        if trt is None:
            raise RuntimeMissingError(f"TensorRT is not installed ({INSTALL_HINT})")
        self._logger = _trt_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes() if data is None else data)
        if self.engine is None:
            raise ArtifactError(f"TensorRT cannot deserialize {engine_path} (built by another TensorRT version or "
                                f"for another GPU? rebuild it with trtexec.sh or vitedge export)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if n not in self.inputs]
        named = [n for n in (output_names or []) if n in outs]
        self.outputs = named + [n for n in outs if n not in named]
        if len(self.inputs) != 1:
            raise ArtifactError(f"{engine_path} has {len(self.inputs)} inputs; vitedge engines have one")
        self.dtypes = {n: _TORCH_DTYPES[np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))).name] for n in names}
        shape = tuple(self.engine.get_tensor_shape(self.inputs[0]))
        if shape[0] == -1:
            lo, _, hi = self.engine.get_tensor_profile_shape(self.inputs[0], 0)
            self.batch_range = (int(lo[0]), int(hi[0]))
        else:
            self.batch_range = (shape[0], shape[0])
        self.stream = torch.cuda.Stream()
        self.runtime = f"tensorrt-{trt.__version__}"
        self.device = f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"  # bench JSON "device"

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """float32 (B, C, H, W) -> list of float32 outputs (manifest order). Raises UsageError for a batch outside
        the engine's optimization profile."""
        b = int(x.shape[0])
        lo, hi = self.batch_range
        if not lo <= b <= hi:
            raise UsageError(f"batch {b} is outside this engine's optimization profile ({lo}..{hi}); re-export "
                             f"with --batch MIN:OPT:MAX covering it")
        name = self.inputs[0]
        with torch.cuda.stream(self.stream):
            xin = torch.from_numpy(np.ascontiguousarray(x)).to("cuda", non_blocking=True).to(self.dtypes[name])
            if not self.context.set_input_shape(name, tuple(xin.shape)):
                raise UsageError(f"TensorRT rejected input shape {tuple(xin.shape)}")
            self.context.set_tensor_address(name, xin.data_ptr())
            outs = []
            for n in self.outputs:
                t = torch.empty(tuple(self.context.get_tensor_shape(n)), dtype=self.dtypes[n], device="cuda")
                self.context.set_tensor_address(n, t.data_ptr())
                outs.append(t)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ArtifactError("TensorRT execute_async_v3 failed (see TensorRT's log)")
            host = [t.float().cpu() for t in outs]
        self.stream.synchronize()
        return [h.numpy() for h in host]


def load(artifact: Artifact, threads: int | None = None) -> TensorRTRunner:
    """Open the artifact's engine (``threads`` is ignored: the engine runs on the GPU).

    Raises:
        ArtifactError: the artifact holds no engine (TensorRT was missing at export) or it cannot be deserialized.
        RuntimeMissingError: TensorRT is not installed.
    """
    info = artifact.manifest.get("tensorrt") or {}
    if not info.get("engine"):
        raise ArtifactError(f"{artifact.path} holds no TensorRT engine ({info.get('engine_missing', 'not built')}); "
                            f"build it with {artifact.path / TRTEXEC_FILE} or re-export on a machine with TensorRT")
    if _import_tensorrt() is None:
        raise RuntimeMissingError(f"TensorRT is not installed ({INSTALL_HINT})")
    data = artifact.read_file(info["engine"])  # read once (hashed when verified); TensorRT gets these bytes
    return TensorRTRunner(artifact.path / info["engine"], [o["name"] for o in artifact.manifest.get("outputs", [])],
                          data=data)


# ---------------------------------------------------------------------------------------------------------------
# write

def _int8_options(quantization: dict | None) -> dict:
    """quantize_int8 options TensorRT's explicit quantization needs (S8S8 symmetric, per-channel weights)."""
    q = dict(quantization or {})
    if q.get("mode", "static") != "static":
        raise UsageError("TensorRT int8 is explicit quantization (static QDQ) only; use --int8-mode static")
    if q.get("calibration") is None:
        raise UsageError("TensorRT int8 needs calibration images (--calib DIR|digits)")
    q.update(mode="static", activation_type="int8", reduce_range=False, quantize_depthwise=True, quantize_bias=False)
    return q


def _onnx_parity(model: nn.Module, onnx_path: Path, session_config: dict, photos: torch.Tensor,
                 batches: list[int], precision: str) -> dict:
    """Eager fp32 vs the ONNX graph in ONNX Runtime (CPU) at ``batches`` (first output,
    :func:`vitedge.parity.check_batches`); raises ExportError outside tolerance."""
    runner = OnnxRuntimeRunner(onnx_path, session_config=session_config)
    tol = export_tolerance(precision)  # the precision's default on photos, as export's own check
    out = {"runtime": runner.runtime, "tolerance": tol}
    out.update(check_batches(model, runner.run, photos, batches, tol, what=f"the {precision} ONNX graph for TensorRT",
                             where="in ONNX Runtime"))
    return out


def write(model: nn.Module, example: torch.Tensor, directory: Path, options: dict) -> dict:
    """Export ``model`` for TensorRT into ``directory``: ``model.onnx``, ``trtexec.sh`` and, where TensorRT and a
    CUDA GPU are present, ``model.engine`` + ``timing.cache``.

    Args:
        example: float32 (B, C, H, W); with ``options["dynamic_batch"]`` the batch is symbolic in the ONNX graph
            and the engine gets an optimization profile ``target_options["profile"]`` = (min, opt, max).
        options: as for :func:`vitedge.targets.onnx.write`, plus ``target_options`` (module docstring) and
            ``preprocessing`` (for the parity photos).
    Returns:
        The target dict for :func:`vitedge.export.export`, with ``manifest["tensorrt"]`` (engine file or None and
        why, TensorRT version, GPU, compute capability, profile, trtexec command, graph check, ONNX parity) and
        ``parity_batches`` (the batches inside the profile).
    Raises:
        UsageError: bad profile or int8 options. GraphCheckError: the graph would not parse in TensorRT.
        ExportError: the ONNX graph misses eager's outputs, or the parser/builder failed.
    """

    precision = options.get("precision", "fp32")
    topts = dict(options.get("target_options") or {})
    dynamic = options.get("dynamic_batch", True)
    profile = tuple(topts.get("profile") or DEFAULT_PROFILE) if dynamic else None
    if profile is not None:
        parse_profile(":".join(map(str, profile)))  # validates
    workspace_mb = topts.get("workspace_mb")
    if workspace_mb is not None and int(workspace_mb) < 1:
        raise UsageError(f"--workspace must be >= 1 MiB, got {workspace_mb}")
    user_cache = Path(topts["timing_cache"]).absolute() if topts.get("timing_cache") else None

    onnx_opts = dict(options)
    if precision == "int8":
        onnx_opts["quantization"] = _int8_options(options.get("quantization"))
    info = write_graph(model, example, directory, onnx_opts)  # the portable graph: no ONNX Runtime fusions
    onnx_path = directory / ONNX_FILE
    resorted = topological_sort(onnx_path)
    graph = check_graph(onnx_path)

    fixed_b = int(example.shape[0])
    if profile is None:
        batches = [fixed_b]
    else:
        batches = sorted({min(max(b, profile[0]), profile[2]) for b in PARITY_BATCHES})
    photos = parity_photos(example, options.get("preprocessing"))
    quant = info.get("quantization") or {}
    onnx_parity = _onnx_parity(model, onnx_path, quant.get("session_config") or {}, photos, batches, precision)

    chw = tuple(int(d) for d in example.shape[1:])
    in_name = options["input_names"][0]
    cache_arg = str(user_cache) if user_cache else TIMING_CACHE_FILE
    cmd = trtexec_command(ONNX_FILE, in_name, chw, profile, workspace_mb=workspace_mb, timing_cache=cache_arg)
    _write_trtexec_script(directory, cmd)
    trt_info = {"engine": None, "onnx": ONNX_FILE,
                "profile": ({in_name: {"min": [profile[0], *chw], "opt": [profile[1], *chw], "max": [profile[2], *chw]}}
                            if profile else None),
                "static_shape": None if profile else [fixed_b, *chw],
                "precision_in_graph": {"fp32": "float32 graph", "fp16": "float16 weights and compute, float32 I/O",
                                       "int8": "explicit quantization: int8 QDQ (S8S8 symmetric, per-channel weights)"}
                [precision],
                "trtexec": shlex.join(cmd), "trtexec_script": TRTEXEC_FILE, "graph_check": graph,
                "onnx_parity": onnx_parity}
    missing = runs_here()
    if missing is None:
        built = build_engine(onnx_path, directory / ENGINE_FILE, profile=profile, workspace_mb=workspace_mb,
                             timing_cache=user_cache if user_cache else None,
                             timing_cache_out=[directory / TIMING_CACHE_FILE] + ([user_cache] if user_cache else []))
        trt_info.update(built, engine=ENGINE_FILE, timing_cache=TIMING_CACHE_FILE)
        artifact = ENGINE_FILE
    else:
        trt_info.update(engine_missing=missing, tensorrt_version=None, gpu=None, compute_capability=None)
        artifact = ONNX_FILE
    export_info = dict(info["export"], nodes_resorted_topologically=resorted,
                       graph_check="TensorRT ONNX parser ops + onnx.checker(full_check) + strict shape inference: "
                                   "passed")
    return {"artifact": artifact, "backend": "tensorrt", "opset": info["opset"], "export": export_info,
            "quantization": info.get("quantization"), "parity_batches": batches, "manifest": {"tensorrt": trt_info}}


@dataclass
class TensorRTOptions:
    """``vitedge export --target trt`` flags (``options["target_options"]``; ``profile`` comes from ``--batch``)."""

    workspace_mb: int | None = field(default=None, metadata={
        "flag": "--workspace", "type": positive_int, "metavar": "MIB",
        "help": "TensorRT builder workspace memory pool limit in MiB (--target trt; default: TensorRT's)"})
    timing_cache: str | None = field(default=None, metadata={
        "flag": "--timing-cache", "metavar": "PATH",
        "help": "TensorRT timing cache file: read if it exists, updated after the build (--target trt)"})


@register_target
class TensorRTTarget(Target):
    """``--target trt``: the functions above (``write``, ``load``, ``runs_here``); without TensorRT or a GPU the
    export is partial (ONNX + trtexec.sh, no engine): ``vitedge export`` exits 3."""

    name = "trt"
    title = "TensorRT"
    precisions = PRECISIONS
    Options = TensorRTOptions
    options_noun = "TensorRT build options"
    batch_range = "a TensorRT optimization profile"
    batch_range_help = "the optimization profile's batch range (e.g. 1:4:16; 'dynamic' means 1:1:16)"
    exit_codes = {3: "no TensorRT or no CUDA GPU here: model.onnx and trtexec.sh written, no engine"}

    def batch_options(self, text: str) -> dict:
        return {"profile": parse_profile(text)}

    def after_export(self, art: Artifact, precision: str) -> None:
        trt = art.manifest.get("tensorrt") or {}
        if trt.get("engine"):
            return
        par = trt["onnx_parity"]
        worst = max(v["max_abs"] for k, v in par.items() if k.startswith("batch_"))
        cos = min(v["cosine"] for k, v in par.items() if k.startswith("batch_"))
        print(f"wrote {art.path / trt['onnx']} ({precision}, {art.size_mb:.2f} MB, "
              f"{art.manifest['export']['method']}), the graph TensorRT parses: TensorRT op check passed; parity in "
              f"{par['runtime']} vs fp32 eager on photos: max abs diff {worst:.2e}, min cosine {cos:.6f}; "
              f"no engine built")
        raise PartialArtifactError(f"{trt['engine_missing']}; wrote {art.path / trt['onnx']} and the trtexec command "
                                   f"in {art.path / trt['trtexec_script']}")
