"""ONNX Runtime fusions of the ONNX target: the family's graph fusions are applied, the manifest's fusion report
matches the graph ONNX Runtime really runs (re-derived here independently), fused numerics match the unfused
graph on a digits-trained model, graphs written for other runtimes stay portable, and the stored session
settings reach the runner (old manifests still load; bad ones give one-line errors)."""
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from vitedge.errors import ArtifactError, UsageError
from vitedge.export import export, prepare_preset
from vitedge.manifest import read_manifest
from vitedge.models.registry import family_recipe
from vitedge.targets import onnx as onnx_target

# (preset, image size); small inputs, the presets' own depth and heads
CASES = {"vit": ("deit_tiny", 32), "levit": ("levit_128s", 64), "mobilevit": ("mobilevit_xs", 64)}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """fp32 ONNX artifacts of one preset per measured family, with the family's default fusions."""
    out = {}
    for family, (preset, size) in CASES.items():
        model, spec, pre = prepare_preset(preset, image_size=(size, size))
        d = tmp_path_factory.mktemp(family) / "a"
        out[family] = export(model, torch.zeros(2, 3, size, size), "onnx", d, spec=spec, preprocessing=pre)
    return out


def _optimized_ops(path: Path, level: str, config: dict, tmp: Path) -> dict:
    """ONNX Runtime's optimized graph of ``path`` at ``level`` with ``config``, op counts (domain:op outside ONNX)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    for k, v in config.items():
        so.add_session_config_entry(k, v)
    so.optimized_model_filepath = str(tmp / "opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    counts: dict = {}
    for n in onnx.load(str(tmp / "opt.onnx")).graph.node:
        name = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}"
        counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.mark.parametrize("family", list(CASES))
def test_fusion_report_matches_the_graph_onnxruntime_runs(artifacts, family, tmp_path):
    art = artifacts[family]
    m = json.loads((art.path / "manifest.json").read_text())
    o = m["onnxruntime"]
    assert o["graph_optimizer"]["fusions"] == list(family_recipe(family, "onnx")["fusions"])
    stored = {}
    for n in onnx.load(str(art.file)).graph.node:
        name = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}"
        stored[name] = stored.get(name, 0) + 1
    ops = _optimized_ops(art.file, o["graph_optimization_level"], o["session_config"], tmp_path)
    rep = o["fusions"]
    assert rep["ops_stored"] == dict(sorted(stored.items()))
    assert rep["ops_optimized"] == dict(sorted(ops.items()))
    assert rep["fused"] and all(ops.get(op) == n for op, n in rep["fused"].items())
    assert "BatchNormalization" not in ops and "batchnorm" not in rep["unfused"]  # folded into Conv at export
    if family == "vit":  # decomposed erf GELU and SDPA attention fused by onnxscript's ORT rules
        assert ops.get("com.microsoft:BiasGelu", 0) + ops.get("com.microsoft:Gelu", 0) == 12 and "Erf" not in ops
        assert ops.get("com.microsoft:MultiHeadAttention") == 12 and "Softmax" not in ops
        assert o["graph_optimizer"]["matches"]["erf_gelu"] == 12
        assert "erf_gelu" not in rep["unfused"] and "softmax_attention" not in rep["unfused"]
        assert ops.get("LayerNormalization", 0) > 0
    elif family == "levit":  # no fusion measured faster: ORT's own graph, GELU and attention left decomposed
        assert rep["unfused"]["erf_gelu"] == ops["Erf"] == 11
        assert rep["unfused"]["softmax_attention"] == ops["Softmax"] == 11
        assert not any(op.startswith("com.microsoft:") and "Attention" in op for op in ops)
    else:  # MobileViT: attention fused; its SiLU (x * sigmoid(x)) becomes ORT's QuickGelu by ORT's own fusion
        assert ops.get("com.microsoft:MultiHeadAttention") == 9 and "Softmax" not in ops
        assert rep["fused"]["com.microsoft:QuickGelu"] == ops["com.microsoft:QuickGelu"] > 0
        assert rep["fused_by_onnxruntime"]["com.microsoft:QuickGelu"] == ops["com.microsoft:QuickGelu"]
        assert "sigmoid_mul" not in rep["unfused"] and "Sigmoid" not in ops


def test_session_config_reaches_the_runner(artifacts):
    art = artifacts["vit"]
    assert art.manifest["onnxruntime"]["session_config"] == onnx_target.SESSION_CONFIG
    runner = onnx_target.load(art, threads=1)
    so = runner.session.get_session_options()
    for k, v in onnx_target.SESSION_CONFIG.items():
        assert so.get_session_config_entry(k) == v
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def _edited(art, tmp_path, edit) -> Path:
    """A copy of ``art``'s folder whose manifest went through ``edit(dict)``."""
    d = tmp_path / "edited"
    d.mkdir()
    for f in art.path.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def test_old_manifest_without_onnxruntime_block_loads(artifacts, tmp_path, photo_batch):
    art = artifacts["vit"]
    d = _edited(art, tmp_path, lambda m: (m.pop("onnxruntime"), m.update(quantization={"session_config": {
        "session.intra_op.allow_spinning": "0"}})))
    old = onnx_target.load(read_manifest(d), threads=1)
    assert old.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    x = photo_batch((32, 32), 3).numpy()
    np.testing.assert_allclose(old.run(x)[0], onnx_target.load(art, threads=1).run(x)[0], atol=1e-6)


