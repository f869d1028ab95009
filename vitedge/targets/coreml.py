"""Core ML target: ``coremltools.convert`` of a traced model to an mlprogram ``model.mlpackage``.

Conversion (coremltools 9, PyTorch frontend from ``torch.jit.trace``) runs on any OS; Core ML prediction
needs macOS, so on Linux export writes the package with ``parity: {"skipped": ...}`` and ``validate``/``bench``
refuse it with that reason. What can be checked on Linux is checked at every export by :func:`inspect`, which
reads the *saved* package back (spec + MIL program) and verifies input name/type/shape, output names, op
precision (fp16 vs fp32), compressed weights, the image preprocessing constants, metadata, class labels and the
deployment target; the result is stored under ``manifest["coreml"]``.

Precisions (``--precision``; the CLI defaults to fp16 for this target, as Core ML does):
    fp32: ``compute_precision=FLOAT32``.
    fp16: ``compute_precision=FLOAT16`` (the coremltools default for mlprogram).
    int8: fp16 compute with compressed weights (``coremltools.optimize.coreml``, weight-only; activations stay
        fp16): ``weights="linear"`` (default) = int8 linear symmetric per-channel
        (``linear_quantize_weights``); ``weights="palettizeN"`` (N in 1, 2, 3, 4, 6, 8) = N-bit k-means
        palettization per tensor (``palettize_weights``). Tensors with at most 2048 elements stay fp16
        (coremltools' ``weight_threshold``). Needs a deployment target >= iOS16 / macOS13.

Target options (``options["target_options"]``, CLI flags in parentheses):
    deployment_target (``--deployment-target``): iOS15.. / macOS12.. / watchOS8.. / tvOS15.. (mlprogram needs
        at least these); default iOS16.
    input (``--coreml-input``): "image" (default for 3-channel models) or "tensor".
    weights (``--coreml-weights``): "linear" | "palettize1..8" (int8 only).
    author, license, version (``--coreml-author``, ``--coreml-license``, ``--coreml-version``): model metadata.

Image input: Core ML's ImageType computes ``scale * pixel + bias[c]`` with ONE scalar scale for all channels.
The manifest's normalisation is ``(pixel * s - mean[c]) / std[c]``; when std is the same for every channel it is
exactly ``scale = s / std``, ``bias[c] = -mean[c] / std``. When std differs per channel (ImageNet's does), a
scalar scale cannot express it, so the ImageType uses ``scale = s``, ``bias = 0`` and a per-channel
``x * (1/std[c]) - mean[c]/std[c]`` (one mul + one add) is put at the head of the graph instead; the manifest
records which (``coreml.image_normalization``). Core ML image features carry no batch dimension: an image model
takes one image per prediction and batches go through the batch prediction API.

Batch (tensor input): a flexible batch (``ct.RangeDim``) is tried first; if conversion fails or the saved spec
does not show the range, the conversion is redone with ``ct.EnumeratedShapes`` (batches 1, 2, 4, 8) and the
manifest records which and why. Models with known class labels (and one output) get a ``ClassifierConfig``
(outputs ``classLabel`` and ``classLabel_probs``, a label -> logit dictionary: no softmax is added) and take one
sample per prediction.

Reference: coremltools 9 guides, "Converting from PyTorch", "Image Input and Output", "Flexible Input Shapes",
"Classifiers", "Optimizing Models: Post-Training Compression" (apple.github.io/coremltools).
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError, ExportError, RuntimeMissingError, UsageError, first_line
from ..manifest import Artifact
from . import Target, register_target
from .. import __version__, progress
from ..safety import check_tree
from PIL import Image

FILENAME = "model.mlpackage"
PRECISIONS = {"fp32": None, "fp16": None, "int8": ("weights",)}
DEFAULT_DEPLOYMENT_TARGET = "iOS16"
# mlprogram needs Core ML 5 (iOS15 / macOS12 / watchOS8 / tvOS15); compressed weights need Core ML 6.
MIN_MLPROGRAM = {"iOS": 15, "macOS": 12, "watchOS": 8, "tvOS": 15}
MIN_COMPRESSED = {"iOS": 16, "macOS": 13, "watchOS": 9, "tvOS": 16}
WEIGHT_MODES = ("linear",) + tuple(f"palettize{n}" for n in (1, 2, 3, 4, 6, 8))
INPUTS = ("image", "tensor")
MAX_BATCH = 64
ENUMERATED_BATCHES = (1, 2, 4, 8)
WEIGHT_THRESHOLD = 2048  # coremltools' default: smaller tensors are left uncompressed
OPTIONS = ("deployment_target", "input", "weights", "author", "license", "version")


@contextlib.contextmanager
def quiet():
    """Silence coremltools' import- and conversion-time noise (untested-torch and missing-libcoremlpython log
    lines, scikit-learn version notice, tqdm progress bars, warnings) for the duration of the block."""
    buf = io.StringIO()
    before = logging.root.manager.disable
    with warnings.catch_warnings(), contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(before)


def _ct():
    try:
        with quiet():
            import coremltools as ct
            import coremltools.optimize.coreml  # noqa: F401
    except ImportError:
        raise RuntimeMissingError("coremltools is not installed (pip install 'vitedge[coreml]')") from None
    return ct


def runs_here() -> str | None:
    """None on macOS (Core ML prediction available), else the reason artifacts cannot run here."""
    if sys.platform != "darwin":
        return f"Core ML prediction needs macOS (this is {sys.platform}); conversion and spec checks run anywhere"
    return None


def parse_deployment_target(name: str | None, compressed: bool = False) -> str:
    """Check a deployment target name (``iOS16``, ``macOS13``, ``watchOS9``, ``tvOS16``...) without importing
    coremltools; returns it (default :data:`DEFAULT_DEPLOYMENT_TARGET`).

    Raises:
        UsageError: unknown form, or older than mlprogram allows (older than Core ML 6 with ``compressed``).
    """
    name = name or DEFAULT_DEPLOYMENT_TARGET
    m = re.fullmatch(r"(iOS|macOS|watchOS|tvOS)(\d+)(?:_\d+)?", name)
    if not m:
        raise UsageError(f"unknown deployment target {name!r} (expected e.g. iOS16, macOS13, watchOS9, tvOS16)")
    os_name, major = m.group(1), int(m.group(2))
    need = (MIN_COMPRESSED if compressed else MIN_MLPROGRAM)[os_name]
    if major < need:
        why = "int8/palettized weights need" if compressed else "an mlprogram needs"
        raise UsageError(f"deployment target {name}: {why} {os_name}{need} or newer")
    return name


def check_options(options: dict, precision: str, channels: int = 3) -> dict:
    """Validate target options; returns them with defaults filled. Raises UsageError."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise UsageError(f"unknown coreml option(s): {', '.join(sorted(unknown))} (known: {', '.join(OPTIONS)})")
    o = dict(options)
    weights = o.get("weights")
    if weights is not None and weights not in WEIGHT_MODES:
        raise UsageError(f"--coreml-weights must be one of {', '.join(WEIGHT_MODES)}, got {weights!r}")
    if weights is not None and precision != "int8":
        raise UsageError("--coreml-weights compresses weights: use it with --precision int8")
    o["weights"] = (weights or "linear") if precision == "int8" else None
    o["deployment_target"] = parse_deployment_target(o.get("deployment_target"), compressed=precision == "int8")
    inp = o.get("input") or ("image" if channels == 3 else "tensor")
    if inp not in INPUTS:
        raise UsageError(f"--coreml-input must be image or tensor, got {inp!r}")
    if inp == "image" and channels not in (1, 3):
        raise UsageError(f"--coreml-input image needs 1 or 3 channels, the model takes {channels}")
    o["input"] = inp
    return o


