"""Quantization on real labelled data: training on digits, int8/fp16 exports for both targets, accuracy drop
measured on the held-out split, calibration never touching that split, and the bad inputs around it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vitedge.cli import main
from vitedge.data import digits_split, make_preprocessing
from vitedge.quantize import calibration_data
from helpers import assert_one_line_error, cli_digits_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """deit_tiny trained on the digits for 4 epochs at 32x32 through the CLI (seconds)."""
    return cli_digits_checkpoint(tmp_path_factory.mktemp("ck"), epochs=4)


def test_train_writes_safetensors_and_sidecar(checkpoint):
    side = json.loads(Path(f"{checkpoint}.json").read_text())
    assert side["preset"] == "deit_tiny" and side["num_classes"] == 10 and side["image_size"] == [32, 32]
    assert side["test_top1"] > 0.5  # a real, if short, training run: well above chance (0.1)
    assert checkpoint.read_bytes()[:8] != b"\x80\x02\x8a\x0a"  # not a pickle


def test_calibration_never_reads_the_test_split():
    train, test = digits_split(0)
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == 1797
    _, info = calibration_data("digits", make_preprocessing((32, 32)), count=500)
    assert info["split"] == "train" and len(info["indices"]) == 500
    assert set(info["indices"]) <= set(train.tolist()) and not set(info["indices"]) & set(test.tolist())


@pytest.mark.parametrize("target,precision,extra", [
    ("onnx", "int8", []),                                   # ViT/DeiT default: dynamic (the faster recipe)
    ("onnx", "int8", ["--int8-mode", "static"]),            # static QDQ, calibrated on digits (train)
    ("onnx", "int8", ["--int8-mode", "static", "--calib-method", "entropy", "--calib-count", "64"]),
    ("onnx", "fp16", []),
    ("torchscript", "int8", []),                            # dynamic int8 Linear layers
    ("torchscript", "fp16", []),
])
def test_quantized_export_keeps_accuracy(checkpoint, tmp_path, target, precision, extra):
    out = tmp_path / "a"
    assert main(["export", "deit_tiny", "--target", target, "--checkpoint", str(checkpoint), "--precision", precision,
                 "-o", str(out)] + extra) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["precision"] == precision and m["labels"] == [str(i) for i in range(10)]
    assert m["model"]["training"]["dataset"] == "digits"
    if precision == "int8":
        q = m["quantization"]
        assert q["quantized_nodes"] > 0
        if target == "onnx" and not extra:
            assert q["mode"] == "dynamic" and "calibration" not in q
            assert m["parity"]["images"] == "bundled scikit-image photos"  # no calibration set: the photos
        if target == "onnx" and "static" in extra:
            assert q["mode"] == "static" and q["calibration"]["split"] == "train"
            assert m["parity"]["image_source"] == {"source": "digits", "split": "test", "split_seed": 0,
                                                   "count": 128, "labelled": True}
            assert q["kept_float_nodes"]  # first/last weight op and attention matmuls stay float
            assert any(op in q["graph_ops"] for op in ("QuantizeLinear", "DequantizeLinear"))
    trust = ["--trust-code"] if target == "torchscript" else []  # exported just above
    assert main(["validate", str(out), "--dataset", "digits", "--json", str(tmp_path / "v.json"), *trust]) == 0
    v = json.loads((tmp_path / "v.json").read_text())["metrics"]
    assert v["drop_points"] <= 1.0 and v["samples"] == 450
    assert main(["validate", str(out), *trust]) == 0  # cosine vs fp32 eager on photos within the precision's tolerance


def test_int8_onnx_is_smaller(checkpoint, tmp_path):
    sizes = {}
    for p in ("fp32", "int8"):
        assert main(["export", "deit_tiny", "--target", "onnx", "--checkpoint", str(checkpoint), "--precision", p,
                     "-o", str(tmp_path / p)]) == 0
        sizes[p] = (tmp_path / p / "model.onnx").stat().st_size
    assert sizes["int8"] <= 0.35 * sizes["fp32"]


def test_validate_fails_when_drop_exceeds_tolerance(checkpoint, tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["export", "deit_tiny", "--target", "onnx", "--checkpoint", str(checkpoint), "--precision", "int8",
                 "--int8-mode", "dynamic", "-o", str(out)]) == 0
    # a negative allowance: even a model identical to fp32 "drops" more than -5 points
    assert main(["validate", str(out), "--dataset", "digits", "--max-drop", "-5"]) == 1
    assert_one_line_error(capsys.readouterr().err, "max_drop_points")


def test_empty_calibration_folder(checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["export", "deit_tiny", "--target", "onnx", "--checkpoint", str(checkpoint), "--precision", "int8",
                 "--int8-mode", "static", "--calib", str(tmp_path / "empty"), "-o", str(tmp_path / "x")]) == 1
    assert_one_line_error(capsys.readouterr().err, "calibration images", "no images")
    assert not (tmp_path / "x").exists()


def test_unreadable_calibration_image(checkpoint, tmp_path, capsys):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    assert main(["export", "deit_tiny", "--target", "onnx", "--checkpoint", str(checkpoint), "--precision", "int8",
                 "--int8-mode", "static", "--calib", str(tmp_path / "c"), "-o", str(tmp_path / "x")]) == 1
    assert_one_line_error(capsys.readouterr().err, "cannot decode image", "broken.png")
    assert not (tmp_path / "x").exists()


def test_int8_mode_the_target_cannot_do(capsys, tmp_path):
    assert main(["export", "deit_tiny", "--target", "torchscript", "--precision", "int8", "--int8-mode", "static",
                 "-o", str(tmp_path / "x")]) == 2
    assert_one_line_error(capsys.readouterr().err, "cannot do static int8")
    assert main(["export", "deit_tiny", "--target", "onnx", "--calib", "digits", "-o", str(tmp_path / "x")]) == 2
    assert_one_line_error(capsys.readouterr().err, "used by static int8 only")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("preset", ["levit_128s", "cvt_13", "nest_t"])
def test_torchscript_int8_of_a_convolutional_model_is_refused(capsys, tmp_path, preset):
    """TorchScript int8 quantizes nn.Linear only; LeViT, CvT and NesT compute their projections with convolutions
    (the classifier head aside, none of their weights are Linear), so their "int8" artifact ran in float (LeViT-128S: 25.18 MB vs 25.19 MB, the
    same p50). The export is refused, naming the targets whose int8 covers convolutions; nothing is written."""
    assert main(["export", preset, "--target", "torchscript", "--precision", "int8", "--image-size", "64", "64",
                 "-o", str(tmp_path / "x")]) == 2
    assert_one_line_error(capsys.readouterr().err, "nn.Linear layers only", "of this model's weights",
                          "--target onnx or openvino")
    assert not (tmp_path / "x").exists()


def test_train_unknown_dataset_subprocess():
    exe = Path(sys.executable).with_name("vitedge")
    p = subprocess.run([str(exe), "train", "--preset", "deit_tiny", "--dataset", "mnist"], capture_output=True,
                       text=True)
    assert p.returncode == 2
    assert_one_line_error(p.stderr, "unknown dataset 'mnist'")