@pytest.mark.parametrize("edit,words", [
    (lambda m: m["onnxruntime"].update(graph_optimization_level="FASTEST"), "FASTEST"),
    (lambda m: m["onnxruntime"].update(session_config=["session.intra_op.allow_spinning"]), "session_config"),
    (lambda m: m["onnxruntime"].update(session_config={"session.intra_op.allow_spinning": {"x": 1}}), "session_config"),
    (lambda m: m.update(onnxruntime="ORT_ENABLE_ALL"), "onnxruntime"),
])
def test_bad_onnxruntime_block_is_one_line_error(artifacts, tmp_path, edit, words):
    d = _edited(artifacts["vit"], tmp_path, edit)
    with pytest.raises(ArtifactError) as e:
        onnx_target.load(read_manifest(d), threads=1)
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.fixture(scope="module")
def digits_deit(tmp_path_factory):
    """deit_tiny trained on the digits at 32x32 (2 epochs, seconds): real, non-trivial logits."""
    from vitedge.train import train_digits
    out = tmp_path_factory.mktemp("ck") / "deit.safetensors"
    train_digits("deit_tiny", out, image_size=(32, 32), epochs=2, log=lambda *a: None)
    return out


def test_fused_graph_matches_unfused_on_trained_model(digits_deit, tmp_path, photo_batch):
    model, spec, pre = prepare_preset("deit_tiny", checkpoint=digits_deit)
    arts = {f: export(model, torch.zeros(2, 3, 32, 32), "onnx", tmp_path / f, spec=spec, preprocessing=pre,
                      target_options={"fusions": fusions})
            for f, fusions in (("fused", None), ("plain", []))}
    assert arts["plain"].manifest["onnxruntime"]["graph_optimizer"]["fusions"] == []
    assert "com.microsoft:MultiHeadAttention" in arts["fused"].manifest["onnxruntime"]["fusions"]["ops_stored"]
    x = photo_batch((32, 32), 8).numpy()
    a, b = (onnx_target.load(arts[k], threads=1).run(x)[0] for k in ("fused", "plain"))
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(ref).max() > 0.5  # trained logits, not the near-zero ones of a random init
    assert np.abs(a - b).max() <= 1e-4 and np.abs(a - ref).max() <= 1e-4
    assert (a.argmax(1) == ref.argmax(1)).all()
    cos = (a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b)
    assert cos > 0.99999


def test_graph_for_other_runtimes_stays_portable(tmp_path):
    """TensorRT and OpenVINO build on the portable graph (vitedge.targets.onnx_graph): no com.microsoft op, no ORT
    block; the onnx target's own graph of the same model gets the family's fusions."""
    from vitedge.targets.onnx_graph import write_graph
    model, spec, _ = prepare_preset("deit_tiny", image_size=(32, 32))
    opts = {"input_names": ["pixel_values"], "output_names": ["logits"], "dynamic_batch": True, "opset": None,
            "precision": "fp32", "quantization": None, "target_options": {}, "spec": spec}
    (tmp_path / "portable").mkdir()
    info = write_graph(model, torch.zeros(2, 3, 32, 32), tmp_path / "portable", opts)
    graph = onnx.load(str(tmp_path / "portable" / onnx_target.FILENAME))
    assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"} and any(n.op_type == "Erf" for n in graph.graph.node)
    assert "manifest" not in info and info["hook"] is None
    (tmp_path / "ort").mkdir()
    ort = onnx_target.write(model, torch.zeros(2, 3, 32, 32), tmp_path / "ort", opts)
    fused = onnx.load(str(tmp_path / "ort" / onnx_target.FILENAME))
    assert any(n.domain == "com.microsoft" for n in fused.graph.node) and "onnxruntime" in ort["manifest"]


