"""CvT (Wu et al. 2021, arXiv 2103.15808): parity with vit-pytorch's ``cvt.CvT`` on real photos, and export.

The q/k/v projections carry BatchNorm, so every parity test first gives the BatchNorms non-trivial affine
parameters and running statistics. Small configurations keep each test to a few seconds on two CPU cores;
the full-size preset is under ``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import check_parity, exercise_batchnorm, export_and_check, oracle_pair
from oracle import oracle
from vitedge.models.cvt import ChannelLayerNorm, CvT

SMALL = dict(num_classes=10, s1_emb_dim=16, s1_heads=1, s1_depth=1, s2_emb_dim=24, s2_heads=2, s2_depth=1,
             s3_emb_dim=32, s3_heads=2, s3_depth=2)


def build_pair(x: torch.Tensor, **kwargs) -> tuple[nn.Module, CvT]:
    """Seeded reference with exercised BatchNorm (on ``x``), and ours loaded from its state_dict (strict)."""
    return oracle_pair(oracle("cvt").CvT, CvT, kwargs, prepare=lambda ref: exercise_batchnorm(ref, x, moved_var=True))


def test_state_dict_keys_match():
    ref_mod = oracle("cvt")
    a, b = ref_mod.CvT(**SMALL).state_dict(), CvT(**SMALL).state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
    assert any(k.endswith("running_var") for k in b)


@pytest.mark.parametrize("kw", [
    SMALL,
    dict(SMALL, s1_proj_kernel=5, s2_kv_proj_stride=1, s3_mlp_mult=2, s3_heads=4, s1_emb_kernel=5, channels=3),
])
def test_parity_photos(kw, photo_batch):
    x = photo_batch((64, 64))
    ref, ours = build_pair(x, **kw)
    check_parity(ref, ours, x)


@pytest.mark.parametrize("size", [(64, 96), (72, 40)])
def test_parity_non_square(size, photo_batch):
    """Fully convolutional: non-square inputs, including odd feature maps (72x40 -> 18x10 -> 9x5 -> 5x3)."""
    x = photo_batch(size)
    ref, ours = build_pair(x, **SMALL)
    check_parity(ref, ours, x)


def test_batchnorm_is_exercised(photo_batch):
    """The BatchNorms' running statistics really reach the compared logits."""
    x = photo_batch((64, 64))
    _, ours = build_pair(x, **SMALL)
    with torch.no_grad():
        base = ours(x)
        for m in ours.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
        assert (ours(x) - base).abs().max() > 1e-3


def test_channel_layer_norm_matches_layer_norm():
    x = torch.randn(2, 6, 3, 5) * 3 + 1
    ln = ChannelLayerNorm(6)
    with torch.no_grad():
        ln.g.normal_()
        ln.b.normal_()
        ref = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), ln.g.flatten(), ln.b.flatten())
    assert torch.allclose(ln(x), ref.permute(0, 3, 1, 2), atol=1e-5)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="s2_proj_kernel must be odd"):
        CvT(**dict(SMALL, s2_proj_kernel=2))


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_export(target, tmp_path, photo_batch):
    size = (64, 96)
    torch.manual_seed(0)
    model = CvT(**SMALL)
    exercise_batchnorm(model, photo_batch(size), moved_var=True)
    export_and_check(model, size, target, tmp_path, num_classes=SMALL["num_classes"])