class PerChannelNormalize(nn.Module):
    """``x * (1/std[c]) - mean[c]/std[c]`` then ``model``: the per-channel half of the manifest's normalisation
    for an ImageType whose scalar scale (``pixel * s``) cannot carry a per-channel std.

    Input float32 (B, C, H, W) in [0, 1] (``pixel * s``); output whatever ``model`` returns."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("inv_std", 1.0 / std)
        self.register_buffer("shift", -torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std)

    def forward(self, x):
        return self.model(x * self.inv_std + self.shift)


def image_normalization(pre: dict, channels: int) -> dict:
    """How the manifest's preprocessing maps onto a Core ML ImageType.

    Returns ``{"scale": float, "bias": [C floats], "in_graph": bool, ...}``: with ``in_graph`` False the ImageType
    alone computes ``(pixel * s - mean) / std`` (std equal across channels); with True the ImageType gives
    ``pixel * s`` and :class:`PerChannelNormalize` does the rest inside the graph."""
    s = float(pre.get("scale", 1 / 255))
    mean = [float(v) for v in pre["mean"]][:channels] if channels == 1 else [float(v) for v in pre["mean"]]
    std = [float(v) for v in pre["std"]][:channels] if channels == 1 else [float(v) for v in pre["std"]]
    if len(set(std)) == 1:
        return {"scale": s / std[0], "bias": [-m / std[0] for m in mean], "in_graph": False,
                "method": "ImageType scale/bias: scale = s/std, bias[c] = -mean[c]/std"}
    return {"scale": s, "bias": [0.0] * len(mean), "in_graph": True, "mean": mean, "std": std,
            "method": "ImageType scale = s, bias = 0; per-channel (x - mean[c]) / std[c] as mul + add at the head "
                      "of the graph (std differs per channel; ImageType has one scalar scale)"}


def _convert(ct, traced, example, o: dict, precision: str, out_names: list[str], labels, norm, batch_mode: str):
    b, c, h, w = (int(v) for v in example.shape)
    if batch_mode == "range":
        shape = ct.Shape((ct.RangeDim(1, MAX_BATCH, default=1), c, h, w))
    elif batch_mode == "enumerated":
        shape = ct.EnumeratedShapes([(n, c, h, w) for n in ENUMERATED_BATCHES], default=(1, c, h, w))
    elif batch_mode == "one":
        shape = (1, c, h, w)
    else:
        shape = (b, c, h, w)
    if o["input"] == "image":
        inp = ct.ImageType(name="pixel_values", shape=shape, scale=norm["scale"], bias=norm["bias"],
                           color_layout=ct.colorlayout.RGB if c == 3 else ct.colorlayout.GRAYSCALE)
    else:
        inp = ct.TensorType(name="pixel_values", shape=shape, dtype=np.float32)
    kw = {}
    if labels:
        kw["classifier_config"] = ct.ClassifierConfig(list(labels))
    else:
        kw["outputs"] = [ct.TensorType(name=n, dtype=np.float32) for n in out_names]
    return ct.convert(traced, inputs=[inp], convert_to="mlprogram",
                      minimum_deployment_target=getattr(ct.target, o["deployment_target"]),
                      compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
                      **kw)


def _compress(mlmodel, weights: str):
    import coremltools.optimize.coreml as cto
    if weights == "linear":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                         weight_threshold=WEIGHT_THRESHOLD)
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op)), {
            "weights": "int8 linear symmetric per-channel",
            "api": "coremltools.optimize.coreml.linear_quantize_weights"}
    nbits = int(weights.removeprefix("palettize"))
    op = cto.OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_tensor", weight_threshold=WEIGHT_THRESHOLD)
    return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op)), {
        "weights": f"{nbits}-bit k-means palettization per tensor", "nbits": nbits,
        "api": "coremltools.optimize.coreml.palettize_weights"}


def write(model: nn.Module, example: torch.Tensor, directory: Path, options: dict) -> dict:
    """Trace ``model`` on ``example`` (float32 (B, C, H, W)), convert to an mlprogram, save
    ``directory/model.mlpackage`` and verify the saved package with :func:`inspect`.

    options: precision, dynamic_batch, output_names, preprocessing (manifest dict: scale, mean, std), labels
    (class names or None), spec (model description: preset), target_options (see module docstring).
    Raises:
        UsageError: bad target options. ExportError: the saved package fails its checks.
        Exceptions from coremltools on conversion failure (the export driver reports their first line).
    """
    progress.stage("loading coremltools")
    ct = _ct()
    precision = options.get("precision", "fp32")
    c = int(example.shape[1])
    o = check_options(dict(options.get("target_options") or {}), precision, c)
    out_names = list(options["output_names"])
    labels = options.get("labels")
    if labels is not None and len(out_names) != 1:
        labels = None  # a classifier has one probabilities output; multi-output models stay plain
    pre = options.get("preprocessing") or {}
    norm = image_normalization(pre, c) if o["input"] == "image" else None
    net = PerChannelNormalize(model, norm["mean"], norm["std"]).eval() if norm and norm["in_graph"] else model
    dynamic = options.get("dynamic_batch", True)
    x = example
    if dynamic and x.shape[0] < 2:
        x = x.expand(2, *x.shape[1:]).contiguous()
    progress.stage("tracing the model (torch.jit.trace)")
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(net, x, check_trace=False)

    # Batch: image inputs and classifiers take one sample per prediction; tensors try RangeDim, then enumerated.
    if o["input"] == "image" or labels:
        modes = ["one"]
    elif not dynamic:
        modes = ["fixed"]
    else:
        modes = ["range", "enumerated"]
    fallback = None
    for mode in modes:
        try:
            progress.stage(f"converting to Core ML (mlprogram, {precision}, batch: {mode})")
            with quiet():
                mlmodel = _convert(ct, traced, x, o, precision, out_names, labels, norm, mode)
            if mode == "range":
                shp = mlmodel.get_spec().description.input[0].type.multiArrayType.shapeRange.sizeRanges
                if not shp or shp[0].upperBound != MAX_BATCH:
                    raise ExportError("the saved spec shows no flexible batch range")
            break
        except Exception as e:  # noqa: BLE001 - RangeDim failure: fall back to enumerated shapes, recording why
            if mode != "range":
                raise
            fallback = first_line(e, 400)
    compression = None
    if precision == "int8":
        progress.stage(f"compressing the weights ({o['weights']})")
        with quiet():
            mlmodel, compression = _compress(mlmodel, o["weights"])
    meta = {"preset": (options.get("spec") or {}).get("preset") or "", "vitedge": __version__,
            "precision": precision}
    mlmodel.author = o.get("author") or f"vitedge {__version__}"
    mlmodel.license = o.get("license") or ("unknown (weights from a seeded random initialisation)"
                                           if ((options.get("spec") or {}).get("weights") or {}).get("source") == "seed"
                                           else "unknown")
    mlmodel.version = o.get("version") or __version__
    mlmodel.short_description = (f"{meta['preset'] or type(model).__name__} exported by vitedge {__version__} "
                                 f"({precision}, input {'image' if norm else 'float32 tensor'} "
                                 f"{int(example.shape[2])}x{int(example.shape[3])})")
    for k, v in meta.items():
        mlmodel.user_defined_metadata[f"vitedge.{k}"] = str(v)
    mlmodel.input_description["pixel_values"] = (
        f"RGB image {int(example.shape[3])}x{int(example.shape[2])} (normalised inside the model)" if norm else
        "float32 (B, C, H, W), normalised as the manifest's preprocessing says")
    progress.stage(f"saving and checking {FILENAME}")
    with quiet():
        mlmodel.save(str(directory / FILENAME))
    batch = {"fixed": f"fixed {int(example.shape[0])}", "one": "one sample per prediction (batch prediction API)",
             "range": f"flexible (RangeDim 1..{MAX_BATCH})",
             "enumerated": f"enumerated {list(ENUMERATED_BATCHES)}"}[mode]
    expect = {"input": o["input"], "precision": precision, "preprocessing": pre, "output_names": out_names,
              "labels": labels,
              "normalization": norm, "deployment_target": o["deployment_target"], "compressed": compression,
              "batch_mode": mode}
    info = inspect(directory / FILENAME)
    problems = check_inspection(info, expect)
    if problems:
        raise ExportError(f"saved Core ML package fails its checks: {'; '.join(problems)}")
    coreml = {"deployment_target": o["deployment_target"], "input": o["input"], "batch": batch,
              "batch_mode": mode, "coremltools": ct.__version__, "spec_check": "passed", **info}
    if fallback:
        coreml["range_dim_error"] = fallback
    if norm:
        coreml["image_normalization"] = norm
    quant = None
    if compression:
        quant = {**compression, "weight_threshold": WEIGHT_THRESHOLD, "compute_precision": "fp16"}
    return {"artifact": FILENAME, "backend": "coreml", "quantization": quant,
            "export": {"method": f"torch.jit.trace + coremltools {ct.__version__} convert (mlprogram)",
                       "minimum_deployment_target": o["deployment_target"], "batch": batch,
                       **({"range_dim_error": fallback} if fallback else {})},
            "manifest": {"coreml": coreml}}


def _const_value(var):
    op = var.op
    if op is not None and op.op_type == "const":
        return np.asarray(op.outputs[0].val)
    return None


def _input_affine(x, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Compose the chain of constant ``mul``/``add``/``sub``/``batch_norm`` (and ``cast``) ops that starts at
    image input ``x`` into one per-channel map ``a[c] * pixel + b[c]``: what the program does to an 8-bit pixel before the first
    op that is not such an affine step (ImageType scale/bias plus any in-graph per-channel normalisation)."""
    a, b, v = np.ones(channels), np.zeros(channels), x
    while len(v.child_ops) == 1:
        u = v.child_ops[0]
        if u.op_type == "cast":
            v = u.outputs[0]
            continue
        if u.op_type == "batch_norm":  # coremltools fuses a per-channel mul + add into one batch_norm
            mean, var, gamma, beta, eps = (_const_value(getattr(u, k)) if getattr(u, k, None) is not None else None
                                           for k in ("mean", "variance", "gamma", "beta", "epsilon"))
            if mean is None or var is None or mean.size != channels:
                break
            k = (gamma.astype(np.float64).reshape(-1) if gamma is not None else 1.0) / np.sqrt(
                var.astype(np.float64).reshape(-1) + (float(eps) if eps is not None else 1e-5))
            a, b = a * k, (b - mean.astype(np.float64).reshape(-1)) * k + (
                beta.astype(np.float64).reshape(-1) if beta is not None else 0.0)
            v = u.outputs[0]
            continue
        if u.op_type not in ("mul", "add", "sub"):
            break
        first = u.x is v
        val = _const_value(u.y if first else u.x)
        if val is None or val.size not in (1, channels):
            break
        val = np.broadcast_to(val.astype(np.float64).reshape(-1), (channels,))
        if u.op_type == "mul":
            a, b = a * val, b * val
        elif u.op_type == "add":
            b = b + val
        elif first:  # v - const
            b = b - val
        else:  # const - v
            a, b = -a, val - b
        v = u.outputs[0]
    return a, b


