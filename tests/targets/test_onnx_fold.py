"""Constant folding of the portable ONNX graph (vitedge/targets/onnx_graph.py fold_constants), which the onnx, trt
and openvino targets build on: it removes nodes (the weight reshapes and transposes the exporter leaves), keeps
the outputs and the dynamic batch, the manifest's ``export.graph`` counts are the stored file's, its schema bounds
them, and a second folding pass (onnxscript again, or ONNX Runtime's basic-level optimizers) finds nothing left."""
import json
import shutil

import jsonschema
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from helpers import SMALL, exercise_batchnorm, perturb_biases_and_norms_, train_on_digits

from vitedge.cli import main
from vitedge.data import make_preprocessing
from vitedge.errors import ArtifactError
from vitedge.export import export
from vitedge.manifest import manifest_schema, read_manifest
from vitedge.models.zoo import family_class
from vitedge.quantize import calibration_data
from vitedge.targets.onnx_graph import export_graph, fold_constants, graph_counts

FAMILIES = ("levit", "mobilevit")


def small_model(family: str) -> tuple[torch.nn.Module, tuple[int, int]]:
    """The family's SMALL config (tests/helpers.py), seeded, with biases, norms and BatchNorm statistics moved off
    their initial values so that every folded constant matters."""
    _, _, kw, size = SMALL[family]
    torch.manual_seed(0)
    model = family_class(family)(**kw)
    perturb_biases_and_norms_(model)
    exercise_batchnorm(model, torch.randn(8, 3, *size, generator=torch.Generator().manual_seed(1)))
    return model.eval(), tuple(size)


def ort_run(path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})[0]


