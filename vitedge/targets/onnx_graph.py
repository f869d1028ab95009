"""The portable ONNX graph: the one module the ``onnx``, ``trt`` and ``openvino`` targets build on.

``torch.onnx.export(dynamo=True)`` with a batch-2 example and ``Dim("batch")`` (a batch-1 example may specialise the
batch to 1, seen with torch 2.13); if it raises, the legacy TorchScript-based exporter (opset 17, ``dynamic_axes``)
runs instead and the returned info records which one ran and why. The exported graph's constant subgraphs are then
folded (:func:`fold_constants`: onnxscript's optimizer after ONNX shape inference, portable standard-domain ONNX, the
batch left symbolic), once, for every target built on it, and int8/fp16 start from the folded graph. Every graph
passes ``onnx.checker`` (full check). The graph is standard-domain ONNX: runtime-specific rewrites (ONNX Runtime's fusions, OpenVINO's attention form,
TensorRT's graph check) are each target's own step after this one. fp16 and int8 graphs are converted from the
portable fp32 graph (:mod:`vitedge.quantize.onnx`).

Importing this module does not import torch (``write_graph`` does), so the ONNX Runtime target that imports it can
load and run artifacts without torch.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import progress
from ..errors import first_line

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_OPSET", "FILENAME", "LEGACY_OPSET", "MAX_BATCH", "convert_precision", "export_graph",
           "fold_constants", "graph_counts", "op_counts", "op_name", "stored_graph", "write_graph"]

FILENAME = "model.onnx"
DEFAULT_OPSET = 18
LEGACY_OPSET = 17
MAX_BATCH = 1024
# Ops never folded whatever their inputs (onnxscript's own list: quantization ops, ConstantOfShape, which would store
# a filled tensor in place of its shape).
_NEVER_FOLD = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConstantOfShape"})


def export_graph(model: "torch.nn.Module", example: "torch.Tensor", path: Path, *, input_names: list[str],
                 output_names: list[str], dynamic: bool = True, opset: int | None = None, fold: bool = True) -> dict:
    """Export ``model`` on ``example`` (float32 (B, C, H, W)) to the fp32 ONNX file ``path``.

    ``dynamic``: dimension 0 symbolic (at most :data:`MAX_BATCH`); a batch-1 example is widened to 2 first.
    The exported graph is then folded in place (:func:`fold_constants`; ``fold=False`` keeps the exporter's graph,
    e.g. to measure what folding does).
    Returns the export info for the manifest: ``method``, ``opset``, ``ops`` (op histogram of the folded graph),
    ``graph`` (what :func:`fold_constants` returned) and, after a fallback to the legacy exporter,
    ``fallback_reason``. Raises: the exporter's error when the legacy one fails too;
    ``onnx.checker.ValidationError`` for an invalid graph (the export driver reports both in one line).
    """
    import onnx
    import torch

    opset = opset or DEFAULT_OPSET
    if dynamic and example.shape[0] < 2:
        example = example.expand(2, *example.shape[1:]).contiguous()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed. Skipping ..."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},) if dynamic else None
            torch.onnx.export(model, (example,), str(path), input_names=input_names, output_names=output_names,
                              opset_version=opset, dynamo=True, dynamic_shapes=shapes, external_data=False,
                              optimize=True, verbose=False)
            info = {"method": "torch.onnx.export(dynamo=True)", "opset": opset}
        except Exception as e:  # noqa: BLE001 - fall back to the legacy exporter, recording why
            reason = first_line(e)
            path.unlink(missing_ok=True)
            axes = {n: {0: "batch"} for n in input_names + output_names} if dynamic else None
            torch.onnx.export(model, (example,), str(path), input_names=input_names, output_names=output_names,
                              opset_version=LEGACY_OPSET, dynamo=False, dynamic_axes=axes)
            info = {"method": "torch.onnx.export(dynamo=False) [legacy fallback]", "opset": LEGACY_OPSET,
                    "fallback_reason": reason[:500]}
    folding = fold_constants(path) if fold else None
    proto = onnx.load(str(path))
    if folding is None:
        n = len(proto.graph.node)
        folding = {"nodes_before_folding": n, "nodes_after_folding": n, "folding_skipped": "not asked (fold=False)"}
    onnx.checker.check_model(proto, full_check=True)
    info["ops"] = op_counts(proto)
    info["graph"] = folding
    return info


def _fold_policy(limit: int):
    """onnxscript's ``should_fold`` for :func:`fold_constants`: fold a node whose every constant input above
    ``limit`` elements feeds only nodes with constant inputs, which all fold, so that the folded tensors replace
    that input instead of being stored beside it (a Transpose or Reshape of a weight matrix, the two Slices that
    split a fused qkv weight, the Gather of LeViT's attention-bias table); :data:`_NEVER_FOLD` ops never; anything
    else by onnxscript's default rules (inputs up to ``limit`` elements)."""
    def foldable(node) -> bool:
        return not (node.domain in ("", "ai.onnx") and node.op_type in _NEVER_FOLD) and all(
            v is None or v.const_value is not None for v in node.inputs)

    def should_fold(node) -> bool | None:
        if not foldable(node):
            return False
        large = [v for v in node.inputs if v is not None and v.const_value.size > limit]
        if large and all(not v.is_graph_output() and all(foldable(c) for c in v.consumers()) for v in large):
            return True
        return None
    return should_fold


def fold_constants(path: Path) -> dict:
    """Fold the constant subgraphs of the ONNX file ``path`` in place (written atomically) and count its nodes.

    ONNX shape inference first (with data propagation: the static dimensions behind ``Shape`` become known), then
    onnxscript's optimizer (``onnxscript.optimizer.optimize_ir``: constant folding, its semantics-preserving rewrite
    rules, dead-node removal) with :func:`_fold_policy`, so that the weight reshapes and transposes the exporter
    leaves (inputs over its 8192-element default) fold too, without storing any weight twice. A symbolic batch
    stays symbolic (Reshape targets become ``-1``). The result is standard-domain ONNX for any runtime, not an ONNX
    Runtime-optimized graph. Folding is a size/speed step, so a failure keeps the exporter's graph and says why.

    Returns the manifest's ``export.graph`` seed: ``{"nodes_before_folding": M, "nodes_after_folding": N,
    "folding": tool}`` (top-level graph nodes; ``"folding_skipped": reason`` instead of the tool on failure).
    """
    import onnx_ir as ir
    import onnx_ir.passes.common as common_passes
    import onnxscript
    from onnxscript.optimizer import optimize_ir
    from onnxscript.optimizer._constant_folding import DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT as limit

    path = Path(path)
    model = ir.load(str(path))
    before = len(model.graph)
    tmp = path.with_name(path.name + ".folded.tmp")
    try:
        common_passes.ShapeInferencePass()(model)
        optimize_ir(model, input_size_limit=limit, should_fold=_fold_policy(limit))
        ir.save(model, str(tmp))
    except Exception as e:  # noqa: BLE001 - an optional size/speed step: keep the exporter's graph, say why
        tmp.unlink(missing_ok=True)
        return {"nodes_before_folding": before, "nodes_after_folding": before,
                "folding_skipped": f"{type(e).__name__}: {first_line(e)}"[:300]}
    os.replace(tmp, path)
    return {"nodes_before_folding": before, "nodes_after_folding": len(model.graph),
            "folding": f"onnxscript {onnxscript.__version__} optimizer (constant folding after ONNX shape inference)"}


def op_name(node) -> str:
    """An ONNX node's operator: ``MatMul`` in the standard domain, ``com.microsoft:FusedMatMul`` in another."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"


def op_counts(model) -> dict[str, int]:
    """Operator counts of an ``onnx.ModelProto``'s main graph, named by :func:`op_name`, sorted by name."""
    counts: dict[str, int] = {}
    for n in model.graph.node:
        counts[op_name(n)] = counts.get(op_name(n), 0) + 1
    return dict(sorted(counts.items()))


def graph_counts(path: Path) -> dict:
    """``{"nodes": n, "op_counts": {op: n}}`` of the ONNX file ``path``'s main graph (:func:`op_counts`).
    Raises what ``onnx.load`` raises."""
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    return {"nodes": len(proto.graph.node), "op_counts": op_counts(proto)}


def convert_precision(src: Path, dst: Path, precision: str, quantization: dict | None = None) -> dict | None:
    """Write ``dst`` from the fp32 graph ``src`` at ``precision`` (fp16: float16 compute with float32 I/O; int8:
    :func:`vitedge.quantize.onnx.quantize_int8` with ``quantization`` = {"mode", "method", "calibration": float32
    (N, C, H, W), ...}). Returns the quantization record for the manifest (None for fp32, where nothing is written)."""
    if precision == "fp32":
        return None
    from ..quantize import onnx as oq  # imports torch (through vitedge.data); writing a graph has it loaded anyway
    if precision == "fp16":
        return oq.convert_fp16(src, dst)
    q = dict(quantization or {})
    calib = q.pop("calibration", None)
    q.pop("calibration_info", None)
    progress.stage(f"quantizing to int8 ({q.get('mode', 'static')}"
                   + (f", calibrating on {len(calib)} images)" if calib is not None else ")"))
    return oq.quantize_int8(src, dst, calibration=None if calib is None else np.asarray(calib), **q)


def write_graph(model: "torch.nn.Module", example: "torch.Tensor", directory: Path, options: dict,
                fp32_hook=None) -> dict:
    """Export the portable graph to ``directory/model.onnx`` at ``options["precision"]`` (fp32 | fp16 | int8).

    options: input_names, output_names, dynamic_batch (default True), opset, precision, quantization (int8; see
    :func:`convert_precision`). ``fp32_hook(path)``: a target's own step on the fp32 graph before it is stored as
    the fp32 artifact (ONNX Runtime's fusions); int8/fp16 always start from the portable graph, without it.
    Returns ``{"opset", "export", "quantization", "hook"}`` (``hook``: what ``fp32_hook`` returned, or None);
    ``export["graph"]`` counts the stored file (:func:`stored_graph`).
    """
    precision = options.get("precision", "fp32")
    final = directory / FILENAME
    path = final if precision == "fp32" else directory / "_fp32.onnx"
    info = export_graph(model, example, path, input_names=options["input_names"],
                        output_names=options["output_names"], dynamic=options.get("dynamic_batch", True),
                        opset=options.get("opset"))
    hooked = fp32_hook(path) if fp32_hook is not None and precision == "fp32" else None
    quant = convert_precision(path, final, precision, options.get("quantization"))
    if path != final:
        path.unlink()
    info["graph"] = stored_graph(final, info["graph"])
    return {"opset": info["opset"], "export": info, "quantization": quant, "hook": hooked}


def stored_graph(path: Path, folding: dict, file: str | None = FILENAME) -> dict:
    """The manifest's ``export.graph`` block for the ONNX file at ``path``, as stored (after a target's own steps:
    ONNX Runtime fusions, int8/fp16 conversion, OpenVINO's rewrites): ``{"nodes", "nodes_before_folding",
    "nodes_after_folding", "op_counts", "file", "folding" | "folding_skipped"}``. ``folding``: what
    :func:`fold_constants` returned; ``file``: the file counted, relative to the artifact (None: a graph handed to a
    converter, not stored). Node counts are of the main graph."""
    counts = graph_counts(path)
    return {"nodes": counts["nodes"], "nodes_before_folding": folding["nodes_before_folding"],
            "nodes_after_folding": folding["nodes_after_folding"], "op_counts": counts["op_counts"], "file": file,
            **{k: folding[k] for k in ("folding", "folding_skipped") if k in folding}}