def inspect(path: str | Path) -> dict:
    """Read a saved ``.mlpackage`` back (``MLModel(..., skip_model_load=True)``, no Core ML runtime needed).

    Returns ``{"spec_version", "opset", "inputs": [{name, type, shape|size, ...}], "outputs": [{name, type}],
    "classifier": {"labels": [...]} | None, "op_dtypes": {"fp16": n, "fp32": n}, "ops": {type: n},
    "compressed_weights": {"constexpr_...": n}, "pixel_to_input": {"scale": [C], "bias": [C]} | None,
    "metadata": {...}}`` where op dtypes count the outputs of non-const ops and ``pixel_to_input`` is the
    per-channel affine map from an 8-bit pixel to the tensor the network proper sees (image inputs only).
    Raises:
        ArtifactError: not a readable mlprogram package.
    """
    ct = _ct()
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load
    from coremltools.converters.mil.mil.types import builtin_to_string
    try:
        with quiet():
            m = ct.models.MLModel(str(path), skip_model_load=True)
            spec = m.get_spec()
            prog = milproto_load(spec, spec.specificationVersion, m.weights_dir)
    except Exception as e:  # noqa: BLE001 - protobuf / coremltools errors
        raise ArtifactError(f"cannot read Core ML package {path}: {first_line(e, 400)}") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise ArtifactError(f"{path} is not an mlprogram (it is {spec.WhichOneof('Type')})")
    d = spec.description
    inputs = []
    for f in d.input:
        kind = f.type.WhichOneof("Type")
        if kind == "imageType":
            it = f.type.imageType
            inputs.append({"name": f.name, "type": "image", "color": it.ColorSpace.Name(it.colorSpace),
                           "size": [int(it.height), int(it.width)]})
        else:
            mt = f.type.multiArrayType
            entry = {"name": f.name, "type": "tensor", "dtype": mt.ArrayDataType.Name(mt.dataType),
                     "shape": [int(v) for v in mt.shape]}
            if mt.WhichOneof("ShapeFlexibility") == "shapeRange":
                entry["batch_range"] = [int(mt.shapeRange.sizeRanges[0].lowerBound),
                                        int(mt.shapeRange.sizeRanges[0].upperBound)]
            elif mt.WhichOneof("ShapeFlexibility") == "enumeratedShapes":
                entry["enumerated_batches"] = sorted({int(s.shape[0]) for s in mt.enumeratedShapes.shapes})
            inputs.append(entry)
    outputs = []
    for f in d.output:
        kind = f.type.WhichOneof("Type")
        entry = {"name": f.name, "type": {"multiArrayType": "tensor", "stringType": "string",
                                          "dictionaryType": "dictionary", "int64Type": "int64"}.get(kind, kind)}
        if kind == "multiArrayType":
            entry["dtype"] = f.type.multiArrayType.ArrayDataType.Name(f.type.multiArrayType.dataType)
        outputs.append(entry)
    classifier = None
    if d.predictedFeatureName:
        labels = [op for op in prog.functions["main"].operations if op.op_type == "classify"]
        vals = list(np.asarray(labels[0].classes.val)) if labels else []
        classifier = {"label_output": d.predictedFeatureName, "probabilities_output": d.predictedProbabilitiesName,
                      "labels": [str(v) for v in vals]}
    fn = prog.functions["main"]
    ops: Counter = Counter()
    dtypes: Counter = Counter()
    for op in fn.operations:
        ops[op.op_type] += 1
        if op.op_type == "const" or op.op_type.startswith("constexpr"):
            continue
        for v in op.outputs:
            name = builtin_to_string(v.dtype) if v.dtype is not None else "?"
            if name in ("fp16", "fp32"):
                dtypes[name] += 1
    pre = None
    if inputs and inputs[0]["type"] == "image":
        scale, bias = _input_affine(fn.inputs[inputs[0]["name"]], 3 if inputs[0]["color"] == "RGB" else 1)
        pre = {"scale": [float(v) for v in scale], "bias": [float(v) for v in bias]}
    md = d.metadata
    return {"spec_version": int(spec.specificationVersion), "opset": spec.mlProgram.functions["main"].opset,
            "inputs": inputs, "outputs": outputs, "classifier": classifier,
            "op_dtypes": dict(dtypes), "ops": dict(sorted(ops.items())),
            "compressed_weights": {k: v for k, v in ops.items() if k.startswith("constexpr")},
            "pixel_to_input": pre,
            "metadata": {"author": md.author, "license": md.license, "version": md.versionString,
                         "short_description": md.shortDescription, "user_defined": dict(md.userDefined)}}


