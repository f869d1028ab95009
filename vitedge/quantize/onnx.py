"""int8 and fp16 for ONNX graphs, run by ONNX Runtime.

Default int8 recipe (ViT-aware, after FQ-ViT / PTQ4ViT / ORT's guidance, see ../shared/ANCHORS.md section 2):
static QDQ, per-channel symmetric int8 weights, int8 activations, calibrated on real images. Only the
weight-bearing ops (MatMul, Gemm, Conv) are quantized: LayerNorm, Softmax, GELU/SiLU/Hardswish and the residual
adds stay float (their activations are the ones known to break under per-tensor int8), and so do the
activation x activation MatMuls of attention (Q K^T and attn V) and the first (patch embedding / stem) and last
(classifier head) weight ops. Everything kept in float is listed in the manifest.

Before quantization the graph goes through ONNX Runtime's pre-processing (symbolic shape inference and
basic optimizations, which fold BatchNorm into the preceding Conv).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

from ..errors import UsageError

__all__ = ["convert_fp16", "quantize_int8", "weight_op_nodes"]

WEIGHT_OPS = ("MatMul", "Gemm", "Conv")


def weight_op_nodes(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Names of MatMul/Gemm/Conv nodes in graph order: (those with a constant weight, those between activations)."""
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    with_weight, act_act = [], []
    for n in model.graph.node:
        if n.op_type in WEIGHT_OPS:
            (with_weight if any(i in consts for i in n.input[1:2]) else act_act).append(n.name)
    return with_weight, act_act


class _Reader:
    """ONNX Runtime CalibrationDataReader over a float32 (N, C, H, W) array, in chunks of ``batch``."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 8):
        self._chunks = iter([{name: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self._chunks, None)

    def rewind(self):  # not needed by the calibrators used here
        raise NotImplementedError


def quantize_int8(fp32_path: Path, out_path: Path, *, mode: str = "static", calibration: np.ndarray | None = None,
                  method: str = "minmax", keep_first_last: bool = True, quantize_attention: bool = False,
                  ops: tuple[str, ...] = WEIGHT_OPS, activation_type: str = "int8") -> dict:
    """Quantize ``fp32_path`` to int8 at ``out_path``; returns the manifest's ``quantization`` dict.

    Args:
        mode: ``static`` (QDQ, calibrated activations) or ``dynamic`` (int8 weights, activations quantized at run
            time; MatMul/Gemm only, as ORT's dynamic Conv is slow).
        calibration: float32 (N, C, H, W) real images (static only).
        method: ``minmax`` | ``percentile`` (99.999th) | ``entropy``.
        keep_first_last: keep the first and last weight op (patch embedding/stem, head) in float.
        quantize_attention: also quantize the activation x activation MatMuls of attention.
        activation_type: ``int8`` (S8S8) or ``uint8`` (U8S8).
    Raises:
        UsageError: static mode without calibration images, unknown method or mode.
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger("root").setLevel(logging.ERROR)  # ORT's quantizer logs via the root logger
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if mode not in ("static", "dynamic"):
        raise UsageError(f"int8 mode must be static or dynamic, got {mode!r}")
    if mode == "static" and method not in methods:
        raise UsageError(f"unknown calibration method {method!r} (known: {', '.join(methods)})")
    if mode == "static" and (calibration is None or len(calibration) == 0):
        raise UsageError("static int8 needs calibration images (--calib DIR|digits)")
    pre_path = out_path.with_name(out_path.stem + ".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=False)
    model = onnx.load(str(pre_path))
    if mode == "dynamic":
        ops = tuple(o for o in ops if o != "Conv")
    with_weight, act_act = weight_op_nodes(model)
    with_weight = [n for n in with_weight if any(m.name == n and m.op_type in ops for m in model.graph.node)]
    exclude = []
    if keep_first_last and len(with_weight) > 2:
        exclude += [with_weight[0], with_weight[-1]]
    if not quantize_attention:
        exclude += act_act
    qtype = QuantType.QInt8 if activation_type == "int8" else QuantType.QUInt8
    if mode == "static":
        name = model.graph.input[0].name
        extra = {"ActivationSymmetric": activation_type == "int8", "WeightSymmetric": True}
        if method == "percentile":
            extra["CalibPercentile"] = 99.999
        quantize_static(str(pre_path), str(out_path), _Reader(name, np.ascontiguousarray(calibration, np.float32)),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(ops), per_channel=True,
                        reduce_range=False, activation_type=qtype, weight_type=QuantType.QInt8,
                        nodes_to_exclude=exclude, calibrate_method=methods[method], extra_options=extra)
    else:
        quantize_dynamic(str(pre_path), str(out_path), op_types_to_quantize=list(ops), per_channel=True,
                         reduce_range=False, weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
    pre_path.unlink(missing_ok=True)
    q = onnx.load(str(out_path))
    counts: dict[str, int] = {}
    for n in q.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    kept_ops = sorted({n.op_type for n in q.graph.node} & {"LayerNormalization", "Softmax", "Gelu", "Sigmoid", "Mul",
                                                            "Add", "HardSwish", "Erf", "Div", "ReduceMean"})
    return {"scheme": f"onnxruntime {mode} int8" + (" QDQ" if mode == "static" else ""),
            "mode": mode, "calibration_method": method if mode == "static" else None,
            "per_channel": True, "weights": "int8 symmetric", "activations":
                (f"{activation_type} ({'symmetric' if activation_type == 'int8' else 'asymmetric'})"
                 if mode == "static" else "dynamic uint8"),
            "quantized_op_types": list(ops), "quantized_nodes": len([n for n in with_weight if n not in exclude]),
            "kept_float_nodes": exclude, "kept_float_op_types": kept_ops,
            "attention_matmuls_quantized": quantize_attention, "graph_ops": dict(sorted(counts.items()))}


def convert_fp16(fp32_path: Path, out_path: Path) -> dict:
    """Convert weights and compute to float16 with float32 inputs/outputs (ORT's float16 converter)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return {"scheme": "onnxruntime.transformers.float16 (keep_io_types=True)", "io": "float32"}
