"""ONNX target: the portable graph of :mod:`vitedge.targets.onnx_graph` (``torch.onnx.export(dynamo=True)`` with a
symbolic batch dimension, legacy exporter as the recorded fallback), run by ONNX Runtime.

For the ``onnx`` target (run by ONNX Runtime) the stored fp32 graph then gets ONNX Runtime-only fusions that ORT's
own optimizer misses, chosen per model family by measurement (the family's ``"onnx"`` recipe,
:func:`vitedge.models.registry.family_recipe`): onnxscript's ORT fusion rules
(``onnxscript.rewriter.ort_fusions``, the rules behind ``optimize_for_ort``) after its constant folding and shape
simplification. The decomposed erf GELU the exporter writes (``x * (0.5 * (erf(x / sqrt 2) + 1))``) is an operand
order ORT's GeluFusion does not match, so it becomes ``com.microsoft`` Gelu (then BiasGelu); attention
(``MatMul -> Softmax -> MatMul`` from ``scaled_dot_product_attention``) can become ``com.microsoft``
MultiHeadAttention. SkipLayerNormalization is left out (its CPU kernel measured slower than Add + LayerNormalization
here). The portable graph itself, which TensorRT and OpenVINO build on and int8/fp16 start from, is
:mod:`vitedge.targets.onnx_graph` (standard-domain ONNX).

The artifact's manifest records, under ``onnxruntime``, the session settings :func:`load` applies
(``graph_optimization_level``, ``session_config``) and :func:`fusion_report`: the op counts of the stored graph and of
the graph ONNX Runtime really runs (``SessionOptions.optimized_model_filepath`` at that level), the fused operators
in it, and the decomposed patterns left unfused.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from ..errors import ArtifactError, RuntimeMissingError, UsageError, first_line
from ..machine import default_threads
from ..manifest import Artifact
from .. import progress
from . import Target, register_target
from ..models.registry import family_recipe
from ..safety import check_onnx_external_data
from ..safety import onnx_external_locations

if TYPE_CHECKING:  # torch is imported by write() only: loading and running an artifact needs no torch
    import torch

from .onnx_graph import DEFAULT_OPSET, FILENAME, LEGACY_OPSET, MAX_BATCH  # noqa: F401 - re-exported
from .onnx_graph import convert_precision, graph_counts, op_counts, op_name, write_graph
from .speed import SPEED_BUDGET_S, int8_vs_fp32


PRECISIONS = {"fp32": None, "fp16": None, "int8": ("static", "dynamic")}

GRAPH_LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")
GRAPH_LEVEL = "ORT_ENABLE_ALL"  # what load() opens new artifacts with (and what older artifacts always got)
# Session config entries stored with new artifacts (ONNX Runtime's "session.*" keys, see
# onnxruntime_session_options_config_keys.h), chosen by interleaved runs: intra-op workers spin between parallel
# sections (ORT's default, stored explicitly). Blocking ("0") won only while other processes loaded every core
# (DeiT-Ti 34 -> 23 ms, scripts/onnx_fusion_bench.py); on an idle 2-core Xeon it cost 26-36% (LeViT-128S b1:
# 4.96 -> 6.56 ms, ViT-style ONNX alike), and apps measure latency on a quiet device.
SESSION_CONFIG = {"session.intra_op.allow_spinning": "1"}
# The only session config entries a manifest may ask for: the ones vitedge itself writes (SESSION_CONFIG above,
# vitedge.quantize.onnx.SESSION_CONFIG_FOLD_WEIGHTS) and the inter-op twin of the first, each "0" or "1". ONNX Runtime
# has keys that write files (session.optimized_model_filepath, session.collect_node_memory_stats_to_file, profiling)
# or change what runs; a hand-edited manifest must not reach them.
ALLOWED_SESSION_CONFIG = {"session.intra_op.allow_spinning": ("0", "1"), "session.inter_op.allow_spinning": ("0", "1"),
                          "session.disable_quant_qdq": ("0", "1")}

FUSIONS = ("gelu", "attention")
# Per-family default fusions of the stored fp32 graph, kept where interleaved runs measured a win (README, ONNX
# section; scripts/onnx_fusion_bench.py): each family spec declares its own (recipe "onnx", e.g. ViT/DeiT gelu +
# attention in vitedge/models/families/vit.py); families not measured keep ORT's own fusions.

# Operators that stand for a fused subgraph (ONNX Runtime contrib ops and the standard ops that replace a decomposed
# pattern), reported by fusion_report when the graph ONNX Runtime runs holds them.
FUSED_OPS = frozenset({
    "LayerNormalization", "HardSwish", "Gelu", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger",
    *(f"com.microsoft:{op}" for op in (
        "Gelu", "FastGelu", "BiasGelu", "QuickGelu", "GemmFastGelu", "BiasAdd", "BiasSoftmax",
        "SkipLayerNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization",
        "EmbedLayerNormalization", "FusedMatMul", "FusedConv", "FusedGemm", "NhwcConv", "NhwcFusedConv",
        "Attention", "MultiHeadAttention", "GroupQueryAttention", "QGemm", "QLinearConv", "QLinearAdd",
        "QLinearMul", "QLinearSigmoid", "QLinearSoftmax", "QLinearConcat", "QLinearAveragePool",
        "QLinearGlobalAveragePool", "QLinearLeakyRelu", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
        "MatMulNBits", "QAttention")),
    "com.microsoft.nchwc:Conv",
})


def write(model: "torch.nn.Module", example: "torch.Tensor", directory: Path, options: dict) -> dict:
    """Export ``model`` to ``directory/model.onnx`` for ONNX Runtime: the portable graph
    (:func:`vitedge.targets.onnx_graph.write_graph`), then, for fp32, the ONNX Runtime fusions of
    :func:`optimize_graph`, and the ``onnxruntime`` manifest block (session settings, fusion report).

    options: input_names, output_names, dynamic_batch, opset, precision (fp32 | fp16 | int8) and, for int8,
    quantization = {"mode": "static"|"dynamic", "method": "minmax"|"percentile"|"entropy",
    "calibration": float32 (N, C, H, W) array, ...} (see :func:`vitedge.quantize.onnx.quantize_int8`),
    spec (its ``family`` picks the ``"onnx"`` recipe's fusions) and
    target_options = {"fusions": None (family default) | list or comma-separated subset of :data:`FUSIONS`}.
    Raises UsageError for an unknown fusion; exporter failures propagate (the driver reports them in one line).
    """
    fusions = (options.get("target_options") or {}).get("fusions")
    if fusions is None:
        fusions = family_recipe((options.get("spec") or {}).get("family"), "onnx")["fusions"]
    elif isinstance(fusions, str):
        fusions = tuple(f for f in fusions.split(",") if f)
    def hook(path):
        return optimize_graph(path, path, tuple(fusions))
    if options.get("precision") == "int8":
        g = _write_int8(model, example, directory, options, hook)
    else:
        g = write_graph(model, example, directory, options, fp32_hook=hook)
    quant = g["quantization"]
    session_config = dict(SESSION_CONFIG)
    run_config = {**session_config, **((quant or {}).get("session_config") or {})}
    final = directory / FILENAME
    return {"artifact": FILENAME, "backend": "onnxruntime", "opset": g["opset"], "export": g["export"],
            "quantization": quant,
            "manifest": {"onnxruntime": {"graph_optimization_level": GRAPH_LEVEL, "session_config": session_config,
                                         "graph_optimizer": g["hook"],
                                         "fusions": fusion_report(final, GRAPH_LEVEL, run_config)}}}


def _write_int8(model, example, directory: Path, options: dict, hook) -> dict:
    """int8 for ONNX Runtime: quantize the fp32 graph the fp32 artifact stores (the portable graph with this
    family's ORT fusions, e.g. MultiHeadAttention), not the bare portable graph (without them MobileViT-XXS int8 ran
    1.1-1.2x its fused fp32 graph; from the fused graph 0.87x), then time the int8 file against that fp32 graph
    (:func:`speed_vs_fp32`). Returns :func:`write_graph`'s dict, its ``quantization`` holding ``from_graph``,
    ``speed_vs_fp32`` and ``speed``."""
    with tempfile.TemporaryDirectory(prefix="vitedge-onnx-fp32-") as tmp:
        fp32 = Path(tmp) / FILENAME
        g = write_graph(model, example, Path(tmp), {**options, "precision": "fp32", "quantization": None},
                        fp32_hook=hook)
        quant = convert_precision(fp32, directory / FILENAME, "int8", options.get("quantization"))
        quant["from_graph"] = {"graph": "the fp32 artifact's graph", "fusions": list(g["hook"]["fusions"])}
        progress.stage("timing int8 against fp32 on ONNX Runtime (batch 1)")
        try:
            speed = speed_vs_fp32(fp32, directory / FILENAME, threads=default_threads(), fp32_config=SESSION_CONFIG,
                                  int8_config={**SESSION_CONFIG, **(quant.get("session_config") or {})},
                                  input_shape=tuple(example.shape[1:]))
        except Exception as e:  # noqa: BLE001 - a failed timing must not cost the export; parity runs next
            speed = {"skipped": f"{type(e).__name__}: {first_line(e, 200)}"}
    if "speed_vs_fp32" in speed:
        quant["speed_vs_fp32"] = speed["speed_vs_fp32"]
    quant["speed"] = speed
    counts = graph_counts(directory / FILENAME)  # export.graph counts the stored int8 file, not the fp32 temporary
    export_info = {**g["export"], "graph": {**g["export"]["graph"], "nodes": counts["nodes"],
                                            "op_counts": counts["op_counts"]}}
    return {**g, "export": export_info, "quantization": quant, "hook": None}


def speed_vs_fp32(fp32_path: Path, int8_path: Path, *, threads: int, fp32_config: dict, int8_config: dict,
                  input_shape: tuple[int, ...], budget_s: float = SPEED_BUDGET_S) -> dict:
    """Time an int8 ONNX file against the fp32 one it was quantized from, in ONNX Runtime on this CPU: batch 1,
    ``threads`` intra-op threads, each file with its own session config, for about ``budget_s`` seconds
    (:func:`vitedge.targets.speed.int8_vs_fp32`: alternating rounds).

    ``input_shape``: (C, H, W); the input is a seeded standard-normal float32 (1, C, H, W).
    Returns the manifest's ``quantization.speed`` block (:func:`~vitedge.targets.speed.int8_vs_fp32`).
    Raises: ONNX Runtime's errors when a file does not load.
    """
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
    calls = []
    for path, config in ((fp32_path, fp32_config), (int8_path, int8_config)):
        sess = ort.InferenceSession(str(path), session_options(threads, GRAPH_LEVEL, config),
                                    providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        calls.append(lambda sess=sess, feed=feed: sess.run(None, feed))
    return int8_vs_fp32(*calls, threads=threads, budget_s=budget_s,
                        runtime=f"onnxruntime-{ort.__version__} CPUExecutionProvider")


def optimize_graph(src: Path, dst: Path, fusions: tuple[str, ...]) -> dict:
    """Apply ONNX Runtime fusions that ORT's own optimizer misses to the ONNX file ``src``, write ``dst``.

    ``fusions``: a subset of :data:`FUSIONS`: ``gelu`` (decomposed erf GELU -> ``com.microsoft`` Gelu, then BiasGelu
    with a preceding bias Add), ``attention`` (MatMul/Softmax/MatMul from ``scaled_dot_product_attention`` ->
    ``com.microsoft`` MultiHeadAttention). Any fusion first runs onnxscript's constant folding and shape
    simplification (Shape/Gather/Concat chains feeding Reshape become constants; the batch stays symbolic). Empty:
    ``dst`` is ``src`` unchanged. Rules: ``onnxscript.rewriter.ort_fusions``, the passes of its ``optimize_for_ort``
    without SkipLayerNormalization (measured slower on CPU); written against onnxscript 0.7.2 (constraints.txt),
    whose per-rule functions are module-level but not its top-level API: if they are missing or a rule fails, ``dst``
    gets the unfused graph and the result says why (``skipped``).

    Returns the manifest's ``graph_optimizer`` dict: tool, fusions applied, per-rule match counts[, skipped].
    Raises UsageError for an unknown fusion name.
    """
    unknown = [f for f in fusions if f not in FUSIONS]
    if unknown:
        raise UsageError(f"unknown ONNX fusion {unknown[0]!r} (known: {', '.join(FUSIONS)})")
    if not fusions:
        if Path(src) != Path(dst):
            Path(dst).write_bytes(Path(src).read_bytes())
        return {"tool": None, "fusions": [], "matches": {}}
    tmp = Path(dst).with_name(Path(dst).name + ".fused.tmp")
    try:
        tool, matches = _onnxscript_fusions(Path(src), tmp, fusions)
    except Exception as e:  # noqa: BLE001 - an optional speed-up: keep the exporter's graph, say why
        tmp.unlink(missing_ok=True)
        if Path(src) != Path(dst):
            Path(dst).write_bytes(Path(src).read_bytes())
        return {"tool": None, "fusions": [], "matches": {}, "skipped": f"{type(e).__name__}: {first_line(e)}"}
    os.replace(tmp, dst)
    return {"tool": tool, "fusions": list(fusions), "matches": matches}


def _onnxscript_fusions(src: Path, dst: Path, fusions: tuple[str, ...]) -> tuple[str, dict]:
    import onnx_ir as ir
    import onnx_ir.passes.common as common_passes
    import onnxscript
    from onnxscript.optimizer import optimize
    from onnxscript.rewriter import rewrite
    from onnxscript.rewriter.ort_fusions import ORT_PATTERN_REWRITE_RULES, _core
    from onnxscript.rewriter.rules.common import _gemm_to_matmul_add

    model = ir.load(str(src))
    rewrite(model, [_gemm_to_matmul_add.gemm_to_matmul_add_rule])
    model = _core._pre_optimize(model)  # shape inference, constant folding, shape simplification
    n: dict[str, int] = {}
    if "gelu" in fusions:
        from onnxscript.rewriter.ort_fusions.erfgelu import fuse_erfgelu
        n["erf_gelu"] = fuse_erfgelu(model)
    if "attention" in fusions:
        from onnxscript.rewriter.ort_fusions.attention import fuse_attention
        from onnxscript.rewriter.ort_fusions.mha import fuse_mha1, fuse_mha2
        from onnxscript.rewriter.ort_fusions.mha_bias import fuse_mha_bias
        from onnxscript.rewriter.ort_fusions.mha_scale import fuse_mha_scale
        from onnxscript.rewriter.ort_fusions.sdpa import fuse_sdpa
        from onnxscript.rewriter.ort_fusions.sdpa_via_mha import replace_sdpa_by_mha
        n["sdpa"] = fuse_sdpa(model, apply_shape_inference=True)
        n["mha1"], n["mha2"] = fuse_mha1(model), fuse_mha2(model)
        n["mha_scale"] = fuse_mha_scale(model)
        if n["mha1"] or n["mha2"]:
            n["mha_bias"], n["attention"] = fuse_mha_bias(model), fuse_attention(model)
        n["sdpa_via_mha"] = replace_sdpa_by_mha(model)
    if "gelu" in fusions:
        from onnxscript.rewriter.ort_fusions.bias_gelu import fuse_bias_gelu
        from onnxscript.rewriter.ort_fusions.gelu import fuse_gelu
        n["tanh_gelu"], n["bias_gelu"] = fuse_gelu(model), fuse_bias_gelu(model)
    optimize(model)  # inline what no later rule consumed, drop dead nodes
    rewrite(model, ORT_PATTERN_REWRITE_RULES)
    ir.passes.Sequential(common_passes.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
                         common_passes.RemoveInitializersFromInputsPass(), common_passes.ShapeInferencePass())(model)
    ir.save(model, str(dst))
    tool = (f"onnxscript {onnxscript.__version__} rewriter.ort_fusions (constant folding, shape simplification, then "
            "the fusions asked)")
    return tool, {k: int(v) for k, v in n.items() if v}


def _consumers(model) -> dict[str, list]:
    out: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def unfused_patterns(model) -> dict[str, int]:
    """Decomposed patterns left in an ``onnx.ModelProto`` (counts, zeros omitted): ``erf_gelu`` (Erf: a GELU not
    fused), ``tanh`` (Tanh: e.g. a tanh GELU), ``softmax_attention`` (a Softmax feeding a MatMul: attention outside
    a fused attention kernel), ``add_layernorm`` (an Add feeding a LayerNormalization: residual + norm not fused into
    SkipLayerNormalization), ``decomposed_layernorm`` (ReduceMean feeding Sub), ``sigmoid_mul`` (x * sigmoid(x):
    SiLU not fused), ``hardsigmoid_mul`` (HardSwish decomposed), ``batchnorm`` (BatchNormalization not folded)."""
    cons = _consumers(model)
    produced = {o: n for n in model.graph.node for o in n.output}

    def feeds(node, *ops):
        return any(c.op_type in ops for o in node.output for c in cons.get(o, []))

    def self_gate(node):  # x -> Sigmoid -> Mul(x, .)
        return any(c.op_type == "Mul" and node.input[0] in c.input for o in node.output for c in cons.get(o, []))

    found = {
        "erf_gelu": sum(n.op_type == "Erf" for n in model.graph.node),
        "tanh": sum(n.op_type == "Tanh" for n in model.graph.node),
        "softmax_attention": sum(n.op_type == "Softmax" and feeds(n, "MatMul", "FusedMatMul")
                                 for n in model.graph.node),
        "add_layernorm": sum(n.op_type == "LayerNormalization" and n.input[0] in produced
                             and produced[n.input[0]].op_type == "Add" for n in model.graph.node),
        "decomposed_layernorm": sum(n.op_type == "ReduceMean" and feeds(n, "Sub") for n in model.graph.node),
        "sigmoid_mul": sum(n.op_type == "Sigmoid" and self_gate(n) for n in model.graph.node),
        "hardsigmoid_mul": sum(n.op_type == "HardSigmoid" and self_gate(n) for n in model.graph.node),
        "batchnorm": sum(n.op_type == "BatchNormalization" for n in model.graph.node),
    }
    return {k: v for k, v in found.items() if v}


def fusion_report(path: Path, level: str = GRAPH_LEVEL, session_config: dict | None = None) -> dict:
    """What ONNX Runtime makes of the ONNX file at ``path``: it opens it with the CPU execution provider at
    ``level`` with ``session_config`` (as :func:`load` would), writes the graph it optimized
    (``SessionOptions.optimized_model_filepath``) to a temp file and reads it back.

    Returns ``{"level", "onnxruntime", "ops_stored", "ops_optimized", "fused", "fused_by_onnxruntime",
    "fused_activations", "unfused"}``: op counts before/after, the :data:`FUSED_OPS` in the optimized graph (those
    ORT itself added apart), activations folded into convolution/GEMM kernels (``op+activation``: count), and
    :func:`unfused_patterns` of the optimized graph. The optimized graph at ORT_ENABLE_ALL may hold
    layout transforms for this CPU (NCHWc), so the report describes the machine it ran on.
    Raises RuntimeMissingError without onnxruntime, ArtifactError if ORT cannot open the file.
    """
    import onnx
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeMissingError("onnxruntime is not installed (pip install onnxruntime)") from None
    stored = onnx.load(str(path), load_external_data=False)
    with tempfile.TemporaryDirectory(prefix="vitedge-ort-") as tmp:
        so = session_options(1, level, session_config)
        so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        try:
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT's own exception types, long messages
            raise ArtifactError(f"ONNX Runtime cannot open {path}: {str(e).strip().splitlines()[0][:300]}") from None
        optimized = onnx.load(so.optimized_model_filepath, load_external_data=False)
    before, after = op_counts(stored), op_counts(optimized)
    fused = {k: v for k, v in after.items() if k in FUSED_OPS}
    activations: dict[str, int] = {}  # activations folded into FusedConv / FusedGemm / NCHWc Conv kernels
    for n in optimized.graph.node:
        act = next((a.s.decode() for a in n.attribute if a.name == "activation"), None)
        if act:
            key = f"{op_name(n)}+{act}"
            activations[key] = activations.get(key, 0) + 1
    return {"level": level, "onnxruntime": ort.__version__, "ops_stored": before, "ops_optimized": after,
            "fused": fused, "fused_by_onnxruntime": {k: v - before.get(k, 0) for k, v in fused.items()
                                                     if v > before.get(k, 0)},
            "fused_activations": dict(sorted(activations.items())), "unfused": unfused_patterns(optimized)}


def check_session_config(session_config, where: str = "ONNX Runtime", key_name: str = "session_config") -> dict:
    """Return ``session_config`` if every entry is one vitedge writes (:data:`ALLOWED_SESSION_CONFIG`: key and
    string value "0"/"1"); nothing else may reach ONNX Runtime (some keys write files wherever they name).

    Raises:
        ArtifactError: ``{where}: {key_name} key 'K' is not one vitedge writes; refusing it`` (or the value / the
            mapping itself is refused), one line.
    """
    if session_config is None:
        return {}
    if not isinstance(session_config, dict):
        raise ArtifactError(f"{where}: {key_name} is not a mapping of ONNX Runtime config keys to strings")
    for key, value in session_config.items():
        if key not in ALLOWED_SESSION_CONFIG:
            raise ArtifactError(f"{where}: {key_name} key {str(key)[:100]!r} is not one vitedge writes; refusing it")
        if not isinstance(value, str) or value not in ALLOWED_SESSION_CONFIG[key]:
            raise ArtifactError(f"{where}: {key_name} key {key!r} has value {str(value)[:40]!r}, not one of "
                                f"{', '.join(repr(v) for v in ALLOWED_SESSION_CONFIG[key])}; refusing it")
    return dict(session_config)


def session_options(threads: int | None, level: str = GRAPH_LEVEL, session_config: dict | None = None):
    """An ``onnxruntime.SessionOptions``: ``threads`` intra-op threads (None: :func:`vitedge.machine.default_threads`), one inter-op
    thread, graph optimization ``level`` (a name in :data:`GRAPH_LEVELS`), errors-only logging, then the
    ``session_config`` entries (only those of :data:`ALLOWED_SESSION_CONFIG`, :func:`check_session_config`).
    Raises ArtifactError for an unknown level or a config entry vitedge does not write (before any option is set)."""
    import onnxruntime as ort
    if level not in GRAPH_LEVELS:
        raise ArtifactError(f"unknown ONNX Runtime graph optimization level {level!r} (known: {', '.join(GRAPH_LEVELS)})")
    session_config = check_session_config(session_config)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads or default_threads()  # torch's setting if torch is loaded
    so.inter_op_num_threads = 1
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    for key, value in session_config.items():
        so.add_session_config_entry(key, value)
    return so


class OnnxRuntimeRunner:
    """Runs an ONNX file with ONNX Runtime's CPU execution provider."""

    def __init__(self, path: Path, threads: int | None = None, session_config: dict | None = None,
                 external_data: list[str] | None = None, graph_optimization_level: str = GRAPH_LEVEL,
                 model_bytes: bytes | None = None, external_bytes: dict[str, bytes] | None = None):
        """``session_config``: ONNX Runtime config entries stored with the artifact (allow-listed,
        :func:`check_session_config`); ``graph_optimization_level``: a name in :data:`GRAPH_LEVELS`.
        ``external_data``: the file's external-data locations if already checked by
        :func:`vitedge.safety.check_onnx_external_data`; None checks them here (ArtifactError if unsafe).
        ``model_bytes``: the ONNX file's bytes, already read (and hashed) by :func:`load`: ONNX Runtime then builds the
        session from memory, ``path`` only names it in messages, and every external-data file must be in
        ``external_bytes`` (``{location as the model writes it: bytes}``), handed over in memory too
        (``SessionOptions.add_external_initializers_from_files_in_memory``); nothing is re-read from disk."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeMissingError("onnxruntime is not installed (pip install onnxruntime)") from None
        so = session_options(threads, graph_optimization_level, session_config)
        self.session_config = dict(session_config or {})
        if external_data is None:  # no location outside the folder: checked before ORT opens the file
            external_data = check_onnx_external_data(path, model_bytes)
        self.external_data = external_data
        if model_bytes is not None and external_bytes:
            names = list(external_bytes)
            bufs = [external_bytes[n] for n in names]
            so.add_external_initializers_from_files_in_memory(names, bufs, [len(b) for b in bufs])
        try:
            with tempfile.TemporaryDirectory(prefix="vitedge-ort-empty-") as empty:
                if model_bytes is not None:  # a model from bytes resolves external data in the working directory:
                    # point it at an empty folder instead, so nothing is read from disk behind the checked bytes
                    so.add_session_config_entry("session.model_external_initializers_file_folder_path", empty)
                self.session = ort.InferenceSession(str(path) if model_bytes is None else model_bytes, so,
                                                    providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types with long messages
            raise ArtifactError(f"cannot load ONNX file {path}: {str(e).strip().splitlines()[0][:300]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.runtime = f"onnxruntime-{ort.__version__}"

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """float32 (B, C, H, W) -> list of float32 outputs (logits first)."""
        return self.session.run(None, {self.input_name: x})


def runtime_settings(manifest: dict, where: str = "manifest") -> tuple[str, dict]:
    """(graph optimization level, session config) a manifest asks ONNX Runtime for: ``onnxruntime`` (written since
    the fusion report) merged with ``quantization.session_config`` (older int8 artifacts); a manifest with neither
    gets :data:`GRAPH_LEVEL` and no entries, as before. Only the entries vitedge writes are accepted
    (:data:`ALLOWED_SESSION_CONFIG`). ``where``: names the manifest in messages.

    Raises:
        ArtifactError: a malformed ``onnxruntime`` block, an unknown level, or a session config key or value
            vitedge does not write (``manifest DIR: onnxruntime.session_config key 'K' is not one vitedge writes;
            refusing it``).
    """
    ort_block = manifest.get("onnxruntime") or {}
    quant = manifest.get("quantization") or {}
    if not isinstance(ort_block, dict) or not isinstance(quant, dict):
        raise ArtifactError(f"{where}: 'onnxruntime' / 'quantization' is not a mapping")
    configs = [check_session_config(ort_block.get("session_config") or {}, where, "onnxruntime.session_config"),
               check_session_config(quant.get("session_config") or {}, where, "quantization.session_config")]
    level = ort_block.get("graph_optimization_level") or GRAPH_LEVEL
    if level not in GRAPH_LEVELS:
        raise ArtifactError(f"{where} asks for an unknown ONNX Runtime graph optimization level {str(level)[:60]!r}")
    return level, {**configs[0], **configs[1]}


def load(artifact: Artifact, threads: int | None = None) -> OnnxRuntimeRunner:
    """Open the artifact's ONNX file in ONNX Runtime with the graph optimization level and session config its
    manifest records (:func:`runtime_settings`, allow-listed).

    The ONNX file and each external-data file it names are read once by :meth:`Artifact.read_file` (for a
    verified artifact: listed in the manifest and hashed against it) and handed to ONNX Runtime from memory, so
    the session runs the bytes that were checked, not whatever is on disk by then.
    Raises ArtifactError / RuntimeMissingError."""
    level, config = runtime_settings(artifact.manifest, f"manifest {artifact.path}")
    model_bytes = artifact.read_file()
    locations = onnx_external_locations(artifact.file, model_bytes)  # before ONNX Runtime sees anything
    files = artifact.manifest.get("files") or {}  # empty only for the export driver's own parity run
    base = Path(artifact.manifest["artifact"]).parent
    listed_only = bool(files) or artifact.verified
    unlisted = [loc for loc in locations.values() if listed_only and (base / loc).as_posix() not in files]
    if unlisted:  # its bytes would reach the runtime without a SHA-256 check
        raise ArtifactError(f"ONNX file {artifact.file} reads external data {unlisted[0]!r}, which its manifest "
                            "does not list")
    read: dict[str, bytes] = {}
    external = {}
    for raw, loc in locations.items():
        name = (base / loc).as_posix()
        if name not in read:
            read[name] = artifact.read_file(name)
        external[raw] = read[name]
    return OnnxRuntimeRunner(artifact.file, threads, config, sorted(set(locations.values())), level,
                             model_bytes=model_bytes, external_bytes=external)


@register_target
class OnnxTarget(Target):
    """``--target onnx``: the functions above (``write``, ``load``); int8 follows the family's recipe
    (:func:`vitedge.quantize.onnx.default_int8_recipe`)."""

    name = "onnx"
    title = "ONNX"
    precisions = PRECISIONS

    def default_int8_options(self, family: str | None, mode: str | None = None) -> dict:
        from ..quantize.onnx import default_int8_recipe
        recipe = default_int8_recipe(family)
        return {"mode": mode} if mode and mode != recipe["mode"] else recipe