def ort_graph_ops(path, level: str, tmp_path) -> dict:
    """Op counts of the graph ONNX Runtime runs for ``path`` at ``level`` (its optimized_model_filepath)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.optimized_model_filepath = str(tmp_path / f"{level}.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    counts: dict = {}
    for n in onnx.load(so.optimized_model_filepath).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """fp32 ONNX artifacts of the SMALL configs, without ONNX Runtime fusions: the stored graph is the portable one
    that trt stores and openvino converts."""
    out = {}
    for family in FAMILIES:
        model, size = small_model(family)
        out[family] = export(model, torch.zeros(2, 3, *size), "onnx", tmp_path_factory.mktemp(family) / "a",
                             preprocessing=make_preprocessing(size), target_options={"fusions": []})
    return out


def test_folding_drops_nodes_and_keeps_outputs_and_the_dynamic_batch(photo_batch, tmp_path):
    model, size = small_model("levit")
    raw = tmp_path / "raw.onnx"
    info = export_graph(model, torch.zeros(2, 3, *size), raw, input_names=["pixel_values"], output_names=["logits"],
                        fold=False)
    assert info["graph"]["nodes_before_folding"] == info["graph"]["nodes_after_folding"]
    folded = tmp_path / "folded.onnx"
    shutil.copy(raw, folded)
    r = fold_constants(folded)
    before, after = graph_counts(raw), graph_counts(folded)
    assert r["nodes_before_folding"] == before["nodes"] and r["nodes_after_folding"] == after["nodes"]
    assert after["nodes"] < before["nodes"], (before, after)
    # the shape arithmetic behind each Reshape (Shape -> Slice -> Concat) is folded into constant targets
    assert before["op_counts"]["Shape"] > 0 and "Shape" not in after["op_counts"]
    assert before["op_counts"]["Concat"] > 0 and "Concat" not in after["op_counts"]
    assert after["op_counts"]["Slice"] < before["op_counts"]["Slice"]
    onnx.checker.check_model(onnx.load(str(folded)), full_check=True)
    dim0 = onnx.load(str(folded)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # the batch stays symbolic
    x8 = photo_batch(size, 8)
    for b in (1, 8):
        x = x8[:b]
        with torch.no_grad():
            eager = model(x).numpy()
        y_raw, y = ort_run(raw, x.numpy()), ort_run(folded, x.numpy())
        assert y.shape == (b, 10)
        assert np.abs(y - y_raw).max() <= 1e-5, b
        assert np.abs(y - eager).max() <= 1e-4 * max(1.0, np.abs(eager).max()), b


def test_large_weights_fold_only_where_nothing_is_stored_twice(tmp_path):
    """Weights above onnxscript's 8192-element default: Transpose(W) -> MatMul folds when W feeds only constant
    work (W is replaced, as for LeViT-128S's weight transposes); W also read by a MatMul on the input stays (folding
    would store W twice)."""
    rng = np.random.default_rng(0)
    w, v = (numpy_helper.from_array(rng.standard_normal((128, 128)).astype(np.float32), n) for n in ("W", "V"))
    x = helper.make_tensor_value_info("pixel_values", onnx.TensorProto.FLOAT, ["batch", 128])
    y = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 128])
    nodes = [helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["pixel_values", "Wt"], ["h"]),
             helper.make_node("Transpose", ["V"], ["Vt"], perm=[1, 0]),  # V is shared with a non-constant MatMul
             helper.make_node("MatMul", ["h", "Vt"], ["h2"]),
             helper.make_node("MatMul", ["h", "V"], ["h3"]),
             helper.make_node("Add", ["h2", "h3"], ["logits"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w, v]),
                              opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    xin = rng.standard_normal((3, 128)).astype(np.float32)
    ref = ort_run(path, xin)
    r = fold_constants(path)
    folded = onnx.load(str(path))
    transposed = [n.input[0] for n in folded.graph.node if n.op_type == "Transpose"]
    assert (r["nodes_before_folding"], r["nodes_after_folding"], transposed) == (6, 5, ["V"])
    assert sum(t.dims[0] * t.dims[1] for t in folded.graph.initializer) == 2 * 128 * 128  # nothing stored twice
    assert np.abs(ort_run(path, xin) - ref).max() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_manifest_counts_are_the_stored_graph(artifacts, family):
    art = artifacts[family]
    m = json.loads((art.path / "manifest.json").read_text())
    g = m["export"]["graph"]
    stored = graph_counts(art.file)
    assert g["nodes"] == stored["nodes"] == len(onnx.load(str(art.file)).graph.node)
    assert g["op_counts"] == stored["op_counts"] and sum(g["op_counts"].values()) == g["nodes"]
    assert g["file"] == m["artifact"] == "model.onnx"
    assert g["nodes_after_folding"] == g["nodes"] < g["nodes_before_folding"]  # no fusions asked: stored as folded
    assert g["folding"].startswith("onnxscript ") and "folding_skipped" not in g
    assert m["export"]["ops"] == g["op_counts"]
    jsonschema.Draft202012Validator(manifest_schema()).validate(m)
    for b in (1, 3, 8):  # the export's parity gate ran the folded graph at these batches
        assert m["parity"][f"batch_{b}"]["samples"] == b


@pytest.mark.parametrize("family", FAMILIES)
def test_a_second_fold_finds_nothing(artifacts, family, tmp_path):
    art = artifacts[family]
    again = tmp_path / "again.onnx"
    shutil.copy(art.file, again)
    r = fold_constants(again)
    assert r["nodes_before_folding"] == r["nodes_after_folding"] == art.manifest["export"]["graph"]["nodes"]
    # ONNX Runtime's basic level (constant folding, redundant-node elimination, ...) against no optimization: both
    # graphs come after ORT's function inlining (HardSwish -> HardSigmoid * x), so any difference is its own work.
    assert ort_graph_ops(art.file, "ORT_ENABLE_BASIC", tmp_path) == ort_graph_ops(art.file, "ORT_DISABLE_ALL", tmp_path)


@pytest.mark.parametrize("edit, needle", [
    (lambda g: g.update(nodes=-1), "export.graph.nodes -1 is not a node count"),
    (lambda g: g.update(nodes_before_folding="632"), "export.graph.nodes_before_folding"),
    (lambda g: g["op_counts"].update({"Mat Mul; rm -rf": 1}), "is not an op name"),
    (lambda g: g["op_counts"].update({"MatMul": 1.5}), "is not a node count"),
    (lambda g: g.update(op_counts={f"Op{i}": 1 for i in range(513)}), "at most 512 op types"),
    (lambda g: g.update(file="../model.onnx"), "export.graph.file"),
    (lambda g: g.pop("nodes"), "missing 'nodes' in export.graph"),
])
def test_schema_bounds_the_graph_block(artifacts, tmp_path, edit, needle):
    src = artifacts["levit"].path
    dst = tmp_path / "a"
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    edit(m["export"]["graph"])
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError) as e:
        read_manifest(dst)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_unknown_keys_and_domains_in_the_graph_block_are_accepted(artifacts, tmp_path):
    dst = tmp_path / "a"
    shutil.copytree(artifacts["levit"].path, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["export"]["graph"].update(future=[1], file=None)
    m["export"]["graph"]["op_counts"]["com.microsoft.nchwc:Conv"] = 2
    (dst / "manifest.json").write_text(json.dumps(m))
    assert read_manifest(dst).manifest["export"]["graph"]["future"] == [1]


def test_int8_starts_from_the_folded_graph(tmp_path):
    """Static int8 (the onnx default of most families) of a digits-trained SMALL LeViT: from the folded graph, the
    export's int8 parity gate passes and the counts are the QDQ file's."""
    _, _, kw, size = SMALL["levit"]
    torch.manual_seed(0)
    pre = make_preprocessing(size)
    model = train_on_digits(family_class("levit")(**kw), pre, epochs=3)
    calib, _ = calibration_data("digits", pre, 64)
    art = export(model, torch.zeros(2, 3, *size), "onnx", tmp_path / "q", precision="int8", preprocessing=pre,
                 quantization={"mode": "static", "calibration": calib.numpy()})
    g = art.manifest["export"]["graph"]
    assert g["nodes"] == len(onnx.load(str(art.file)).graph.node) > g["nodes_after_folding"]  # Q/DQ pairs added
    assert g["nodes_after_folding"] < g["nodes_before_folding"]
    assert g["op_counts"]["QuantizeLinear"] > 0 and art.manifest["quantization"]["quantized_nodes"] > 0
    assert art.manifest["parity"]["batch_8"]["samples"] == 8  # the int8 parity gate passed


def test_cli_prints_the_counts(tmp_path, capsys):
    out = tmp_path / "levit"
    assert main(["export", "levit_128s", "--target", "onnx", "--image-size", "64", "64", "-o", str(out)]) == 0
    g = read_manifest(out).manifest["export"]["graph"]
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("graph: ")]
    assert lines == [f"graph: {g['nodes']} nodes ({g['nodes_before_folding']} before constant folding)"]
    assert g["nodes"] < g["nodes_before_folding"]
