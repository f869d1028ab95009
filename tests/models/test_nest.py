"""NesT (arXiv 2105.12723): parity with vit-pytorch's ``nest.NesT`` on real photos, and export.

Small configurations keep each test short on two CPU cores; the full-size preset is under ``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import assert_same_init, check_parity, export_and_check, oracle_pair, randomize_norms
from oracle import oracle
from vitedge.models.nest import NesT

# 64 / 4 = 16x16 patches, 3 hierarchies: 4x4, 2x2, 1x1 blocks of 4x4 tokens.
SMALL = dict(image_size=64, patch_size=4, dim=16, heads=2, num_hierarchies=3, block_repeats=(1, 1, 2), num_classes=10)


def build_pair(**kwargs) -> tuple[nn.Module, NesT]:
    """Seeded reference with randomised norms, and ours loaded from its state_dict (strict), both in eval mode."""
    return oracle_pair(oracle("nest").NesT, NesT, kwargs, prepare=randomize_norms)


def test_state_dict_keys_and_init_match():
    for kw in (SMALL, dict(SMALL, num_hierarchies=2, block_repeats=1, mlp_mult=2)):
        assert_same_init(oracle("nest").NesT, NesT, kw)


@pytest.mark.parametrize("kwargs", [
    SMALL,
    dict(image_size=48, patch_size=2, dim=8, heads=1, num_hierarchies=2, block_repeats=1, mlp_mult=2,
         num_classes=10),
    dict(image_size=32, patch_size=8, dim=12, heads=3, num_hierarchies=1, block_repeats=(2,), num_classes=10),
    dict(SMALL, block_repeats=(1, 1, 1, 5), dropout=0.1),   # extra repeats ignored, as the reference
])
def test_parity_photos(kwargs, photo_batch):
    ref, ours = build_pair(**kwargs)
    s = kwargs["image_size"]
    check_parity(ref, ours, photo_batch((s, s), 4))


def test_non_square_rejected_clearly(photo_batch):
    """NesT is square-only (an int image_size, one pos_emb per block position); a square tuple is accepted."""
    with pytest.raises(ValueError, match="square"):
        NesT(**dict(SMALL, image_size=(64, 96)))
    ref, ours = build_pair(**SMALL)
    torch.manual_seed(0)
    as_tuple = NesT(**dict(SMALL, image_size=(64, 64))).eval()
    as_tuple.load_state_dict(ours.state_dict(), strict=True)
    x = photo_batch((64, 64), 2)
    with torch.no_grad():
        assert torch.equal(as_tuple(x), ours(x))
    with pytest.raises(ValueError, match="built for 64x64"):
        ours(photo_batch((64, 96), 1))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="divisible by the patch size"):
        NesT(**dict(SMALL, image_size=66))
    with pytest.raises(ValueError, match="blocks"):
        NesT(**dict(SMALL, image_size=56))           # 14x14 patches into 4x4 blocks
    with pytest.raises(ValueError, match="block_repeats"):
        NesT(**dict(SMALL, block_repeats=(1, 1)))


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_export(target, tmp_path):
    size = (64, 64)
    torch.manual_seed(0)
    model = NesT(**SMALL)
    randomize_norms(model)
    art = export_and_check(model.eval(), size, target, tmp_path, num_classes=10)