def test_int8_starts_from_fused_graph_and_reports_quantized_ops(tmp_path):
    model, spec, pre = prepare_preset("deit_tiny", image_size=(32, 32))
    art = export(model, torch.zeros(2, 3, 32, 32), "onnx", tmp_path / "q", spec=spec, preprocessing=pre,
                 precision="int8", quantization={"mode": "dynamic"})
    o = art.manifest["onnxruntime"]
    assert o["graph_optimizer"] is None  # no fusion pass on the int8 file itself: it is quantized from the fp32
    # artifact's graph, which has the family's fusions (without them int8 lost to fp32 on MobileViT)
    assert art.manifest["quantization"]["from_graph"]["fusions"] == ["gelu", "attention"]
    assert "com.microsoft:MultiHeadAttention" in o["fusions"]["ops_stored"]
    assert "DynamicQuantizeLinear" in o["fusions"]["ops_stored"] or "MatMulInteger" in o["fusions"]["ops_stored"]
    fused = o["fusions"]["fused"]
    assert fused.get("com.microsoft:DynamicQuantizeMatMul", 0) + fused.get("com.microsoft:MatMulIntegerToFloat", 0) \
        + fused.get("MatMulInteger", 0) > 0


def test_unknown_fusion_is_usage_error(tmp_path):
    model, spec, pre = prepare_preset("deit_tiny", image_size=(32, 32))
    with pytest.raises(UsageError, match="unknown ONNX fusion 'skip_layernorm'"):
        export(model, torch.zeros(2, 3, 32, 32), "onnx", tmp_path / "x", spec=spec, preprocessing=pre,
               target_options={"fusions": "gelu,skip_layernorm"})
    assert not (tmp_path / "x").exists()


def test_unfused_patterns_on_handmade_graph():
    """x * sigmoid(x), an erf GELU piece, Softmax -> MatMul and Add -> LayerNormalization are each found once."""
    f = TensorProto.FLOAT
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["silu"]),
             helper.make_node("Erf", ["silu"], ["e"]), helper.make_node("Softmax", ["e"], ["p"]),
             helper.make_node("MatMul", ["p", "e"], ["mm"]), helper.make_node("Add", ["mm", "x"], ["r"]),
             helper.make_node("LayerNormalization", ["r", "g"], ["y"], axis=-1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [4, 4])],
                          [helper.make_tensor_value_info("y", f, [4, 4])],
                          [helper.make_tensor("g", f, [4], [1.0] * 4)])
    found = onnx_target.unfused_patterns(helper.make_model(g))
    assert found == {"sigmoid_mul": 1, "erf_gelu": 1, "softmax_attention": 1, "add_layernorm": 1}


def test_failing_fusion_pass_keeps_the_exporters_graph(tmp_path, monkeypatch):
    def broken(src, dst, fusions):
        dst.write_bytes(b"half-written")  # a pass that dies mid-write must not leave this behind
        raise AttributeError("module 'onnxscript.rewriter.ort_fusions' has no attribute '_core'")
    monkeypatch.setattr(onnx_target, "_onnxscript_fusions", broken)
    model, spec, pre = prepare_preset("deit_tiny", image_size=(32, 32))
    art = export(model, torch.zeros(2, 3, 32, 32), "onnx", tmp_path / "a", spec=spec, preprocessing=pre)
    o = art.manifest["onnxruntime"]
    assert o["graph_optimizer"]["fusions"] == [] and "no attribute '_core'" in o["graph_optimizer"]["skipped"]
    assert o["fusions"]["unfused"]["erf_gelu"] == 12 and not (tmp_path / "a" / "model.onnx.fused.tmp").exists()
    assert not any(n.domain for n in onnx.load(str(art.file)).graph.node)
