"""CaiT (arXiv 2103.17239): parity with vit-pytorch's ``cait.CaiT`` on real photos, and export.

Small configurations keep each test to a few seconds on two CPU cores; the full-size presets are under
``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch

from helpers import check_parity, export_and_check, oracle_pair
from oracle import oracle
from vitedge.models.cait import CaiT, layer_scale_init

SMALL = dict(image_size=32, patch_size=8, num_classes=10, dim=32, depth=2, cls_depth=1, heads=4, mlp_dim=64,
             dim_head=8)


def build_pair(ref_kw, ours_kw=None):
    """Seeded reference and ours (same kwargs unless given) loaded from its state_dict (strict), in eval mode."""
    return oracle_pair(oracle("cait").CaiT, CaiT, ref_kw, ours_kw)


def test_state_dict_keys_match():
    ref, ours = oracle("cait").CaiT(**SMALL), CaiT(**SMALL)
    a, b = ref.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_layer_scale_init_matches_reference():
    ref = oracle("cait").CaiT(**dict(SMALL, depth=26, dim=8, heads=1, mlp_dim=8))
    ours = CaiT(**dict(SMALL, depth=26, dim=8, heads=1, mlp_dim=8))
    for i, (r, o) in enumerate(zip(ref.patch_transformer.layers, ours.patch_transformer.layers)):
        assert torch.equal(r[0].scale, o[0].scale) and torch.equal(r[1].scale, o[1].scale), i
    assert [layer_scale_init(d) for d in (1, 18, 19, 24, 25)] == [0.1, 0.1, 1e-5, 1e-5, 1e-6]


@pytest.mark.parametrize("kw", [
    SMALL,
    dict(SMALL, depth=3, cls_depth=2, heads=2, dim_head=16),
    dict(SMALL, heads=1, dim_head=32, cls_depth=0),            # no class-attention layer
    dict(SMALL, image_size=48, patch_size=16, dropout=0.3, emb_dropout=0.3),   # dropouts are eval no-ops
], ids=["small", "deeper", "single_head_no_cls_layers", "dropouts"])
def test_parity_photos(kw, photo_batch):
    ref, ours = build_pair(kw)
    s = kw["image_size"]
    check_parity(ref, ours, photo_batch((s, s)))


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
        ours = CaiT(**kw).eval()
        with torch.no_grad():
            out = ours(photo_batch(image_size))
        assert out.shape == (8, 10) and torch.isfinite(out).all()


def test_layer_dropout_only_in_training(photo_batch):
    """The reference drops layers even in eval mode (random inference); ours only while training."""
    kw = dict(SMALL, depth=4, layer_dropout=0.5)
    ref, ours = build_pair(dict(kw, layer_dropout=0.0), kw)
    x = photo_batch((32, 32), 2)
    check_parity(ref, ours, x)                                # eval: every layer runs
    ours.train()
    torch.manual_seed(3)
    for _ in range(5):
        n = len(ours.patch_transformer._active_layers())
        assert 1 <= n <= 4
    ours.patch_transformer.layer_dropout = 1.0
    assert len(ours.patch_transformer._active_layers()) == 1     # at least one layer survives


def test_invalid_arguments():
    with pytest.raises(ValueError, match="divisible"):
        CaiT(**dict(SMALL, image_size=30))
    with pytest.raises(ValueError, match="divisible"):
        CaiT(**dict(SMALL, image_size=(32, 36)))


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_export(target, tmp_path):
    kw = dict(SMALL, image_size=(32, 48), patch_size=(8, 16), depth=1, cls_depth=2)
    torch.manual_seed(0)
    model = CaiT(**kw).eval()
    export_and_check(model, kw["image_size"], target, tmp_path, num_classes=10)
