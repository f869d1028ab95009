"""int8 at export, on the user's own data and against fp32's speed: static int8 is checked on held-out images of
its calibration source (the digits test split, or a quarter of a calibration folder, labelled when the folder has
class subfolders) rather than on the bundled photos, and an ONNX int8 export times its artifact against the fp32
graph of the same model and records the ratio.

Models: MobileViT's small test config at 64x64 and a 32x32 DeiT-Ti checkpoint, trained on the digits in seconds."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitedge.cli import main
from vitedge.data import digits_images, digits_split, make_preprocessing
from vitedge.errors import ExportError
from vitedge.export import export
from vitedge.manifest import read_manifest
from vitedge.models.zoo import family_class
from vitedge.quantize import calibration_split
from helpers import SMALL, cli_digits_checkpoint, train_on_digits

SIZE = (64, 64)
PRE = make_preprocessing(SIZE)


@pytest.fixture(scope="module")
def mobilevit():
    """MobileViT's small test config at 64x64 trained on the digits (6 epochs; minimum cosine 0.9915 on the
    held-out digits with static int8, 0.965 after 3 epochs), and its manifest spec (family
    mobilevit: the export applies the family's ONNX recipe, attention fusion and int8 defaults)."""
    kw = {**SMALL["mobilevit"][2], "image_size": SIZE}
    torch.manual_seed(0)
    model = train_on_digits(family_class("mobilevit")(**kw), PRE, epochs=6)
    spec = {"preset": None, "family": "mobilevit", "kwargs": kw, "weights": {"source": "module"}}
    return model, spec


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """deit_tiny trained on the digits for 3 epochs at 32x32 through the CLI (seconds)."""
    return cli_digits_checkpoint(tmp_path_factory.mktemp("ck"), epochs=3)


def _static(x, info):
    return {"mode": "static", "method": "minmax", "calibration": x.numpy(), "calibration_info": info}


def test_static_int8_parity_on_held_out_digits(mobilevit, tmp_path):
    """The case that was refused: static int8 calibrated on the digits is checked on held-out digits, passes, and
    the manifest says which images, how many, and the top-1 drop on them."""
    model, spec = mobilevit
    x, info, held = calibration_split("digits", PRE, count=64)
    art = export(model, torch.zeros(2, 3, *SIZE), "onnx", tmp_path / "a", spec=spec, preprocessing=PRE,
                 labels=[str(i) for i in range(10)], precision="int8", quantization=_static(x, info),
                 parity_images=held)
    m = read_manifest(art.path).manifest  # validated against the JSON Schema
    p = m["parity"]
    assert p["images"] == f"{held['info']['count']} held-out digits (test split)"
    assert p["image_source"]["source"] == "digits" and p["image_source"]["split"] == "test"
    h = p["held_out"]
    assert h["samples"] == held["info"]["count"] and h["cosine"] >= p["tolerance"]["cosine"]
    assert h["eager_top1"] > 0.5  # a trained model: well above chance
    assert h["drop_points"] == pytest.approx((h["eager_top1"] - h["top1"]) * 100, abs=1e-3)
    q = m["quantization"]
    assert q["mode"] == "static" and q["calibration"]["split"] == "train"
    assert q["from_graph"]["fusions"] == ["attention"]  # quantized from the fp32 artifact's fused graph
    assert "com.microsoft:MultiHeadAttention" in m["onnxruntime"]["fusions"]["ops_stored"]


def test_held_out_images_never_calibrate():
    x, info, held = calibration_split("digits", make_preprocessing((16, 16)), count=200, held_out=50)
    train, test = digits_split(0)
    assert set(info["indices"]) <= set(train.tolist())
    assert held["info"]["count"] == len(held["images"]) == len(held["labels"]) == 50
    assert len(x) == 200 and held["class_names"] == [str(i) for i in range(10)]


def _digit_folder(root, per_class: int, classes=range(10)):
    """An ImageFolder of digits from the test split: root/<digit>/<index>.png."""
    _, test = digits_split(0)
    ims, y = digits_images(test)
    for c in classes:
        (root / str(c)).mkdir(parents=True)
        for i in np.flatnonzero(y == c)[:per_class]:
            ims[i].resize((32, 32)).save(root / str(c) / f"{test[i]}.png")
    return root


def test_folder_split_is_disjoint_and_labelled(tmp_path):
    folder = _digit_folder(tmp_path / "calib", per_class=4)
    x, info, held = calibration_split(folder, make_preprocessing((16, 16)), count=100)
    assert held["info"]["count"] == 10 and len(x) == info["count"] == 30  # a quarter of 40 held out
    assert not set(info["files"]) & set(held["info"]["files"])
    assert held["class_names"] == [str(i) for i in range(10)] and held["info"]["labelled"]
    names = [held["class_names"][int(c)] for c in held["labels"]]
    assert names == [f.split("/")[0] for f in held["info"]["files"]]  # each label is its file's class folder
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted((folder / "3").iterdir()):
        f.rename(flat / f.name)
    x, info, held = calibration_split(flat, make_preprocessing((16, 16)))
    assert held["labels"] is None and held["info"]["count"] == 1 and info["count"] == 3
    one = tmp_path / "one"
    one.mkdir()
    next(flat.iterdir()).rename(one / "a.png")
    assert calibration_split(one, make_preprocessing((16, 16)))[2] is None  # nothing to hold out: photos


def test_cli_static_int8_on_a_labelled_folder(checkpoint, tmp_path, capsys):
    folder = _digit_folder(tmp_path / "calib", per_class=6)
    out = tmp_path / "a"
    assert main(["export", "deit_tiny", "--target", "onnx", "--checkpoint", str(checkpoint), "--precision", "int8",
                 "--int8-mode", "static", "--calib", str(folder), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"on 15 held-out images of {folder}" in printed and "top-1 on the 15 held-out images" in printed
    m = json.loads((out / "manifest.json").read_text())
    p = m["parity"]
    assert p["image_source"]["source"] == str(folder) and p["image_source"]["labelled"]
    assert p["held_out"]["samples"] == 15 and 0 <= p["held_out"]["top1"] <= 1
    assert m["quantization"]["calibration"]["count"] == 45


def test_int8_export_records_its_speed_against_fp32(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "a"
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["export", "deit_tiny", "--target", "onnx", "--checkpoint", str(checkpoint), "--precision", "int8",
                 "--int8-mode", "dynamic", "-o", str(out)]) == 0
    # ORT's symbolic shape inference fails on DeiT's fused graph and dumps its model where it runs: not here
    assert list((tmp_path / "cwd").iterdir()) == []
    m = read_manifest(out).manifest
    s = m["quantization"]["speed"]
    assert m["quantization"]["speed_vs_fp32"] == s["speed_vs_fp32"] > 0
    assert s["int8_p50_ms"] > 0 and s["fp32_p50_ms"] > 0 and s["batch"] == 1 and s["calls"] >= 15
    assert s["faster"] == ("int8" if s["int8_p50_ms"] < s["fp32_p50_ms"] else "fp32")
    assert m["parity"]["images"] == "bundled scikit-image photos" and "image_source" not in m["parity"]


def test_refusal_names_the_held_out_images(mobilevit, tmp_path):
    model, spec = mobilevit
    _, _, held = calibration_split("digits", PRE, count=8, held_out=16)
    with pytest.raises(ExportError) as e:  # fp32 with an impossible tolerance: refused, naming the images
        export(model, torch.zeros(2, 3, *SIZE), "onnx", tmp_path / "a", spec=spec, preprocessing=PRE,
               tol_abs=0.0, parity_images=held)
    msg = str(e.value)
    assert "\n" not in msg and "on 16 held-out digits (test split)" in msg and msg.endswith("not written")
    assert not (tmp_path / "a").exists()
