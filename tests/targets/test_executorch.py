"""ExecuTorch target: XNNPACK-lowered .pte programs run by the ExecuTorch runtime (Python bindings), checked
against eager on real photos (fp32) and on the held-out digits (int8, PT2E static quantization), plus bad inputs.

Tiny models (32x32, depth 1) keep lowering to seconds."""
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("executorch.runtime", reason="executorch is not installed (pip install 'vitedge[executorch]')")

import vitedge.export  # noqa: E402
from vitedge.data import digits_batch, digits_split, make_preprocessing  # noqa: E402
from vitedge.errors import ArtifactError, UsageError  # noqa: E402
from vitedge.models.vit import ViT  # noqa: E402
from vitedge.runtime import open_artifact  # noqa: E402
from vitedge.targets import executorch as et  # noqa: E402
from helpers import train_on_digits  # noqa: E402

SIZE = (32, 32)


def tiny_vit(num_classes: int = 10) -> ViT:
    torch.manual_seed(0)
    return ViT(image_size=32, patch_size=8, num_classes=num_classes, dim=32, depth=1, heads=2, mlp_dim=64,
               dim_head=16).eval()


@pytest.fixture(scope="module")
def fp32_artifact(tmp_path_factory):
    model = tiny_vit(5)
    out = tmp_path_factory.mktemp("et") / "fp32"
    art = vitedge.export.export(model, torch.zeros(2, 3, *SIZE), "executorch", out,
                                preprocessing=make_preprocessing(SIZE), target_options={"max_batch": 8})
    return model, art


def test_fp32_export_matches_eager_on_photos(fp32_artifact):
    _, art = fp32_artifact
    m = art.manifest
    assert art.file.name == "model.pte" and m["backend"] == "executorch" and m["target"] == "executorch"
    assert m["inputs"][0]["shape"] == [-1, 3, *SIZE] and m["executorch"]["max_batch"] == 8
    assert m["export"]["delegated_subgraphs"] >= 1  # XNNPACK took at least part of the graph
    for b in (1, 3, 8):  # the driver ran these on the bundled photos
        assert m["parity"][f"batch_{b}"]["max_abs"] <= 1e-4 and m["parity"][f"batch_{b}"]["samples"] == b


@pytest.mark.parametrize("batch", [1, 3])
def test_loaded_program_matches_eager(fp32_artifact, photo_batch, batch):
    model, art = fp32_artifact
    _, runner = open_artifact(art.path, threads=1)
    x = photo_batch(SIZE, batch)
    got = runner.run(x.numpy())
    with torch.no_grad():
        ref = model(x).numpy()
    assert got[0].shape == ref.shape == (batch, 5)
    assert np.abs(got[0] - ref).max() <= 1e-4
    assert runner.runtime.startswith("executorch")


def test_threadpool_size_is_set():
    assert et.set_threads(1) == 1
    assert et.set_threads(2) == 2


def test_wrong_input_is_a_clear_error_and_large_batches_chunk(fp32_artifact, photo_batch):
    _, art = fp32_artifact
    _, runner = open_artifact(art.path, threads=1)
    with pytest.raises(UsageError, match="does not fit"):
        runner.run(photo_batch((48, 48), 1).numpy())
    model = fp32_artifact[0]
    x9 = photo_batch(SIZE, 9)  # above max_batch 8: run in chunks of 8
    with torch.no_grad():
        assert np.abs(runner.run(x9.numpy())[0] - model(x9).numpy()).max() <= 1e-4
    with pytest.raises(UsageError, match="float32"):
        runner.run(photo_batch(SIZE, 1).numpy().astype(np.float64))