# Core ML specification version of each OS release's Core ML (coremltools' ct.target values).
def _spec_version(ct, name: str) -> int:
    return int(getattr(ct.target, name).value)


def check_inspection(info: dict, expect: dict) -> list[str]:
    """Compare :func:`inspect`'s result with what the export asked for; returns the problems (empty: passed)."""
    ct = _ct()
    p = []
    if info["spec_version"] < _spec_version(ct, expect["deployment_target"]):
        p.append(f"spec version {info['spec_version']} below {expect['deployment_target']}")
    inp = info["inputs"][0] if info["inputs"] else {}
    if inp.get("name") != "pixel_values" or inp.get("type") != expect["input"]:
        p.append(f"input is {inp}, expected {expect['input']} 'pixel_values'")
    if expect["input"] == "tensor" and inp.get("dtype") != "FLOAT32":
        p.append(f"input dtype {inp.get('dtype')}, expected FLOAT32")
    if expect["batch_mode"] == "range" and inp.get("batch_range") != [1, MAX_BATCH]:
        p.append(f"no flexible batch range in the spec ({inp})")
    if expect["batch_mode"] == "enumerated" and inp.get("enumerated_batches") != list(ENUMERATED_BATCHES):
        p.append(f"enumerated batches missing from the spec ({inp})")
    names = [o["name"] for o in info["outputs"]]
    if expect["labels"]:
        cls = info["classifier"] or {}
        if cls.get("labels") != [str(v) for v in expect["labels"]]:
            p.append("class labels in the spec differ from the manifest's")
    elif names != expect["output_names"]:
        p.append(f"outputs {names}, expected {expect['output_names']}")
    n16, n32 = info["op_dtypes"].get("fp16", 0), info["op_dtypes"].get("fp32", 0)
    if expect["precision"] == "fp32" and n16:
        p.append(f"{n16} fp16 ops in an fp32 program")
    if expect["precision"] != "fp32" and n16 <= n32:
        p.append(f"fp16 program has {n16} fp16 ops vs {n32} fp32 ops")
    comp = info["compressed_weights"]
    if expect["compressed"]:
        want = "constexpr_lut_to_dense" if "nbits" in expect["compressed"] else "constexpr_affine_dequantize"
        if not any(k.startswith(want.split("_to")[0]) or k == want for k in comp):
            p.append(f"no {want} weights in an int8 program ({comp})")
    elif comp:
        p.append(f"compressed weights {comp} in an uncompressed program")
    norm = expect["normalization"]
    if norm:  # the program must map pixel -> (pixel * s - mean[c]) / std[c]
        got = info["pixel_to_input"] or {"scale": [], "bias": []}
        pre = expect["preprocessing"]
        want_a = [pre["scale"] / sd for sd in pre["std"]][:len(got["scale"]) or None]
        want_b = [-m / sd for m, sd in zip(pre["mean"], pre["std"])][:len(got["bias"]) or None]
        close = len(got["scale"]) == len(want_a) and all(
            abs(x - y) <= 2e-3 * abs(y) + 1e-6 for x, y in zip(got["scale"] + got["bias"], want_a + want_b))
        if not close:
            p.append(f"pixel -> input map in the program (scale {got['scale']}, bias {got['bias']}) differs from the "
                     f"manifest's preprocessing (scale {want_a}, bias {want_b})")
    return p


