"""DeepViT (arXiv 2103.11886): parity with vit-pytorch's ``deepvit.DeepViT`` on real photos, and export.

Small configurations keep each test to a few seconds on two CPU cores; the full-size presets are under
``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch

from helpers import check_parity, export_and_check, oracle_pair
from oracle import oracle
from vitedge.models.deepvit import DeepViT, mix_heads

SMALL = dict(image_size=32, patch_size=8, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64, dim_head=8)


def build_pair(ref_kw, ours_kw=None):
    """Seeded reference and ours (same kwargs unless given) loaded from its state_dict (strict), in eval mode."""
    return oracle_pair(oracle("deepvit").DeepViT, DeepViT, ref_kw, ours_kw)


def test_state_dict_keys_match():
    ref, ours = oracle("deepvit").DeepViT(**SMALL), DeepViT(**SMALL)
    a, b = ref.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_mix_heads_matches_einsum():
    attn, w = torch.randn(3, 5, 7, 9), torch.randn(5, 5)
    torch.testing.assert_close(mix_heads(attn, w), torch.einsum("bhij,hg->bgij", attn, w))


@pytest.mark.parametrize("kw", [
    SMALL,
    dict(SMALL, pool="mean"),
    dict(SMALL, heads=1, dim_head=32),                  # LayerNorm over a single head
    dict(SMALL, channels=1, image_size=24, patch_size=4),
], ids=["small", "mean_pool", "single_head", "one_channel"])
def test_parity_photos(kw, photo_batch):
    ref, ours = build_pair(kw)
    s = kw["image_size"]
    check_parity(ref, ours, photo_batch((s, s))[:, : kw.get("channels", 3)].contiguous())


@pytest.mark.parametrize("image_size,square", [((16, 64), 32), ((48, 24), 0)])
def test_parity_non_square(image_size, square, photo_batch):
    """(H, W) is an extension (the reference takes ints); its reference is vit-pytorch built at a square size
    with the same number of patches, fed the (H, W) image (its patch embedding and position slice take any
    size). A square-less patch count (48x24 / 8 = 18 patches) only checks the forward."""
    kw = dict(SMALL, image_size=image_size)
    if square:
        ref, ours = build_pair(dict(SMALL, image_size=square), kw)
        check_parity(ref, ours, photo_batch(image_size))
    else:
        ours = DeepViT(**kw).eval()
        with torch.no_grad():
            out = ours(photo_batch(image_size))
        assert out.shape == (8, 10) and torch.isfinite(out).all()


def test_invalid_arguments():
    with pytest.raises(ValueError, match="divisible"):
        DeepViT(**dict(SMALL, image_size=30))
    with pytest.raises(ValueError, match="divisible"):
        DeepViT(**dict(SMALL, image_size=(32, 36)))
    with pytest.raises(ValueError, match="pool"):
        DeepViT(**dict(SMALL, pool="max"))


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_export(target, tmp_path):
    kw = dict(SMALL, image_size=(32, 48), patch_size=(8, 16))
    torch.manual_seed(0)
    model = DeepViT(**kw).eval()
    export_and_check(model, kw["image_size"], target, tmp_path, num_classes=10)
