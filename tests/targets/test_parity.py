"""vitedge.parity: the one parity module export, validate and the TensorRT target share (fast, no export)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import vitedge.export
import vitedge.validate
from vitedge import parity
from vitedge.errors import ExportError
from vitedge.parity import check_batches, compare, export_tolerance, parity_photos, run_pairs, tolerance_for


class TwoOutputs(nn.Module):
    def forward(self, x):
        return x.mean((2, 3)), x.amax((2, 3))


def _photos(n=5):
    return torch.linspace(-1, 1, n * 3 * 4 * 4).reshape(n, 3, 4, 4)


def test_one_home_for_metrics_and_tolerances():
    """validate and export re-export the parity module's objects (the names users import keep working)."""
    assert vitedge.validate.compare is compare and vitedge.validate.tolerance_for is tolerance_for
    assert vitedge.validate.check_tolerance is parity.check_tolerance
    assert vitedge.validate.DEFAULT_TOLERANCE is parity.DEFAULT_TOLERANCE
    assert vitedge.export.CUDA_FP32_TOLERANCE is parity.CUDA_FP32_TOLERANCE == {"cosine": 0.9999}
    assert parity.PARITY_BATCHES == (1, 3, 8)


def test_export_tolerance():
    assert export_tolerance("fp32") == {"max_abs": 1e-4, "top1_agreement": 1.0}
    assert export_tolerance("fp32", 1e-3) == {"max_abs": 1e-3, "top1_agreement": 1.0}
    assert export_tolerance("fp32", 1e-3, "cuda:0") == {"cosine": 0.9999}
    assert export_tolerance("fp16", 1e-3, "cuda") == {"cosine": 0.999}
    assert export_tolerance("int8") == {"cosine": 0.99}


def test_check_batches_passes_and_reports_every_output():
    model = TwoOutputs()

    def run(x):
        return [o.numpy() for o in model(torch.from_numpy(x))]

    res = check_batches(model, run, _photos(), (1, 3, 8), export_tolerance("fp32"), what="t fp32 artifact",
                        output_names=["logits", "extra"])
    assert list(res) == ["batch_1", "batch_3", "batch_8"]
    assert res["batch_8"]["samples"] == 8 and res["batch_8"]["max_abs"] == 0.0
    assert set(res["batch_3"]["outputs_max_abs"]) == {"logits", "extra"}
    first_only = check_batches(model, run, _photos(), (2,), export_tolerance("fp32"), what="graph")
    assert "outputs_max_abs" not in first_only["batch_2"]


def test_check_batches_messages():
    model = TwoOutputs()

    def off(x):  # the second output off by 1: only a check of every output sees it
        a, b = model(torch.from_numpy(x))
        return [a.numpy(), b.numpy() + 1]

    with pytest.raises(ExportError) as e:
        check_batches(model, off, _photos(), (1, 3), export_tolerance("fp32"), what="onnx fp32 artifact",
                      output_names=["logits", "extra"])
    assert str(e.value) == ("onnx fp32 artifact differs from eager at batch 1 on the bundled photos (max_abs 1 > "
                            "0.0001); not written")
    check_batches(model, off, _photos(), (1,), export_tolerance("fp32"), what="graph")  # first output: passes

    def worse(x):
        return [o.numpy() * -1 for o in model(torch.from_numpy(x))]

    with pytest.raises(ExportError, match=r"^the fp16 ONNX graph for TensorRT differs from eager at batch 3 in ONNX "
                                          r"Runtime \(cosine -1 < 0\.999\); not written$"):
        check_batches(model, worse, _photos(), (3,), export_tolerance("fp16"),
                      what="the fp16 ONNX graph for TensorRT", where="in ONNX Runtime")

    def fixed(x):
        return [o.numpy()[:1] for o in model(torch.from_numpy(x))]

    with pytest.raises(ExportError, match=r"^onnx artifact gives output shape \(1, 3\) at batch 3, eager gives "
                                          r"\(3, 3\) \(batch dimension specialised\?\)$"):
        check_batches(model, fixed, _photos(), (1, 3), export_tolerance("fp32"), what="onnx fp32 artifact",
                      shape_what="onnx artifact", output_names=["logits", "extra"])


def test_parity_photos():
    ex = torch.zeros(2, 3, 24, 32)
    photos = parity_photos(ex)
    assert photos.shape[1:] == (3, 24, 32) and photos.dtype == torch.float32 and len(photos) >= 3
    grey = torch.zeros(2, 1, 8, 8)
    assert parity_photos(grey) is grey  # not 3 channels: the example itself


def test_run_pairs_pads_a_fixed_batch_and_checks_each_chunk():
    model = TwoOutputs()
    seen = []

    def run(x):
        assert len(x) == 4  # fixed batch: the last chunk (1 image) padded to 4
        return [model(torch.from_numpy(x))[0].numpy()]

    ref, out = run_pairs(model, run, _photos(5), 4, check=lambda x: seen.append(x.shape))
    assert ref.shape == out.shape == (5, 3) and np.array_equal(ref, out)
    assert seen == [(4, 3, 4, 4), (4, 3, 4, 4)]
    ref, out = run_pairs(model, lambda x: [model(torch.from_numpy(x))[0].numpy()], _photos(70), -1)
    assert ref.shape == (70, 3) and np.array_equal(ref, out)
