"""int8 and fp16 for ONNX graphs, run by ONNX Runtime.

Default int8 recipe (ViT-aware, after FQ-ViT / PTQ4ViT / ORT's guidance):
static QDQ, per-channel symmetric int8 weights, int8 activations, calibrated on real images. Only the
weight-bearing ops (MatMul, Gemm, Conv) are quantized: LayerNorm, Softmax, GELU/SiLU/Hardswish and the residual
adds stay float (their activations are the ones known to break under per-tensor int8), and so do the
activation x activation MatMuls of attention (Q K^T and attn V) and the first (patch embedding / stem) and last
(classifier head) weight ops. Everything kept in float is listed in the manifest.

Before quantization the graph goes through ONNX Runtime's pre-processing (symbolic shape inference and
basic optimizations, which fold BatchNorm into the preceding Conv).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx

from ..errors import UsageError
from ..machine import machine_info
from ..models.registry import family_recipe

__all__ = ["SESSION_CONFIG_FOLD_WEIGHTS", "convert_fp16", "default_int8_recipe", "int8_conv_weight_storage", "quantize_int8",
           "weight_op_nodes"]

# With this ONNX Runtime session option, DequantizeLinear nodes on constant weights are constant-folded at load
# (and QDQ node units are not fused), so int8-stored weights cost nothing per run.
SESSION_CONFIG_FOLD_WEIGHTS = {"session.disable_quant_qdq": "1"}

WEIGHT_OPS = ("MatMul", "Gemm", "Conv")


# Per-family default int8 recipes (recipe "onnx_int8" of the family spec, vitedge/models/families/), chosen by
# interleaved runs on digits-trained models (benchmarks/quantization.py, docs/quantization.md), the faster of
# static and dynamic: dynamic for ViT/DeiT (Q/DQ around the fused attention and BiasGelu cost more than static
# scales save), T2T-ViT (static ran 1.13x fp32 at batch 8), RegionViT (static lost 1.11 points of top-1) and
# LeViT (static failed the parity gate on LeViT-192); static QDQ U8S8 for the other families; for
# MobileViT dynamic MatMuls with its small convolutions float at run time (int8 storage, see
# int8_conv_weight_storage): ORT fuses their QDQ into QLinearConv, which ran slower than its float NCHWc
# convolutions with fused SiLU. The onnx target quantizes its fused fp32 graph (vitedge.targets.onnx) and times
# the result against it at export (quantization.speed_vs_fp32).


def default_int8_recipe(family: str | None) -> dict:
    """The default ONNX int8 options for a model family (``mode``, ``method``, ...), a copy."""
    return family_recipe(family, "onnx_int8")


def weight_op_nodes(model: onnx.ModelProto) -> tuple[list[str], list[str], list[str]]:
    """Names of MatMul/Gemm/Conv nodes in graph order: (those with a constant weight, those between activations,
    depthwise convolutions (group == input channels > 1))."""
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    with_weight, act_act, depthwise = [], [], []
    for n in model.graph.node:
        if n.op_type in WEIGHT_OPS:
            (with_weight if any(i in consts for i in n.input[1:2]) else act_act).append(n.name)
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            if n.op_type == "Conv" and group > 1:
                depthwise.append(n.name)
    return with_weight, act_act, depthwise


def int8_conv_weight_storage(path: Path, exclude: set[str] = frozenset()) -> int:
    """Store every Conv weight of the graph at ``path`` as int8 (per output channel, symmetric) behind a
    ``DequantizeLinear``; rewrites the file in place and returns the number of convolutions converted.

    Compute stays float: run the graph with :data:`SESSION_CONFIG_FOLD_WEIGHTS` so ONNX Runtime folds the
    dequantization into float weights once, at load. For models whose convolutions are too small for int8
    kernels to beat float ones (MobileViT at small inputs), this gives int8's size without its Q/DQ overhead.
    """
    from onnx import helper, numpy_helper
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    dq_nodes, done = [], set()
    for node in model.graph.node:
        w_name = node.input[1] if node.op_type == "Conv" and len(node.input) > 1 else None
        if w_name not in inits or node.name in exclude or w_name in done:
            continue
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        scale = np.abs(w.reshape(w.shape[0], -1)).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.round(w / scale.reshape(-1, *[1] * (w.ndim - 1))), -127, 127).astype(np.int8)
        model.graph.initializer.remove(inits[w_name])
        model.graph.initializer.extend([numpy_helper.from_array(q, f"{w_name}_int8"),
                                        numpy_helper.from_array(scale.astype(np.float32), f"{w_name}_scale"),
                                        numpy_helper.from_array(np.zeros(w.shape[0], np.int8), f"{w_name}_zero_point")])
        dq_nodes.append(helper.make_node("DequantizeLinear", [f"{w_name}_int8", f"{w_name}_scale",
                                                              f"{w_name}_zero_point"], [w_name], axis=0,
                                         name=f"{w_name}_dequantize"))
        done.add(w_name)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(dq_nodes + nodes)
    onnx.save(model, str(path))
    return len(dq_nodes)


@contextlib.contextmanager
def _working_directory(path: str):
    """Run the block in ``path`` as the working directory (contextlib.chdir is Python 3.11+)."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


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
                  quantize_depthwise: bool = False, ops: tuple[str, ...] = WEIGHT_OPS,
                  activation_type: str = "uint8", reduce_range: bool | None = None,
                  conv_weight_storage: bool = False, quantize_bias: bool = True) -> dict:
    """Quantize ``fp32_path`` to int8 at ``out_path``; returns the manifest's ``quantization`` dict.

    Args:
        mode: ``static`` (QDQ, calibrated activations) or ``dynamic`` (int8 weights, activations quantized at run
            time; MatMul/Gemm only, as ORT's dynamic Conv is slow).
        calibration: float32 (N, C, H, W) real images (static only).
        method: ``minmax`` | ``percentile`` (99.999th) | ``entropy``.
        keep_first_last: keep the first and last weight op (patch embedding/stem, head) in float.
        quantize_attention: also quantize the activation x activation MatMuls of attention.
        quantize_depthwise: also quantize depthwise convolutions (ORT's int8 depthwise kernels are slower than
            its float ones on x86, measured on MobileViT).
        activation_type: ``uint8`` (U8S8, asymmetric activations: x86's VNNI fast path) or ``int8`` (S8S8).
        reduce_range: 7-bit weights, which avoid U8S8 saturation on x86 without VNNI (ORT's guidance);
            default: on when the CPU lacks VNNI.
        conv_weight_storage: (dynamic mode) also store Conv weights as int8, computed in float after a
            dequantization folded at load (:func:`int8_conv_weight_storage`); the result's ``session_config``
            must be applied by the runner.
        quantize_bias: (static) store Conv/Gemm biases as int32 behind a DequantizeLinear (ONNX Runtime's
            default); False keeps them float, as TensorRT's explicit quantization needs (its DequantizeLinear
            takes int8/fp8/int4 only).
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
    fp32_path, out_path = Path(fp32_path).absolute(), Path(out_path).absolute()
    pre_path = out_path.with_name(out_path.stem + ".pre.onnx")
    # ORT's symbolic shape inference does not know every contrib op of a fused graph (BiasGelu + MultiHeadAttention
    # of ViT); ONNX's own shape inference is then enough for the quantizer. On failure ORT dumps
    # sym_shape_infer_temp.onnx and its external data into the working directory: run it in a throwaway one.
    with tempfile.TemporaryDirectory(prefix="vitedge-quant-") as scratch, _working_directory(scratch):
        try:
            quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - ORT raises a bare Exception ("Incomplete symbolic shape inference")
            quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=True)
    model = onnx.load(str(pre_path))
    if mode == "dynamic":
        ops = tuple(o for o in ops if o != "Conv")
    with_weight, act_act, depthwise = weight_op_nodes(model)
    with_weight = [n for n in with_weight if any(m.name == n and m.op_type in ops for m in model.graph.node)]
    exclude = []
    if keep_first_last and len(with_weight) > 2:
        exclude += [with_weight[0], with_weight[-1]]
    if not quantize_attention:
        exclude += act_act
    if not quantize_depthwise:
        exclude += [n for n in depthwise if n not in exclude]
    if reduce_range is None:
        flags = machine_info()["flags"]
        reduce_range = activation_type == "uint8" and not ({"avx512_vnni", "avx_vnni", "asimddp"} & set(flags))
    qtype = QuantType.QInt8 if activation_type == "int8" else QuantType.QUInt8
    if mode == "static":
        name = model.graph.input[0].name
        extra = {"ActivationSymmetric": activation_type == "int8", "WeightSymmetric": True,
                 "QuantizeBias": quantize_bias}
        if method == "percentile":
            extra["CalibPercentile"] = 99.999
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
            quantize_static(str(pre_path), str(out_path), _Reader(name, np.ascontiguousarray(calibration, np.float32)),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(ops), per_channel=True,
                            reduce_range=reduce_range, activation_type=qtype, weight_type=QuantType.QInt8,
                            nodes_to_exclude=exclude, calibrate_method=methods[method], extra_options=extra)
    else:
        quantize_dynamic(str(pre_path), str(out_path), op_types_to_quantize=list(ops), per_channel=True,
                         reduce_range=reduce_range, weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
    pre_path.unlink(missing_ok=True)
    n_stored = int8_conv_weight_storage(out_path, set(exclude)) if conv_weight_storage and mode == "dynamic" else 0
    q = onnx.load(str(out_path))
    counts: dict[str, int] = {}
    for n in q.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    kept_ops = sorted({n.op_type for n in q.graph.node} & {"LayerNormalization", "Softmax", "Gelu", "Sigmoid", "Mul",
                                                            "Add", "HardSwish", "Erf", "Div", "ReduceMean"})
    return {"scheme": f"onnxruntime {mode} int8" + (" QDQ" if mode == "static" else ""),
            "mode": mode, "calibration_method": method if mode == "static" else None,
            "per_channel": True, "reduce_range": reduce_range, "weights": "int8 symmetric", "activations":
                (f"{activation_type} ({'symmetric' if activation_type == 'int8' else 'asymmetric'})"
                 if mode == "static" else "dynamic uint8"),
            "quantized_op_types": list(ops), "quantized_nodes": len([n for n in with_weight if n not in exclude]),
            "kept_float_nodes": exclude, "kept_float_op_types": kept_ops,
            "attention_matmuls_quantized": quantize_attention, "depthwise_quantized": quantize_depthwise,
            "conv_int8_weight_storage": n_stored,
            "session_config": SESSION_CONFIG_FOLD_WEIGHTS if n_stored else {},
            "graph_ops": dict(sorted(counts.items()))}


def topological_sort_graph(graph) -> bool:
    """Reorder ``graph.node`` (an ``onnx.GraphProto``) topologically, in place, as the ONNX spec requires; stable
    (keeps the existing order where it can), subgraphs (If/Loop/Scan bodies) included. Returns whether the order
    changed. Raises ValueError on a cycle.

    The order is onnx_ir's (``onnx_ir.Graph.sort``, what its ``TopologicalSortPass`` runs) computed on an onnx_ir
    view of ``graph``; only the order of the existing ``NodeProto`` messages is written back, the rest of ``graph``
    (value_info, initializers, names) stays byte for byte as it was."""
    import onnx_ir as ir

    ir_graph = ir.serde.deserialize_graph(graph)
    pairs = []  # (GraphProto, onnx_ir graph, {ir node: its NodeProto}, ir order before the sort), subgraphs first
    _pair_graphs(graph, ir_graph, pairs)
    try:
        ir_graph.sort()
    except ValueError as e:
        raise ValueError(f"the ONNX graph has a cycle ({e})") from None
    changed = False
    for proto, ir_g, protos, before in pairs:  # subgraphs before their parent: extend() copies the messages
        order = list(ir_g)
        if any(a is not b for a, b in zip(order, before)):
            ordered = [protos[n] for n in order]
            del proto.node[:]
            proto.node.extend(ordered)
            changed = True
    return changed


def _pair_graphs(proto, ir_graph, pairs: list) -> None:
    """Append (``proto``, ``ir_graph``, node map, node order) for ``proto`` and its subgraphs, innermost first; the
    nodes of a freshly deserialized onnx_ir graph are those of its ``GraphProto``, in the same order."""
    nodes = list(ir_graph)
    for node_proto, node in zip(proto.node, nodes):
        for attr in node_proto.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _pair_graphs(attr.g, node.attributes[attr.name].value, pairs)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub_proto, sub in zip(attr.graphs, node.attributes[attr.name].value):
                    _pair_graphs(sub_proto, sub, pairs)
    pairs.append((proto, ir_graph, dict(zip(nodes, proto.node)), nodes))


def convert_fp16(fp32_path: Path, out_path: Path) -> dict:
    """Convert weights and compute to float16 with float32 inputs/outputs (ORT's float16 converter)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    topological_sort_graph(model.graph)  # the converter appends the input Casts after the nodes that read them
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out_path))
    return {"scheme": "onnxruntime.transformers.float16 (keep_io_types=True)", "io": "float32"}
