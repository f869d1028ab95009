"""SimpleViT (arXiv 2205.01580): parity with vit-pytorch's ``simple_vit.SimpleViT`` on real photos, and export.

Small configurations keep each test to a few seconds on two CPU cores; the full-size presets are under
``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch

from helpers import check_parity, export_and_check, oracle_pair
from oracle import oracle
from vitedge.models.simple_vit import SimpleViT, posemb_sincos_2d

SMALL = dict(image_size=32, patch_size=8, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64, dim_head=8)


def _hw(kw) -> tuple[int, int]:
    s = kw["image_size"]
    return s if isinstance(s, tuple) else (s, s)


def build_pair(**kw):
    """Seeded reference and ours loaded from its state_dict (strict), both in eval mode."""
    return oracle_pair(oracle("simple_vit").SimpleViT, SimpleViT, kw)


def test_state_dict_keys_match():
    ref, ours = oracle("simple_vit").SimpleViT(**SMALL), SimpleViT(**SMALL)
    a, b = ref.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    assert "pos_embedding" not in b          # a non-persistent constant, like the reference's plain attribute


def test_pos_embedding_is_a_constructor_constant():
    ref_mod = oracle("simple_vit")
    model = SimpleViT(**dict(SMALL, image_size=(32, 64)))
    assert "pos_embedding" in dict(model.named_buffers())
    assert torch.equal(model.pos_embedding, ref_mod.posemb_sincos_2d(h=4, w=8, dim=32))
    assert torch.equal(posemb_sincos_2d(5, 3, 64), ref_mod.posemb_sincos_2d(h=5, w=3, dim=64))
    assert model.half().pos_embedding.dtype == torch.float16     # follows the module like any buffer


@pytest.mark.parametrize("kw", [
    SMALL,
    dict(SMALL, heads=1, dim_head=32),                  # single head of dim == dim: to_out still projects
    dict(SMALL, channels=1, image_size=24, patch_size=(4, 8)),
], ids=["small", "single_head", "one_channel"])
def test_parity_photos(kw, photo_batch):
    ref, ours = build_pair(**kw)
    x = photo_batch(_hw(kw))[:, : kw.get("channels", 3)].contiguous()
    check_parity(ref, ours, x)


@pytest.mark.parametrize("image_size,patch_size", [((32, 64), 8), ((48, 32), (16, 8))])
def test_parity_non_square(image_size, patch_size, photo_batch):
    kw = dict(SMALL, image_size=image_size, patch_size=patch_size)
    ref, ours = build_pair(**kw)
    check_parity(ref, ours, photo_batch(image_size))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="divisible"):
        SimpleViT(**dict(SMALL, image_size=30))
    with pytest.raises(ValueError, match="multiple of 4"):
        SimpleViT(**dict(SMALL, dim=30))
    with pytest.raises(ValueError, match="at least 8"):
        SimpleViT(**dict(SMALL, dim=4))


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_export(target, tmp_path):
    kw = dict(SMALL, image_size=(32, 48), patch_size=(8, 16))
    torch.manual_seed(0)
    model = SimpleViT(**kw).eval()
    export_and_check(model, kw["image_size"], target, tmp_path, num_classes=10)