class CoreMLRunner:
    """Runs an mlpackage with ``coremltools.models.MLModel.predict`` (macOS only; written against the
    coremltools 9 API, not run in this project's Linux CI).

    ``run`` takes float32 (B, C, H, W) normalised as the manifest says; for an image model it undoes the
    normalisation to 8-bit RGB pictures (``PIL.Image``) and lets Core ML redo it, as an app would."""

    def __init__(self, artifact: Artifact, compute_units: str = "ALL"):
        ct = _ct()
        self.manifest = artifact.manifest
        cm = self.manifest.get("coreml") or {}
        try:
            with quiet():
                self.model = ct.models.MLModel(str(artifact.file), compute_units=getattr(ct.ComputeUnit, compute_units))
        except Exception as e:  # noqa: BLE001 - Core ML framework errors
            raise ArtifactError(f"cannot load Core ML package {artifact.file}: {first_line(e, 400)}") from None
        self.image = cm.get("input") == "image"
        self.batch_mode = cm.get("batch_mode", "one")
        self.classifier = cm.get("classifier")
        self.labels = self.manifest.get("labels")
        self.out_names = [o["name"] for o in self.manifest["outputs"]]
        self.runtime = f"coreml (coremltools {ct.__version__}, compute units {compute_units})"

    def _to_images(self, x: np.ndarray):
        pre = self.manifest["preprocessing"]
        mean = np.asarray(pre["mean"], np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(pre["std"], np.float32).reshape(1, -1, 1, 1)
        pix = np.clip(np.rint((x * std + mean) / float(pre.get("scale", 1 / 255))), 0, 255).astype(np.uint8)
        mode = "RGB" if pix.shape[1] == 3 else "L"
        return [Image.fromarray(p.transpose(1, 2, 0) if mode == "RGB" else p[0], mode) for p in pix]

    def _outputs(self, res: dict) -> list[np.ndarray]:
        if self.classifier:
            probs = res[self.classifier["probabilities_output"]]
            return [np.asarray([[probs[str(lbl)] for lbl in self.classifier["labels"]]], np.float32)]
        return [np.asarray(res[n], np.float32) for n in self.out_names]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """float32 (B, C, H, W) -> list of float32 outputs (B, ...), in the manifest's output order."""
        x = np.ascontiguousarray(x, np.float32)
        if self.batch_mode == "range" or (self.batch_mode == "fixed" and not self.image):
            return self._outputs(self.model.predict({"pixel_values": x}))
        if self.batch_mode == "enumerated" and x.shape[0] in ENUMERATED_BATCHES:
            return self._outputs(self.model.predict({"pixel_values": x}))
        feeds = self._to_images(x) if self.image else [x[i:i + 1] for i in range(x.shape[0])]
        results = self.model.predict([{"pixel_values": f} for f in feeds])
        per = [self._outputs(r) for r in results]  # each output (1, ...) per sample
        return [np.concatenate([p[i] for p in per]) for i in range(len(per[0]))]


def load(artifact: Artifact, threads: int | None = None) -> CoreMLRunner:
    """Open the artifact's mlpackage for prediction (macOS). ``threads`` is not used: Core ML schedules itself.
    Raises RuntimeMissingError off macOS, ArtifactError for an unreadable package."""
    check_tree(artifact.file)  # before Core ML opens it: no symlink out of the package, no device file or FIFO
    cannot = runs_here()
    if cannot:
        raise RuntimeMissingError(cannot)
    return CoreMLRunner(artifact)


def _meta(flag: str, help: str, **kw) -> dict:
    return {"flag": flag, "help": help, **kw}


@dataclass
class CoreMLOptions:
    """``vitedge export --target coreml`` flags (``options["target_options"]``, see :func:`check_options`)."""

    deployment_target: str | None = field(default=None, metadata=_meta(
        "--deployment-target", "minimum deployment target: iOS15.., macOS12.., watchOS8.., tvOS15.. (default iOS16; "
                               "int8 weights need iOS16/macOS13 or newer)"))
    input: str | None = field(default=None, metadata=_meta(
        "--coreml-input", "image: RGB image input with the preprocessing inside the model (default for 3 channels); "
                          "tensor: float32 (B, C, H, W) already normalised", choices=list(INPUTS)))
    weights: str | None = field(default=None, metadata=_meta(
        "--coreml-weights", "with --precision int8: linear (int8 symmetric per-channel, default) or palettizeN "
                            "(N-bit k-means lookup table, N in 1, 2, 3, 4, 6, 8)", metavar="MODE"))
    author: str | None = field(default=None, metadata=_meta(
        "--coreml-author", "model metadata: author (default: vitedge VERSION)"))
    license: str | None = field(default=None, metadata=_meta(
        "--coreml-license", "model metadata: license of the weights"))
    version: str | None = field(default=None, metadata=_meta(
        "--coreml-version", "model metadata: version string (default: vitedge's)"))


@register_target
class CoreMLTarget(Target):
    """``--target coreml``: the functions above (``write``, ``load``, ``runs_here``, ``check_options``)."""

    name = "coreml"
    title = "Core ML"
    precisions = PRECISIONS
    default_precision = "fp16"  # coremltools' mlprogram default
    precision_help = "fp16 for --target coreml (int8 there = fp16 compute, compressed weights)"
    Options = CoreMLOptions
    options_summary = "--deployment-target and --coreml-*"

    def check_options(self, options: dict, precision: str) -> None:
        check_options(options, precision)
