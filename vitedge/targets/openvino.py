"""OpenVINO target: OpenVINO IR (``model.xml`` graph + ``model.bin`` raw weights) run by OpenVINO's CPU plugin.

Export path: the portable ONNX graph (:func:`vitedge.targets.onnx_graph.write_graph`, fp32, symbolic batch, constants
folded) -> :func:`rewrite_attention` (the exporter's attention lowering put in the form the CPU plugin fuses whole;
counts in the manifest's ``export.graph_rewrites``; the node counts of the ONNX graph converted in ``export.graph``)
-> ``openvino.convert_model`` (OVC's ONNX frontend and its graph fusions: Gelu,
ScaledDotProductAttention, ...) -> ``openvino.save_model(..., compress_to_fp16=False)``. The ONNX file is a temporary
and is not part of the artifact.

Precisions (all run by the CPU plugin; the compile config is stored in the manifest and applied at load, so the
precision the artifact was validated at is the one it runs at):

* ``fp32``: ``INFERENCE_PRECISION_HINT=f32``. OpenVINO's own CPU default is bf16 on CPUs with AVX512_BF16 or AMX
  (OpenVINO docs, "Precision control"), so an IR opened by hand with no config would not run in fp32 there.
* ``bf16``: the same fp32 IR compiled with ``INFERENCE_PRECISION_HINT=bf16``; export refuses it on a CPU whose
  plugin does not report ``BF16`` in ``OPTIMIZATION_CAPABILITIES`` (it would silently run in fp32).
* ``int8``: NNCF post-training quantization of the OpenVINO model (``nncf.quantize``: FakeQuantize nodes whose
  ranges come from calibration images; the CPU plugin then runs int8 kernels). Recipe per family in
  :func:`default_int8_recipe`.

OpenVINO (at ``import openvino`` and in ``convert_model``) and NNCF send usage telemetry unless the user opted out
(``opt_in_out --opt_out``) or runs in CI, and count uses in ``~/intel``; vitedge imports and calls them with it
off (:func:`without_usage_telemetry`).

Safety: the IR is XML + raw little-endian weights (nothing is unpickled or executed); the manifest's SHA-256 of
both files is checked before loading (``vitedge.manifest.read_manifest``), the weights file must be one the
manifest lists, and an XML above :data:`MAX_XML_BYTES`, or one that is not IR (:func:`check_ir_xml`: another
frontend's format such as ONNX renamed ``model.xml``, a DOCTYPE/ENTITY declaration), is refused before OpenVINO
sees it. The C++ runner (cpp/src/openvino_backend.cpp) applies the same rules and the same config allow-list.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ExportError, RuntimeMissingError, UsageError, first_line
from ..machine import default_threads
from ..manifest import Artifact
from . import Target, register_target
from .onnx_graph import FILENAME as ONNX_FILE
from .onnx_graph import stored_graph, write_graph
from .speed import SPEED_BUDGET_S, int8_vs_fp32
from .. import progress
from ..models.registry import family_recipe
from ..safety import check_relative_name, is_inside

FILENAME = "model.xml"
WEIGHTS = "model.bin"
MAX_XML_BYTES = 64 * 2**20  # the graph of a ViT-B IR is a few hundred KiB; weights live in the .bin
# Batch sizes a runner compiles a static-shape model for (each holds its own compiled kernels and packed weights);
# further batch sizes share one compile of the dynamic-batch IR.
MAX_STATIC_BATCHES = 4
INSTALL = "pip install 'vitedge[openvino]'"

PRECISIONS = {"fp32": None, "bf16": None, "int8": ("static",)}

# Compile configs by precision (OpenVINO CPU plugin properties). LATENCY: one request at a time, all threads on it.
CONFIGS = {"fp32": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"},
           "bf16": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16"},
           # int8 kernels are picked from the FakeQuantize nodes whatever the hint; f32 keeps the ops left in float
           # (LayerNorm, Softmax, GELU, residual Adds) in f32 on every CPU: with no hint they ran in bf16 on an
           # AVX512_BF16 CPU. write() sets the hint for int8 to default_int8_float_precision() (bf16 where the CPU
           # has it: faster there) unless --int8-float-precision says otherwise; f32 here is for old manifests.
           "int8": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}}
# The compile-config keys and values a manifest may carry (a manifest is untrusted input).
_ALLOWED_CONFIG = {"PERFORMANCE_HINT": {"LATENCY", "THROUGHPUT"},
                   "INFERENCE_PRECISION_HINT": {"f32", "bf16", "f16"},
                   "EXECUTION_MODE_HINT": {"PERFORMANCE", "ACCURACY"}}

# int8 recipes per zoo family (recipe "openvino_int8" of the family spec, vitedge/models/families/; the default in
# vitedge.models.registry.DEFAULT_RECIPES): nncf.quantize(model_type, preset, SmoothQuant on/off, ignored op types).
# NNCF's recipe for transformers (ModelType.TRANSFORMER, "Post-training Quantization" guide): its ignored
# patterns keep LayerNorm (MVN), Softmax, GELU and the residual Adds in float; PERFORMANCE = symmetric int8
# activations and weights (the fast one on CPUs with VNNI). SmoothQuant (on by default for TRANSFORMER; it moves
# activation outliers into the next MatMul's weights, meant for LLMs) is turned off.
# Measured with digits checkpoints at 64x64, 128 calibration images from the digits train split, min cosine vs
# fp32 eager on the bundled photos (export gate: >= 0.99) and top-1 on the 450 held-out digits:
# * DeiT-Ti: SmoothQuant on 0.9921, off 0.9995 (same int8 layers: 50 FullyConnected + 12 attention subgraphs);
#   0.0 points of top-1 lost either way.
# * LeViT-128S: 0.9998 on or off (70 Convolution, 11 MatMul, 1 FullyConnected in int8), 0.0 points lost.
# * MobileViT-XS: everything quantized gave 0.956 (0.959 with SmoothQuant, 0.954 with model_type None, 0.939
#   with MIXED, 0.948 with global min/max ranges); keeping the depthwise convolutions in float 0.985 (0.993 with
#   global min/max ranges); keeping every convolution in float 0.998 (int8: 37 FullyConnected + 9 attention
#   subgraphs). Top-1 moved by at most 0.22 points in every variant, so the photo gate decides: MobileViT keeps
#   its convolutions in float. Re-measured 2026-12-07 (AMD EPYC, avx512_vnni + avx512_bf16, no AMX; 256x256,
#   2 threads, p50 batch 1 / 8, interleaved): convolutions float 9.96 / 79.2 ms, every convolution int8 9.09 / 73.5,
#   depthwise float + the rest int8 8.91 / 77.8, plain bf16 10.54 / 81.9. benchmarks/profile_openvino.py says why
#   int8 convolutions gain so little on this CPU: the 21 pointwise convolutions take 3.33 ms in int8 vs 3.56 in
#   bf16 (small channel counts, memory-bound), the 7 depthwise ones 1.70 vs 1.40 (int8 slower), the 9 attention
#   subgraphs 1.15 vs 0.98. With the digits checkpoint at 64x64 every-convolution int8 held cosine 0.991 on 128
#   held-out digits (0 points lost) and depthwise-float 0.987 (refused): too near the 0.99 gate for a default
#   that gains at most 9%.
# Activation ranges: global min/max ("minmax"), not NNCF's default mean of per-image min/max: calibration is on
# digits and the gate on photos, and the per-image mean clipped the photos' activations (DeiT-Ti digits
# checkpoint at 32x32: 0.988, below the gate, vs 0.998; at 64x64 DeiT-Ti 0.9995 -> 0.99995, LeViT 0.9998 either
# way, MobileViT with float convolutions 0.998 -> 0.9998).
_PRESETS = ("performance", "mixed")
# Activation range estimators (``method``, the CLI's --calib-method) -> NNCF's RangeEstimatorParametersSet name.
# minmax: global min/max over the calibration images; mean_minmax (NNCF's own default): the mean over images of
# each image's min/max; percentile: the mean over images of each image's 1e-4 / 1 - 1e-4 quantiles.
_METHODS = {"minmax": "MINMAX", "mean_minmax": "MEAN_MINMAX", "percentile": "MEAN_QUANTILE"}


def default_int8_mode(family: str | None) -> str:
    """The int8 mode of ``vitedge export --target openvino --precision int8``: always "static" (calibrated)."""
    return "static"


def default_int8_recipe(family: str | None) -> dict:
    """The NNCF options this target uses for a zoo ``family`` (None: a model outside the zoo), a copy:
    ``{"model_type": "transformer" | None, "preset": "performance" | "mixed", "smooth_quant": bool,
    "ignored_types": (OpenVINO op types kept in float...), "method": activation range estimator}``."""
    r = family_recipe(family, "openvino_int8")
    r["ignored_types"] = tuple(r["ignored_types"])
    return r


def _import_ov():
    """``import openvino`` with its usage telemetry off (the import itself reports an event; see
    :func:`without_usage_telemetry`). Raises RuntimeMissingError if it is not installed."""
    try:
        with without_usage_telemetry():
            import openvino as ov
    except ImportError as e:
        raise RuntimeMissingError(f"openvino is not installed ({INSTALL}): {e}") from None
    return ov


@contextlib.contextmanager
def without_usage_telemetry():
    """Import / run OpenVINO and NNCF with their usage telemetry off. Both ask ``openvino_telemetry`` for consent,
    which is given by default (no consent file) and declined in CI jobs (``CI=true``); so ``CI`` is ``true`` for the
    duration of the block. The consent is decided when the telemetry object is (re)initialised: at the first
    ``import openvino`` / ``import nncf`` and at each ``convert_model``, all of which vitedge runs inside this.
    (Process-wide environment change: not for concurrent use from several threads.)"""
    old = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = old


@lru_cache(maxsize=1)
def cpu_capabilities() -> tuple[str, ...]:
    """The CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (e.g. ``("BF16", "FP32", "INT8", ...)``); empty if absent."""
    ov = _import_ov()
    core = ov.Core()
    if "CPU" not in core.available_devices:
        return ()
    return tuple(str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def runs_here() -> str | None:
    """None when openvino imports and its CPU plugin is present, else the reason."""
    try:
        ov = _import_ov()
    except RuntimeMissingError:
        return f"openvino is not installed ({INSTALL})"
    try:
        if "CPU" not in ov.Core().available_devices:
            return "OpenVINO has no CPU plugin here"
    except Exception as e:  # noqa: BLE001 - plugin discovery errors come back as RuntimeError
        return f"OpenVINO cannot list its devices: {first_line(e, 200)}"
    return None


def _swap_last_two(shape) -> list | None:
    """``shape`` with its last two dimensions swapped, or None unless every dimension is an int or a named symbol
    (an unknown dimension cannot be proven equal to another)."""
    if shape is None or len(shape) < 2:
        return None
    dims = list(shape)
    if any(not isinstance(d, int) and getattr(d, "value", None) is None for d in dims):
        return None
    return [*dims[:-2], dims[-1], dims[-2]]


def _scalar(value) -> "np.ndarray | None":
    """The value of a scalar (one-element) constant or initializer ``value`` (an onnx_ir Value), else None."""
    import onnx_ir as ir

    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    if tensor is None:
        return None
    array = tensor.numpy()
    return array.reshape(()) if array.size == 1 else None


def _attention_rules() -> tuple:
    """The two rules of :func:`rewrite_attention` as onnxscript rewrite rules (``onnxscript.rewriter.pattern``):
    (key_transpose, attention_scale). The matcher requires the matched values other than the rule's output to be read
    only inside the match (no graph output among them); the shape and constant conditions are the ``check``
    callbacks."""
    import onnx_ir as ir
    from onnxscript.rewriter import pattern

    def key_target(op, key, shape_3d, shape_out):
        key_3d = op.Reshape(key, shape_3d, _outputs=["key_3d"])
        return op.Reshape(op.Transpose(key_3d, perm=[0, 2, 1]), shape_out, _outputs=["key_t"])

    def key_check(context, key, key_3d, key_t, **_) -> bool:
        want, mid, out = _swap_last_two(key.shape), key_3d.shape, key_t.shape
        return (want is not None and out is not None and mid is not None and len(mid) == 3 and list(out) == want
                and list(mid)[1:] == list(key.shape)[-2:] and not key_t.is_graph_output())

    def key_replacement(op, key, **_):
        rank = len(key.shape)
        return op.Transpose(key, perm=[*range(rank - 2), rank - 1, rank - 2])

    def scale_target(op, a, scale_a, b, scale_b):
        return op.MatMul(op.Mul(a, scale_a), op.Mul(b, scale_b), _outputs=["scores"])

    def scale_check(context, scale_a, scale_b, **_) -> bool:
        return _scalar(scale_a) is not None and _scalar(scale_b) is not None

    def scale_replacement(op, a, scale_a, b, scale_b, scores):
        ca, cb = _scalar(scale_a), _scalar(scale_b)
        scale = op.initializer(ir.tensor(np.asarray(ca * cb, dtype=ca.dtype)), name=f"{scores.name}_scale")
        return op.Mul(op.MatMul(a, b), scale)

    return (pattern.RewriteRule(key_target, key_replacement, key_check, name="key_transpose"),
            pattern.RewriteRule(scale_target, scale_replacement, scale_check, name="attention_scale"))


def rewrite_attention(model) -> dict[str, int]:
    """Rewrite the exporter's attention into the form OpenVINO's CPU plugin fuses (in place; returns match counts).

    ``torch.onnx`` lowers ``scaled_dot_product_attention`` (torchlib, opset 18) to ``Mul(q, sqrt(s)) @
    Mul(K^T, sqrt(s))`` with ``K^T = Reshape(Transpose(Reshape(k, (-1, N, D)), (0, 2, 1)), (..., D, N))``. The CPU
    plugin's MHA fusion (snippets) does not take that 3-D detour into the fused kernel: measured on DeiT-Ti at
    224x224 it left 2 Transposes and 2 Multiplies per block outside the MHA kernel (vit-pytorch's explicit
    ``q @ k.transpose(-1, -2) * s``, the OpenVINO peer in ``benchmarks/compare.py``, leaves 1 + 1). Rules
    (onnxscript pattern rewrite rules, :func:`_attention_rules`, applied in this order):

    * ``key_transpose``: ``Reshape -> Transpose(0, 2, 1) -> Reshape`` whose output is the input with its last two
      dimensions swapped (checked on the value shapes, batch symbolic) -> one ``Transpose`` of the last two;
    * ``attention_scale``: ``MatMul(Mul(a, c1), Mul(b, c2))`` with scalar constants (either side of each ``Mul``)
      -> ``Mul(MatMul(a, b), c1*c2)`` (the order vit-pytorch writes; ``sqrt(s)**2`` rounds differently from ``s`` by
      about 1 ulp).

    Measured side by side (fp32, batch 1, 2 threads, p50, Xeon with AMX, 2026-12-03): DeiT-Ti 12.59 -> 12.14 ms,
    MobileViT-XS 12.63 -> 12.39 ms, LeViT-128S 4.59 -> 4.48 ms; int8 (NNCF) unchanged (5.27 / 5.23 ms on DeiT-Ti).

    ``model``: an ``onnx_ir.Model`` with the exporter's value shapes. Works on any family; a graph without the
    patterns (e.g. the legacy exporter's, without shapes) is left as it is.
    """
    import onnx_ir.passes.common as common_passes
    from onnxscript.rewriter import pattern

    key_transpose, attention_scale = _attention_rules()
    counts = {"key_transpose": pattern.RewriteRuleSet([key_transpose]).apply_to_model(model),
              "attention_scale": pattern.RewriteRuleSet([attention_scale], commute=True).apply_to_model(model)}
    common_passes.RemoveUnusedNodesPass()(model)
    return counts


def _rewrite_onnx_file(path: Path) -> dict[str, int]:
    """:func:`rewrite_attention` on the ONNX file ``path``, rewritten in place when anything matched. ONNX shape
    inference with data propagation first gives the values inside the exporter's attention lowering their shapes
    (the exporter records none there)."""
    import onnx
    import onnx_ir as ir

    model = ir.from_proto(onnx.shape_inference.infer_shapes(onnx.load(str(path)), data_prop=True))
    counts = rewrite_attention(model)
    if any(counts.values()):
        ir.save(model, str(path))
    return {k: v for k, v in counts.items() if v}


def _op_counts(model) -> dict[str, int]:
    ops: dict[str, int] = {}
    for op in model.get_ordered_ops():
        ops[op.get_type_name()] = ops.get(op.get_type_name(), 0) + 1
    return dict(sorted(ops.items()))


def fake_quantize_summary(model) -> dict:
    """Number of FakeQuantize nodes of an OpenVINO model and the op types their outputs feed (counts)."""
    fq = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    feeds: dict[str, int] = {}
    for op in fq:
        for target in op.output(0).get_target_inputs():
            name = target.get_node().get_type_name()
            feeds[name] = feeds.get(name, 0) + 1
    return {"fake_quantize_nodes": len(fq), "fake_quantize_feeds": dict(sorted(feeds.items()))}


def int8_layers(compiled) -> dict[str, int]:
    """Layers of a compiled model (``openvino.CompiledModel``) that the CPU plugin runs in int8 (runtime precision
    i8/u8), by its layer type (e.g. ``{"FullyConnected": 50, "Subgraph": 12}``); constants are not counted.
    Depends on the CPU it was compiled on."""
    out: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        kind, prec = rt["layerType"].astype(str), rt["runtimePrecision"].astype(str)
        if prec in ("i8", "u8") and kind not in ("Const", "Reorder", "Reshape", "Transpose", "Input", "Output"):
            out[kind] = out.get(kind, 0) + 1
    return dict(sorted(out.items()))


def left_weight_matmuls(model) -> list[str]:
    """Names of the MatMul nodes of an OpenVINO model whose constant operand is the LEFT one (``W @ x``, e.g. the
    talking-heads mixing of CaiT, (g, h) @ (B, h, N*N), or DeepViT's re-attention). OpenVINO 2026.4's CPU plugin
    (constraints.txt) could not compile CaiT's once NNCF 3.4 had quantized them (``Check 'any_of(scale.size(), OC,
    1U)' failed`` in ``dnnl_postops_composer.cpp``), so int8 keeps them in float; they are the small (heads x
    heads) mixings, a fraction of a percent of the FLOPs."""
    def is_constant(node) -> bool:  # a Constant, or shape ops / conversions of constants only
        kind = node.get_type_name()
        if kind in ("Convert", "Transpose", "Reshape", "Unsqueeze", "Squeeze"):
            return all(is_constant(i.get_source_output().get_node()) for i in node.inputs())
        return kind == "Constant"
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"
            and is_constant(op.input(0).get_source_output().get_node())
            and not is_constant(op.input(1).get_source_output().get_node())]


def _calibration_items(calib: np.ndarray, batch: int | None) -> list[np.ndarray]:
    """Calibration images as NNCF data items: one image each for a dynamic batch, else chunks of the fixed batch
    (the last one filled by repeating images)."""
    if batch is None:
        return [calib[i:i + 1] for i in range(len(calib))]
    items = []
    for i in range(0, len(calib), batch):
        chunk = calib[i:i + batch]
        if len(chunk) < batch:
            chunk = chunk[np.arange(batch) % len(chunk)]
        items.append(np.ascontiguousarray(chunk))
    return items


def quantize_int8(ov_model, calibration: np.ndarray | None, chw: tuple[int, int, int], *, batch: int | None = None,
                  family: str | None = None, model_type: str | None = "default", preset: str | None = None,
                  smooth_quant: bool | None = None, ignored_types: tuple[str, ...] | None = None,
                  method: str | None = None) -> tuple[object, dict]:
    """NNCF post-training int8 of an OpenVINO model: returns (quantized ``openvino.Model``, manifest info).

    Args:
        ov_model: fp32 ``openvino.Model`` (from ``convert_model``), float32 (B, C, H, W) -> logits.
        calibration: float32 (N, C, H, W) preprocessed images (e.g. the digits TRAIN split); all N are used
            (``subset_size=N``).
        chw: the model's (C, H, W).
        batch: the model's fixed batch, or None for a dynamic batch (one image per calibration item).
        family: zoo family, for :func:`default_int8_recipe`; the keyword arguments below override it.
        model_type: "transformer" (``nncf.ModelType.TRANSFORMER``) or None (NNCF's generic patterns).
        preset: "performance" (symmetric activations) or "mixed" (asymmetric activations).
        smooth_quant: apply NNCF's SmoothQuant to MatMuls (its TRANSFORMER default) or not (alpha -1).
        ignored_types: OpenVINO op types to keep in float (``nncf.IgnoredScope(types=...)``).
        method: activation range estimator (:data:`_METHODS`): "minmax" (global min/max over the calibration
            items), "mean_minmax" (NNCF's default: mean of each item's min/max) or "percentile" (mean of each
            item's 1e-4 / 1 - 1e-4 quantiles); None: the family recipe's.
    Recipe: NNCF "Post-training Quantization" guide (``nncf.quantize`` with ``nncf.Dataset``; ``model_type=
    nncf.ModelType.TRANSFORMER`` for transformer models).
    Raises:
        UsageError: no calibration images, images whose (C, H, W) differs from the model's, an unknown preset or
            method. RuntimeMissingError: nncf is not installed.
    """
    if calibration is None or len(calibration) == 0:
        raise UsageError("OpenVINO int8 (NNCF post-training quantization) needs calibration images")
    calib = np.ascontiguousarray(calibration, dtype=np.float32)
    if calib.ndim != 4 or tuple(calib.shape[1:]) != tuple(chw):
        raise UsageError(f"calibration images are {tuple(calib.shape[1:])}, the model takes {tuple(chw)}")
    recipe = default_int8_recipe(family)
    if model_type != "default":
        recipe["model_type"] = model_type
    if preset is not None:
        recipe["preset"] = preset
    if smooth_quant is not None:
        recipe["smooth_quant"] = bool(smooth_quant)
    if ignored_types is not None:
        recipe["ignored_types"] = tuple(ignored_types)
    if recipe["preset"] not in _PRESETS:
        raise UsageError(f"unknown NNCF preset {recipe['preset']!r} (known: {', '.join(_PRESETS)})")
    if recipe["model_type"] not in ("transformer", None):
        raise UsageError(f"unknown NNCF model type {recipe['model_type']!r} (known: transformer, or None)")
    if method is not None:
        recipe["method"] = method
    if recipe["method"] not in _METHODS:
        raise UsageError(f"--calib-method {recipe['method']} is not available for --target openvino (NNCF range "
                         f"estimators: {', '.join(_METHODS)})")
    with without_usage_telemetry():
        try:
            import nncf
            from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                               AdvancedSmoothQuantParameters)
            from nncf.quantization.range_estimator import RangeEstimatorParametersSet
        except ImportError as e:
            raise RuntimeMissingError(f"nncf is not installed ({INSTALL}): {e}") from None
        items = _calibration_items(calib, batch)
        kwargs = {"preset": nncf.QuantizationPreset.PERFORMANCE if recipe["preset"] == "performance"
                  else nncf.QuantizationPreset.MIXED, "subset_size": len(items),
                  "model_type": nncf.ModelType.TRANSFORMER if recipe["model_type"] == "transformer" else None}
        left = left_weight_matmuls(ov_model)
        if recipe["ignored_types"] or left:
            kwargs["ignored_scope"] = nncf.IgnoredScope(types=list(recipe["ignored_types"]), names=left,
                                                        validate=False)
        advanced = {}
        if not recipe["smooth_quant"]:  # a negative alpha turns SmoothQuant off (AdvancedSmoothQuantParameters)
            advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=-1)
        if recipe["method"] != "mean_minmax":  # NNCF's default needs no parameter
            advanced["activations_range_estimator_params"] = getattr(RangeEstimatorParametersSet,
                                                                     _METHODS[recipe["method"]])
        if advanced:
            kwargs["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
        level = logging.getLogger("nncf").level
        nncf.set_log_level(logging.ERROR)
        progress.stage(f"quantizing to int8 with NNCF (calibrating on {len(items)} images)")
        try:  # NNCF draws rich progress bars on stdout; a CLI's stdout is for its own result lines
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                quantized = nncf.quantize(ov_model, nncf.Dataset(items), **kwargs)
        finally:
            nncf.set_log_level(level or logging.INFO)
    info = {"mode": "static", "tool": f"nncf {nncf.__version__}", "algorithm": "nncf.quantize (post-training)",
            "model_type": recipe["model_type"], "preset": recipe["preset"], "smooth_quant": recipe["smooth_quant"],
            "scheme": ("symmetric" if recipe["preset"] == "performance" else "asymmetric") + " int8 activations, "
                      "symmetric per-channel int8 weights",
            "method": recipe["method"], "range_estimator": f"activations: RangeEstimatorParametersSet."
                                                              f"{_METHODS[recipe['method']]}; weights: min/max",
            "ignored_types": list(recipe["ignored_types"]), "float_left_weight_matmuls": len(left),
            "subset_size": len(items),
            "calibration_images": int(len(calib)), **fake_quantize_summary(quantized)}
    if info["fake_quantize_nodes"] == 0:
        raise ExportError("NNCF inserted no FakeQuantize node: the int8 artifact would run in float")
    return quantized, info


def default_int8_float_precision() -> str:
    """The precision an int8 artifact's float ops (LayerNorm, Softmax, GELU, residual Adds) run in by default:
    ``"bf16"`` where this CPU's OpenVINO plugin reports ``BF16`` (AVX512_BF16 or AMX), else ``"f32"``.

    bf16 is what OpenVINO itself picks on such CPUs for a model opened with no config, and it was the faster variant
    in the committed ``benchmarks/compare.py`` run of 2026-12-03 (a Xeon with AMX) on all three presets; the
    export's parity gate measures the artifact as stored.
    ``target_options={"int8_float_precision": "f32"}`` (``--int8-float-precision f32``) keeps them in f32.
    Raises:
        RuntimeMissingError: openvino is not installed.
    """
    return "bf16" if "BF16" in cpu_capabilities() else "f32"


def write(model: "torch.nn.Module", example: "torch.Tensor", directory: Path, options: dict) -> dict:
    """Export ``model`` to ``directory/model.xml`` + ``model.bin`` (OpenVINO IR).

    options: input_names, output_names, dynamic_batch, opset, precision (fp32 | bf16 | int8), spec (its family
    picks the int8 recipe) and, for int8, quantization = {"calibration": float32 (N, C, H, W) array, "method":
    "minmax" | "mean_minmax" | "percentile", "model_type", "preset", "smooth_quant", "ignored_types": overrides of
    the family recipe}; target_options = {"int8_float_precision": "f32" | "bf16"}: the precision of the ops an int8
    artifact keeps in float (LayerNorm, Softmax, GELU, ...); default :func:`default_int8_float_precision` (bf16
    where the CPU has it: faster there; the parity gate checks the result either way).
    Raises:
        UsageError: bf16 on a CPU without BF16 support; int8 without calibration images or with bad options.
        RuntimeMissingError: openvino (or, for int8, nncf) is not installed.
    Exporter/converter failures propagate (the export driver reports them in one line).
    """

    ov = _import_ov()
    precision = options.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise UsageError(f"target openvino cannot produce {precision} (it does: {', '.join(PRECISIONS)})")
    config = dict(CONFIGS[precision])
    topts = dict(options.get("target_options") or {})
    unknown = set(topts) - {"int8_float_precision"}
    if unknown:
        raise UsageError(f"unknown openvino target option(s) {', '.join(sorted(unknown))} (known: "
                         "int8_float_precision)")
    float_prec = topts.get("int8_float_precision")
    if float_prec is not None:
        if precision != "int8" or float_prec not in ("f32", "bf16"):
            raise UsageError(f"int8_float_precision={float_prec!r}: 'f32' or 'bf16', for --precision int8 only")
        config["INFERENCE_PRECISION_HINT"] = float_prec
    elif precision == "int8":  # the default: the faster float precision this CPU has (parity gates it either way)
        config["INFERENCE_PRECISION_HINT"] = default_int8_float_precision()
    if config.get("INFERENCE_PRECISION_HINT") == "bf16" and "BF16" not in cpu_capabilities():
        raise UsageError("this CPU has no bf16 support in OpenVINO (its CPU plugin does not report BF16: needs "
                         "AVX512_BF16 or AMX); a bf16 artifact would run in fp32 here")
    dynamic = options.get("dynamic_batch", True)
    tmp = directory / "_onnx"
    tmp.mkdir()
    try:
        onnx_info = write_graph(model, example, tmp, {**options, "precision": "fp32", "quantization": None})
        try:
            rewrites = _rewrite_onnx_file(tmp / ONNX_FILE)
        except Exception as e:  # noqa: BLE001 - an optional speed-up: convert the exporter's graph, say why
            rewrites = {"skipped": f"{type(e).__name__}: {first_line(e)}"}
        graph = stored_graph(tmp / ONNX_FILE, onnx_info["export"]["graph"], file=None)  # what convert_model reads
        with without_usage_telemetry(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ov_model = ov.convert_model(str(tmp / ONNX_FILE))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    param = ov_model.inputs[0]
    shape = param.get_partial_shape()
    if dynamic and shape.rank.is_static and shape[0].is_static:  # keep the batch dimension dynamic (-1)
        ov_model.reshape({param: ov.PartialShape([-1, *[d.get_length() for d in list(shape)[1:]]])})
    quant = None
    if precision == "int8":
        fp32_model = ov_model.clone()  # the int8 export is timed against it (speed_vs_fp32)
        q = dict(options.get("quantization") or {})
        family = (options.get("spec") or {}).get("family")
        overrides = {k: q[k] for k in ("model_type", "preset", "smooth_quant", "ignored_types") if k in q}
        ov_model, quant = quantize_int8(ov_model, q.get("calibration"), tuple(example.shape[1:]),
                                        batch=None if dynamic else int(example.shape[0]), family=family,
                                        method=q.get("method"), **overrides)
    ov.save_model(ov_model, str(directory / FILENAME), compress_to_fp16=False)
    saved = ov.Core().read_model(str(directory / FILENAME), str(directory / WEIGHTS))
    pshape = saved.inputs[0].get_partial_shape()
    if quant is not None:  # what the CPU plugin of this machine really runs in int8 (differs between CPUs)
        quant["int8_layers_at_export"] = int8_layers(ov.Core().compile_model(saved, "CPU", config))
        progress.stage("timing int8 against fp32 on OpenVINO (batch 1)")
        try:
            speed = speed_vs_fp32(fp32_model, saved, config, tuple(example.shape[1:]))
        except Exception as e:  # noqa: BLE001 - a failed timing must not cost the export; parity runs next
            speed = {"skipped": f"{type(e).__name__}: {first_line(e, 200)}"}
        if "speed_vs_fp32" in speed:
            quant["speed_vs_fp32"] = speed["speed_vs_fp32"]
        quant["speed"] = speed
    info = {"method": f"{onnx_info['export']['method']} -> openvino.convert_model -> "
                      "openvino.save_model(compress_to_fp16=False)",
            "onnx": {k: v for k, v in onnx_info["export"].items() if k not in ("ops", "graph")},
            "graph_rewrites": rewrites, "graph": graph, "input_shape": str(pshape), "ops": _op_counts(saved)}
    return {"artifact": FILENAME, "backend": "openvino", "export": info, "quantization": quant,
            "manifest": {"openvino": {"config": config, "weights": WEIGHTS,
                                      "device": "CPU", "version": ov.__version__}}}


def speed_vs_fp32(fp32_model, int8_model, int8_config: dict, input_shape: tuple[int, ...], *,
                  threads: int | None = None, budget_s: float = SPEED_BUDGET_S) -> dict:
    """Time an int8 OpenVINO model against the fp32 model it was quantized from, on this CPU as the runner runs
    them: each compiled for a static batch of 1 (:class:`OpenVINORunner` does the same), one stream, ``threads``
    inference threads (default :func:`vitedge.machine.default_threads`); fp32 with :data:`CONFIGS` ["fp32"], int8
    with ``int8_config`` (its float ops in bf16 where that is the artifact's hint). About ``budget_s`` seconds of
    alternating rounds (:func:`vitedge.targets.speed.int8_vs_fp32`).

    ``fp32_model``, ``int8_model``: ``openvino.Model`` (not modified; each is cloned and reshaped);
    ``input_shape``: (C, H, W); the input is a seeded standard-normal float32 (1, C, H, W).
    Returns the manifest's ``quantization.speed`` block (:func:`~vitedge.targets.speed.int8_vs_fp32`).
    Raises: OpenVINO's errors when a model does not compile.
    """
    ov = _import_ov()
    threads = int(threads or default_threads())
    x = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
    core = ov.Core()
    calls = []
    for model, config in ((fp32_model, CONFIGS["fp32"]), (int8_model, int8_config)):
        model = model.clone()
        model.reshape({model.inputs[0]: ov.PartialShape([1, *input_shape])})
        compiled = core.compile_model(model, "CPU", {**config, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1})
        request = compiled.create_infer_request()
        calls.append(lambda request=request: request.infer({0: x}, share_inputs=False, share_outputs=True))
    return int8_vs_fp32(*calls, threads=threads, budget_s=budget_s,
                        runtime=f"openvino-{ov.__version__.split('-')[0]} CPU")


def check_ir_xml(data: bytes, where: str) -> None:
    """Refuse ``data`` unless it is an OpenVINO IR graph (XML), before OpenVINO reads it: ``Core.read_model`` takes
    any format a frontend reads (ONNX, TensorFlow, PaddlePaddle, ...), and an ONNX file may name external data by
    path. Accepted: an optional UTF-8 byte order mark, then only whitespace, one XML declaration (``<?xml ...?>``)
    and comments before the root element, which must be ``<net>``; no NUL byte anywhere and no ``<!DOCTYPE`` or
    ``<!ENTITY`` anywhere (no document type definition, no entity expansion). The C++ runner applies the same rule
    (cpp/src/artifact_io.cpp ``check_openvino_ir``), so both refuse the same files.

    ``data``: the file's bytes; ``where``: its path, for the message.
    Raises:
        ArtifactError: one line saying why the bytes are not IR.
    """
    not_ir = f"OpenVINO IR {where} is not an OpenVINO IR graph: "
    if b"\x00" in data:
        raise ArtifactError(not_ir + "it holds a NUL byte (an IR graph is XML text; other model formats are refused)")
    lower = data.lower()
    if b"<!doctype" in lower or b"<!entity" in lower:
        raise ArtifactError(not_ir + "it holds a DOCTYPE or ENTITY declaration (refused: no entity expansion)")
    i = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    first = True
    while i < len(data):
        if data[i:i + 1] in (b" ", b"\t", b"\r", b"\n"):
            i += 1
            continue
        if first and data.startswith(b"<?xml", i) and data[i + 5:i + 6] in (b" ", b"\t", b"\r", b"\n", b"?"):
            end = data.find(b"?>", i)
            if end < 0:
                raise ArtifactError(not_ir + "its XML declaration is not closed")
            i = end + 2
        elif data.startswith(b"<!--", i):
            end = data.find(b"-->", i + 4)
            if end < 0:
                raise ArtifactError(not_ir + "a comment before its root element is not closed")
            i = end + 3
        else:
            break
        first = False
    if not (data.startswith(b"<net", i) and data[i + 4:i + 5] in (b" ", b"\t", b"\r", b"\n", b">", b"/")):
        raise ArtifactError(not_ir + "its root element is not <net> (an OpenVINO artifact's graph must be IR XML; "
                            "other formats, e.g. ONNX, are refused)")


def _check_config(config, where: str) -> dict:
    if not isinstance(config, dict):
        raise ArtifactError(f"{where}: openvino config is not a mapping")
    for key, value in config.items():
        if key not in _ALLOWED_CONFIG or not isinstance(value, str) or value not in _ALLOWED_CONFIG[key]:
            raise ArtifactError(f"{where}: openvino config {key}={value!r} is not one vitedge applies "
                                f"(known: {', '.join(f'{k} in {sorted(v)}' for k, v in _ALLOWED_CONFIG.items())})")
    return dict(config)


class OpenVINORunner:
    """Runs an OpenVINO IR on OpenVINO's CPU plugin, one infer request per compiled shape.

    Static shapes: the IR keeps a dynamic batch dimension, but the CPU plugin runs a model compiled for one fixed
    input shape faster (static memory plan and kernels; measured 4-11% at batch 1 on DeiT-Ti, MobileViT-XS and
    LeViT-128S, 2 threads). So the runner compiles the IR reshaped to batch 1 when it opens, and to each further
    batch size the first time it meets it (up to :data:`MAX_STATIC_BATCHES`; beyond that, one dynamic-batch compile
    serves the rest). A new batch size's first call therefore includes its compile (about 0.1-0.5 s).

    One runner runs one inference at a time (its infer requests are not shared between threads); open one runner
    per thread for concurrent use.
    """

    def __init__(self, xml: Path, weights: Path, threads: int | None = None, config: dict | None = None,
                 input_shape: list[int] | None = None, output_names: list[str] | None = None,
                 xml_bytes: bytes | None = None, weights_bytes: bytes | None = None):
        """Compile ``xml`` + ``weights`` for the CPU with ``config`` (OpenVINO properties), ``threads`` inference
        threads (default: :func:`vitedge.machine.default_threads`) and one stream.

        ``xml_bytes`` + ``weights_bytes``: the two files' bytes, already read (and hashed) by :func:`load`;
        OpenVINO then reads the model from memory (``Core.read_model(xml bytes, weights Tensor)``) and the paths
        only name it in messages.

        Raises:
            RuntimeMissingError: openvino is not installed.
            ArtifactError: an XML above :data:`MAX_XML_BYTES`, or an IR OpenVINO cannot read or compile.
        """
        ov = _import_ov()
        xml, weights = Path(xml), Path(weights)
        try:
            size = xml.stat().st_size if xml_bytes is None else len(xml_bytes)
        except OSError as e:
            raise ArtifactError(f"cannot read OpenVINO IR {xml}: {e.strerror or e}") from None
        if size > MAX_XML_BYTES:
            raise ArtifactError(f"OpenVINO IR {xml} is {size} bytes, above the {MAX_XML_BYTES}-byte limit for a graph")
        if xml_bytes is None:  # the export driver's own run: read the files once here, then load from the bytes
            try:
                xml_bytes, weights_bytes = xml.read_bytes(), weights.read_bytes()
            except OSError as e:
                raise ArtifactError(f"cannot read OpenVINO IR {xml}: {e.strerror or e}") from None
        check_ir_xml(xml_bytes, str(xml))
        self.config = {**(config or {}), "INFERENCE_NUM_THREADS": int(threads or default_threads()),
                       "NUM_STREAMS": 1}
        self._partial_shape = ov.PartialShape
        self._xml = xml
        self._compiled: dict[int | None, tuple] = {}  # batch (None: the IR's own shapes) -> (compiled, request)
        try:
            self._core = ov.Core()
            # from the (verified) bytes; the Tensor copies them and must outlive the model's compiles
            self._weights = ov.Tensor(np.frombuffer(weights_bytes or b"", dtype=np.uint8))
            self._model = self._core.read_model(xml_bytes, self._weights)
            shape = self._ir_shape = self._model.inputs[0].get_partial_shape()
            # static compiles only for an IR whose one input is (dynamic B, static C, H, W)
            self._static = (len(self._model.inputs) == 1 and shape.rank.is_static and shape.rank.get_length() == 4
                            and shape[0].is_dynamic and all(d.is_static for d in list(shape)[1:]))
            self.compiled, self.request = self._compile(1 if self._static else None)
        except ArtifactError:
            raise
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError with multi-line C++ context
            raise ArtifactError(f"cannot load OpenVINO IR {xml}: {first_line(e, 300)}") from None
        self.input_shape = input_shape
        names = {}
        for i, out in enumerate(self.compiled.outputs):
            for n in out.get_names():
                names.setdefault(n, i)
        self.order = [names.get(n, i) for i, n in enumerate(output_names)] if output_names else \
            list(range(len(self.compiled.outputs)))
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino.Type: "f32", "bf16", ...
        self.inference_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.runtime = f"openvino-{ov.__version__.split('-')[0]}"

    def _compile(self, batch: int | None) -> tuple:
        """(compiled model, infer request) for inputs of batch ``batch`` (None: the IR's shapes), compiled once."""
        static = sum(k is not None for k in self._compiled)
        key = batch if batch is None or batch in self._compiled or static < MAX_STATIC_BATCHES else None
        if key not in self._compiled:
            model = self._model
            if key is not None:
                model = model.clone()
                dims = [d.get_length() for d in list(model.inputs[0].get_partial_shape())[1:]]
                model.reshape({model.inputs[0]: self._partial_shape([key, *dims])})
            compiled = self._core.compile_model(model, "CPU", self.config)
            self._compiled[key] = (compiled, compiled.create_infer_request())
        return self._compiled[key]

    def _request(self, batch: int):
        """The infer request for a batch of ``batch`` images (compiling a static-shape model the first time)."""
        if not self._static:
            return self.request
        try:
            return self._compile(batch if batch >= 1 else None)[1]  # an empty batch: the dynamic compile
        except Exception as e:  # noqa: BLE001 - RuntimeError from the plugin
            raise ArtifactError(f"cannot compile OpenVINO IR {self._xml} for batch {batch}: {first_line(e, 300)}") from None

    @property
    def compiled_batches(self) -> list[int | None]:
        """Batch sizes compiled so far (None: the dynamic-batch compile), in compile order."""
        return list(self._compiled)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """float32 (B, C, H, W) -> list of float32 outputs (logits (B, classes) first), copies owned by the caller.

        Raises UsageError for a non-float32 / non-4-D input or a shape the IR does not take; ArtifactError if
        OpenVINO fails to run it.
        """
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
            raise UsageError(f"OpenVINO model takes float32 (B, C, H, W), got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
        want = self.input_shape
        if want and (any(w not in (-1, g) for w, g in zip(want, x.shape))):
            shown = ["B" if w == -1 else str(w) for w in want]
            raise UsageError(f"input shape {tuple(x.shape)} does not fit the model's input ({', '.join(shown)})")
        if not want and not self._ir_shape.compatible(self._partial_shape(list(x.shape))):
            raise UsageError(f"input shape {tuple(x.shape)} does not fit the model's input {self._ir_shape}")
        request = self._request(int(x.shape[0]))
        try:
            res = request.infer({0: np.ascontiguousarray(x)}, share_inputs=False, share_outputs=True)
        except Exception as e:  # noqa: BLE001 - RuntimeError from the plugin
            raise ArtifactError(f"OpenVINO inference failed: {first_line(e, 300)}") from None
        outs = res.to_tuple()  # views of the request's output tensors (share_outputs): copied before returning
        return [np.array(outs[i], dtype=np.float32, copy=True) for i in self.order]


def load(artifact: Artifact, threads: int | None = None) -> OpenVINORunner:
    """Compile the artifact's IR for the CPU with the config its manifest records (``openvino.config``), plus
    ``threads`` inference threads and one stream.

    Raises:
        ArtifactError: the manifest's weights file is missing from its file list or outside the folder, a config
            vitedge does not apply, an oversized XML, or an IR OpenVINO cannot read or compile.
        RuntimeMissingError: openvino is not installed.
    """
    m = artifact.manifest
    ovm = m.get("openvino") or {}
    if not isinstance(ovm, dict):
        raise ArtifactError(f"{artifact.path}: manifest key 'openvino' is not a mapping")
    xml = artifact.file
    if xml.suffix != ".xml":
        raise ArtifactError(f"{artifact.path}: OpenVINO artifact {m['artifact']!r} is not an .xml IR")
    base = Path(m["artifact"]).parent
    if ovm.get("weights") is not None and not isinstance(ovm.get("weights"), str):
        raise ArtifactError(f"{artifact.path}: manifest openvino.weights must be a file name (a string)")
    weights_name = (base / check_relative_name(ovm.get("weights") or Path(m["artifact"]).with_suffix(".bin").name,
                                               f"manifest {artifact.path}: openvino weights")).as_posix()
    weights = artifact.path / weights_name
    files = m.get("files") or {}  # empty only for the export driver's own parity run
    if files and weights_name not in files:  # its bytes would reach the runtime without a SHA-256 check
        raise ArtifactError(f"{artifact.path}: OpenVINO weights {weights_name!r} are not listed in the manifest")
    for f in (xml, weights):
        if not f.is_file() or not is_inside(artifact.path, f):
            raise ArtifactError(f"OpenVINO IR file missing or outside {artifact.path}: {f}")
    precision = m.get("precision") or "fp32"
    config = _check_config(ovm["config"], str(artifact.path)) if "config" in ovm else \
        dict(CONFIGS.get(precision, CONFIGS["fp32"]))
    out_names = [o.get("name") for o in m.get("outputs") or []] or None
    xml_bytes = artifact.read_file(max_bytes=MAX_XML_BYTES)  # read once (size capped first, hashed when verified)
    weights_bytes = artifact.read_file(weights_name)  # ... and OpenVINO reads the model from these bytes
    return OpenVINORunner(xml, weights, threads, config, (m.get("inputs") or [{}])[0].get("shape"), out_names,
                          xml_bytes=xml_bytes, weights_bytes=weights_bytes)


@dataclass
class OpenVINOOptions:
    """``vitedge export --target openvino`` flags (``options["target_options"]``, see :func:`write`)."""

    int8_float_precision: str | None = field(default=None, metadata={
        "flag": "--int8-float-precision", "choices": ["f32", "bf16"],
        "help": "with --precision int8: the precision of the ops left in float (LayerNorm, Softmax, GELU); "
                "default bf16 where the CPU has it (AVX512_BF16 or AMX), else f32"})


@register_target
class OpenVINOTarget(Target):
    """``--target openvino``: the functions above (``write``, ``load``, ``runs_here``, ``default_int8_mode``)."""

    name = "openvino"
    title = "OpenVINO"
    precisions = PRECISIONS
    precision_help = "bf16: --target openvino on CPUs with bf16 support"
    Options = OpenVINOOptions

    def default_int8_mode(self, family: str | None) -> str:
        return default_int8_mode(family)