def test_corrupt_program_is_an_artifact_error(fp32_artifact, tmp_path):
    _, art = fp32_artifact
    data = bytearray(art.file.read_bytes())
    for bad, name in ((data[: len(data) // 3], "truncated"), (b"\x00" * 64 + data[64:], "header")):
        p = tmp_path / f"{name}.pte"
        p.write_bytes(bytes(bad))
        with pytest.raises(ArtifactError, match="cannot load ExecuTorch program"):
            et.ExecuTorchRunner(p, threads=1)


def test_corrupt_program_through_cli_exits_cleanly(fp32_artifact, tmp_path):
    """A corrupted .pte (hash check skipped) gives a non-zero exit and a vitedge error line, no traceback/crash."""
    import shutil
    _, art = fp32_artifact
    copy = tmp_path / "a"
    shutil.copytree(art.path, copy)
    (copy / "model.pte").write_bytes(art.file.read_bytes()[:1000])
    r = subprocess.run([sys.executable, "-m", "vitedge.cli", "bench", str(copy), "--no-verify", "--iters", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "vitedge: error: cannot load ExecuTorch program" in r.stderr


def _train_tiny_digits(seconds_epochs: int = 6):
    """A depth-1 ViT trained on the digits train split at 32x32 (a few seconds); returns (model, pre, split)."""
    pre = make_preprocessing(SIZE)
    return train_on_digits(tiny_vit(10), pre, seconds_epochs), pre, digits_split(0)


def test_int8_pt2e_keeps_digits_accuracy(tmp_path):
    from vitedge.quantize import calibration_data
    model, pre, (_, test) = _train_tiny_digits()
    xte, yte = digits_batch(test, pre)
    with torch.no_grad():
        eager_top1 = float((model(xte).argmax(1) == yte).float().mean())
    assert eager_top1 > 0.5  # a real, if short, training run
    calib, info = calibration_data("digits", pre, 64)
    art = vitedge.export.export(model, torch.zeros(2, 3, *SIZE), "executorch", tmp_path / "int8", preprocessing=pre,
                                precision="int8", target_options={"max_batch": 16},
                                quantization={"mode": "static", "calibration": calib.numpy(),
                                              "calibration_info": info})
    q = art.manifest["quantization"]
    assert art.manifest["precision"] == "int8" and q["mode"] == "static" and q["calibration"]["split"] == "train"
    _, runner = open_artifact(art.path, threads=1)
    preds = np.concatenate([runner.run(xte[i:i + 16].numpy())[0].argmax(1) for i in range(0, len(xte), 16)])
    int8_top1 = float((preds == yte.numpy()).mean())
    assert (eager_top1 - int8_top1) * 100 <= 1.0, (eager_top1, int8_top1)
    fp32 = vitedge.export.export(model, torch.zeros(2, 3, *SIZE), "executorch", tmp_path / "fp32", preprocessing=pre,
                                 target_options={"max_batch": 16})
    assert art.file.stat().st_size < 0.6 * fp32.file.stat().st_size  # int8 weights


def test_int8_without_calibration_is_refused(tmp_path):
    with pytest.raises(UsageError, match="calibration"):
        vitedge.export.export(tiny_vit(), torch.zeros(2, 3, *SIZE), "executorch", tmp_path / "a",
                              preprocessing=make_preprocessing(SIZE), precision="int8",
                              quantization={"mode": "static"})
    assert not (tmp_path / "a").exists()


def test_unsupported_precision_is_refused(tmp_path):
    with pytest.raises(UsageError, match="cannot produce fp16"):
        vitedge.export.export(tiny_vit(), torch.zeros(2, 3, *SIZE), "executorch", tmp_path / "a", precision="fp16")
    assert et.PRECISIONS == {"fp32": None, "int8": ("static", "dynamic")}


def test_recorded_max_batch_is_the_largest_batch_the_program_runs(monkeypatch):
    """torch.export may tighten the batch bound below the requested one (MobileViT-XS at 64x64: 15, not 32); the
    export records the batch the planned buffers really hold, found by bisection against the runtime."""
    from pathlib import Path

    from vitedge.errors import ExportError

    class Capacity:  # stands in for the runtime: a program whose buffers hold `cap` images
        cap = 15

        def __init__(self, path):
            pass

        def run(self, x):
            if x.shape[0] > Capacity.cap:
                raise ArtifactError("Attempted to resize a bounded tensor")
            return [x]

    monkeypatch.setattr(et, "ExecuTorchRunner", Capacity)
    assert et._largest_runnable_batch(Path("unused.pte"), (3, 8, 8), 32) == 15
    Capacity.cap = 32
    assert et._largest_runnable_batch(Path("unused.pte"), (3, 8, 8), 32) == 32
    Capacity.cap = 1
    with pytest.raises(ExportError):
        et._largest_runnable_batch(Path("unused.pte"), (3, 8, 8), 32)


def test_dynamic_int8_needs_no_calibration_and_stays_close(tmp_path, photo_batch):
    """Dynamic PT2E int8 (MobileViT's default recipe): int8 weights, activations quantized per run."""
    art = vitedge.export.export(tiny_vit(), photo_batch(SIZE, 2), "executorch", tmp_path / "dyn",
                                preprocessing=make_preprocessing(SIZE), precision="int8",
                                quantization={"mode": "dynamic"})
    assert art.manifest["quantization"]["mode"] == "dynamic"
    assert art.manifest["parity"]["batch_3"]["cosine"] >= 0.99
    assert et.default_int8_mode("mobilevit") == "dynamic" and et.default_int8_mode("levit") == "static"


def test_int8_weights_computed_from_parameters_are_folded_first(tmp_path, photo_batch):
    """LeViT folds its BatchNorms into its projections' weights inside forward (eval mode); those weights are
    computed from parameters, and XNNPACK's per-channel int8 weights must be constants, so the target constant-folds
    the exported graph before PT2E quantization (else: "ExportedProgram must be provided to extract per channel
    params"). Every projection ends up as an int8 weight: the program is much smaller than fp32's."""
    from vitedge.models.levit import LeViT
    from vitedge.quantize import calibration_data
    torch.manual_seed(0)
    model = LeViT(image_size=112, num_classes=10, dim=(32, 48, 64), depth=1, heads=(2, 3, 4), mlp_mult=2).eval()
    pre = make_preprocessing((112, 112))
    calib, info = calibration_data("digits", pre, 16)
    kw = dict(preprocessing=pre, target_options={"max_batch": 8})
    art = vitedge.export.export(model, torch.zeros(2, 3, 112, 112), "executorch", tmp_path / "int8", precision="int8",
                                quantization={"mode": "static", "calibration": calib.numpy(), "calibration_info": info},
                                **kw)
    fp32 = vitedge.export.export(model, torch.zeros(2, 3, 112, 112), "executorch", tmp_path / "fp32", **kw)
    assert art.manifest["parity"]["batch_1"]["samples"] == 1
    assert art.file.stat().st_size < 0.5 * fp32.file.stat().st_size
    # fp32 folds them too (fold_constants): every matmul is XNNPACK's, none left to the portable kernels
    assert fp32.manifest["export"]["constants_folded"] > 0
    left = fp32.manifest["export"]["non_delegated_ops"]
    assert not [op for op in left if "mm" in op or "linear" in op or "rsqrt" in op], left


def test_levit_with_a_1x1_last_stage_runs_at_any_batch(tmp_path):
    """At 64x64 LeViT's last stage is 1x1: its attention bias is a permuted (heads, 1, 1) view, folded into a constant.
    Stored with the view's strides, ExecuTorch read it with another dim order and the program failed at every batch
    ("expanded size (1) must match the existing size (8)"); fp32 and int8 now run at batches 1, 3 and 8 (parity)."""
    from vitedge.models.levit import LeViT
    from vitedge.quantize import calibration_data
    torch.manual_seed(0)
    model = LeViT(image_size=64, num_classes=10, dim=(32, 48, 64), depth=1, heads=(2, 3, 4), mlp_mult=2).eval()
    pre = make_preprocessing((64, 64))
    calib, info = calibration_data("digits", pre, 16)
    kw = dict(preprocessing=pre, target_options={"max_batch": 8})
    for precision, quant in (("fp32", None), ("int8", {"mode": "static", "calibration": calib.numpy(),
                                                       "calibration_info": info})):
        art = vitedge.export.export(model, torch.zeros(2, 3, 64, 64), "executorch", tmp_path / precision,
                                    precision=precision, quantization=quant, **kw)
        assert art.manifest["executorch"]["max_batch"] == 8
        assert [art.manifest["parity"][f"batch_{b}"]["samples"] for b in (1, 3, 8)] == [1, 3, 8]
