"""MobileViT (arXiv 2110.02178): parity with vit-pytorch's ``mobile_vit.MobileViT`` on real photos, and export.

Small configurations keep each test to a few seconds on two CPU cores; the full-size presets are under
``@pytest.mark.slow``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers import check_parity, exercise_batchnorm, max_onnx_rank, photos
from oracle import oracle
from vitedge.models.mobilevit import MobileViT, fold_patches, unfold_patches

SMALL = dict(dims=(16, 20, 24), channels=(8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 48), num_classes=10,
             depths=(1, 2, 1), expansion=2)


def build_pair(**kwargs) -> tuple[nn.Module, MobileViT]:
    """Seeded reference with exercised BatchNorm, and ours loaded from its state_dict (strict)."""
    ref_mod = oracle("mobile_vit")
    torch.manual_seed(0)
    ref = ref_mod.MobileViT(**kwargs)
    exercise_batchnorm(ref, photos(kwargs["image_size"]))
    ours = MobileViT(**kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    return ref, ours


def test_state_dict_keys_match():
    ref_mod = oracle("mobile_vit")
    kw = dict(image_size=(64, 64), **SMALL)
    ref, ours = ref_mod.MobileViT(**kw), MobileViT(**kw)
    a, b = ref.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


@pytest.mark.parametrize("image_size,patch_size,expansion", [
    ((64, 64), (2, 2), 2),
    ((64, 64), (2, 2), 1),        # MV2 blocks without the expansion conv
])
def test_parity_photos(image_size, patch_size, expansion):
    kw = dict(SMALL, image_size=image_size, patch_size=patch_size, expansion=expansion)
    ref, ours = build_pair(**kw)
    check_parity(ref, ours, photos(image_size))


@pytest.mark.parametrize("image_size,patch_size", [
    ((128, 64), (2, 2)),          # non-square image
    ((64, 128), (2, 4)),          # non-square image and non-square patches (ph != pw)
    ((256, 192), (2, 2)),
])
def test_parity_non_square(image_size, patch_size):
    kw = dict(SMALL, image_size=image_size, patch_size=patch_size)
    ref, ours = build_pair(**kw)
    x = photos(image_size)
    check_parity(ref, ours, x)
    with torch.no_grad():
        assert ours(x).shape == (4, SMALL["num_classes"])


@pytest.mark.parametrize("ph,pw", [(2, 2), (2, 4), (4, 2), (1, 3)])
def test_unfold_fold_match_einops(ph, pw):
    einops = pytest.importorskip("einops")
    h, w = 3, 5
    x = torch.randn(2, 7, h * ph, w * pw)
    ref = einops.rearrange(x, "b d (h ph) (w pw) -> b (ph pw) (h w) d", ph=ph, pw=pw)
    y = unfold_patches(x, ph, pw, h, w)
    assert torch.equal(y, ref)
    assert torch.equal(fold_patches(y, ph, pw, h, w), x)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="dims"):
        MobileViT(image_size=(64, 64), dims=(16, 20), channels=SMALL["channels"], num_classes=10)
    with pytest.raises(ValueError, match="depths"):
        MobileViT(image_size=(64, 64), dims=SMALL["dims"], channels=SMALL["channels"], num_classes=10, depths=(1, 1))
    with pytest.raises(ValueError, match="channels"):
        MobileViT(image_size=(64, 64), dims=SMALL["dims"], channels=SMALL["channels"][:-1], num_classes=10)
    with pytest.raises(ValueError, match="divisible"):
        MobileViT(image_size=(65, 64), dims=SMALL["dims"], channels=SMALL["channels"], num_classes=10)
    with pytest.raises(ValueError, match="divisible"):     # fmap 96/32 = 3 is not divisible by 2
        MobileViT(image_size=(96, 64), dims=SMALL["dims"], channels=SMALL["channels"], num_classes=10)


def _small_model(image_size=(64, 128), patch_size=(2, 2)) -> MobileViT:
    torch.manual_seed(0)
    model = MobileViT(**dict(SMALL, image_size=image_size, patch_size=patch_size))
    exercise_batchnorm(model, photos(image_size))
    return model


@pytest.mark.parametrize("patch_size", [(2, 2), (2, 4)])
def test_torchscript_trace_dynamic_batch(patch_size):
    model = _small_model(patch_size=patch_size)
    x = photos((64, 128))
    with torch.no_grad():
        traced = torch.jit.trace(model, x[:2])
        for n in (1, 3, 8):
            xb = x.repeat(2, 1, 1, 1)[:n] if n > 4 else x[:n]
            diff = (traced(xb) - model(xb)).abs().max().item()
            assert diff <= 1e-4, (n, diff)


def test_onnx_dynamo_dynamic_batch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _small_model(patch_size=(2, 4))
    x = photos((64, 128))
    x8 = torch.cat([x, x.flip(-1)])
    path = tmp_path / "mobilevit.onnx"
    torch.onnx.export(model, (x8[:2],), str(path), dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},), opset_version=18)
    assert max_onnx_rank(path) <= 5          # Core ML's rank limit
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    with torch.no_grad():
        for n in (1, 3, 8):
            (out,) = sess.run(None, {name: x8[:n].numpy()})
            diff = np.abs(out - model(x8[:n]).numpy()).max()
            assert out.shape == (n, SMALL["num_classes"])
            assert diff <= 1e-4, (n, diff)
