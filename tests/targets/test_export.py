"""Every required preset exports to TorchScript and ONNX with a dynamic batch, and the artifact matches eager
on the bundled photos (max abs diff <= 1e-4, top-1 agreement 100%) at batches 1, 3 and 8."""
import json

import numpy as np
import pytest
import torch

from vitedge.export import export, prepare_preset
from vitedge.manifest import read_manifest
from vitedge.runtime import open_artifact
from vitedge.validate import validate

PRESETS = ["deit_tiny", "deit_small", "mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "levit_128s", "levit_128",
           "levit_192", "levit_256"]


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_exports_with_parity(preset, target, tmp_path):
    model, spec, pre = prepare_preset(preset)
    art = export(model, torch.zeros(2, 3, *pre["size"]), target, tmp_path / "a", spec=spec, preprocessing=pre)
    m = art.manifest
    assert m["inputs"][0]["shape"] == [-1, 3, *pre["size"]]
    for b in ("batch_1", "batch_3", "batch_8"):
        assert m["parity"][b]["max_abs"] <= 1e-4 and m["parity"][b]["top1_agreement"] == 1.0
    if target == "onnx":
        assert m["opset"] >= 17
    # validate rebuilds the eager model from the manifest alone and runs the artifact in its runtime
    r = validate(art.path, trust_code=True)  # exported just above: TorchScript's code is ours
    assert r["passed"] and r["metrics"]["samples"] == 8
    assert r["metrics"]["max_abs"] <= 1e-4 and r["metrics"]["cosine"] > 0.9999


def test_manifest_contents(tmp_path):
    model, spec, pre = prepare_preset("deit_tiny", image_size=(64, 96), num_classes=4)
    art = export(model, torch.zeros(2, 3, 64, 96), "onnx", tmp_path / "a", spec=spec, preprocessing=pre)
    m = json.loads((art.path / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["target"] == "onnx" and m["backend"] == "onnxruntime"
    assert m["precision"] == "fp32"
    assert m["model"]["preset"] == "deit_tiny" and m["model"]["kwargs"]["num_classes"] == 4
    assert m["outputs"][0] == {"name": "logits", "shape": [-1, 4], "dtype": "float32", "dynamic_axes": {"0": "batch"}}
    assert m["preprocessing"]["size"] == [64, 96] and len(m["preprocessing"]["mean"]) == 3
    assert set(m["files"]) == {"model.onnx"} and len(m["files"]["model.onnx"]["sha256"]) == 64
    assert {"torch", "onnx", "onnxruntime", "vitedge"} <= set(m["versions"])
    assert m["export"]["ops"]  # op histogram of the graph
    assert "dynamo" in m["export"]["method"]


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_fixed_batch_export(target, tmp_path):
    model, spec, pre = prepare_preset("levit_128s", image_size=(64, 64), num_classes=3)
    art = export(model, torch.zeros(4, 3, 64, 64), target, tmp_path / "a", spec=spec, preprocessing=pre,
                 dynamic_batch=False)
    assert art.manifest["inputs"][0]["shape"] == [4, 3, 64, 64]
    assert [k for k in art.manifest["parity"] if k.startswith("batch_")] == ["batch_4"]
    assert validate(art.path, trust_code=True)["passed"]


def test_any_module_exports(tmp_path, photo_batch):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, 4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
    art = export(net, torch.zeros(2, 3, 32, 32), "onnx", tmp_path / "a")
    assert art.manifest["model"]["weights"] == {"source": "module"}
    r = validate(art.path, model=net)
    assert r["passed"]


def test_levit_distillation_head_is_a_second_output(tmp_path, photo_batch):
    model, spec, pre = prepare_preset("levit_128s", image_size=(64, 64), num_classes=3)
    from vitedge.models.levit import LeViT
    kw = {**spec["kwargs"], "num_distill_classes": 3}
    torch.manual_seed(0)
    net = LeViT(**kw).eval()
    art = export(net, torch.zeros(2, 3, 64, 64), "onnx", tmp_path / "a", preprocessing=pre)
    assert [o["name"] for o in art.manifest["outputs"]] == ["logits", "distill_logits"]
    _, runner = open_artifact(art.path)
    x = photo_batch((64, 64), 3)
    out = runner.run(x.numpy())
    with torch.no_grad():
        ref = net(x)
    assert len(out) == 2
    assert np.abs(out[1] - ref[1].numpy()).max() <= 1e-4


def test_reexport_replaces_whole_artifact(tmp_path):
    model, spec, pre = prepare_preset("deit_tiny", image_size=(32, 32), num_classes=2)
    out = tmp_path / "a"
    export(model, torch.zeros(2, 3, 32, 32), "torchscript", out, spec=spec, preprocessing=pre)
    first = read_manifest(out).manifest["files"]["model.pt"]["sha256"]
    model2, spec2, pre2 = prepare_preset("deit_tiny", image_size=(32, 32), num_classes=3)
    export(model2, torch.zeros(2, 3, 32, 32), "torchscript", out, spec=spec2, preprocessing=pre2, force=True)
    art = read_manifest(out)
    assert art.manifest["files"]["model.pt"]["sha256"] != first
    assert art.manifest["outputs"][0]["shape"] == [-1, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temp or backup folders left behind


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_vit_pytorch_object_exports(target, tmp_path, photo_batch):
    """A user's vit-pytorch model object goes through the same export API (no zoo preset involved)."""
    from oracle import oracle
    torch.manual_seed(0)
    ref = oracle("levit").LeViT(image_size=64, num_classes=5, dim=(16, 24, 32), depth=1, heads=(2, 3, 4),
                                mlp_mult=2).eval()
    art = export(ref, torch.zeros(2, 3, 64, 64), target, tmp_path / "a")
    assert art.manifest["model"]["class"] == "LeViT"
    r = validate(art.path, model=ref, trust_code=True)
    assert r["passed"], r["failures"]
