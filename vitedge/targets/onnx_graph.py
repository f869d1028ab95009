"""The portable ONNX graph: the one module the ``onnx``, ``trt`` and ``openvino`` targets build on.

``torch.onnx.export(dynamo=True)`` with a batch-2 example and ``Dim("batch")`` (a batch-1 example may specialise the
batch to 1, seen with torch 2.13); if it raises, the legacy TorchScript-based exporter (opset 17, ``dynamic_axes``)
runs instead and the returned info records which one ran and why. Every graph passes ``onnx.checker`` (full check).
The graph is standard-domain ONNX: runtime-specific rewrites (ONNX Runtime's fusions, OpenVINO's attention form,
TensorRT's graph check) are each target's own step after this one. fp16 and int8 graphs are converted from the
portable fp32 graph (:mod:`vitedge.quantize.onnx`).

Importing this module does not import torch (``write_graph`` does), so the ONNX Runtime target that imports it can
load and run artifacts without torch.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import progress
from ..errors import first_line

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_OPSET", "FILENAME", "LEGACY_OPSET", "MAX_BATCH", "convert_precision", "export_graph",
           "write_graph"]

FILENAME = "model.onnx"
DEFAULT_OPSET = 18
LEGACY_OPSET = 17
MAX_BATCH = 1024


def export_graph(model: "torch.nn.Module", example: "torch.Tensor", path: Path, *, input_names: list[str],
                 output_names: list[str], dynamic: bool = True, opset: int | None = None) -> dict:
    """Export ``model`` on ``example`` (float32 (B, C, H, W)) to the fp32 ONNX file ``path``.

    ``dynamic``: dimension 0 symbolic (at most :data:`MAX_BATCH`); a batch-1 example is widened to 2 first.
    Returns the export info for the manifest: ``method``, ``opset``, ``ops`` (op histogram) and, after a fallback
    to the legacy exporter, ``fallback_reason``. Raises: the exporter's error when the legacy one fails too;
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
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops: dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    info["ops"] = dict(sorted(ops.items()))
    return info


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
    Returns ``{"opset", "export", "quantization", "hook"}`` (``hook``: what ``fp32_hook`` returned, or None).
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
    return {"opset": info["opset"], "export": info, "quantization": quant, "hook": hooked}
