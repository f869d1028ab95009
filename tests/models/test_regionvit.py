"""RegionViT (arXiv 2106.02689): parity with vit-pytorch's ``regionvit.RegionViT`` on real photos, and export.

Small configurations keep each test short on two CPU cores; the full-size preset is under ``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import assert_same_init, check_parity, export_and_check, oracle_pair, randomize_norms
from oracle import oracle
from vitedge.models.regionvit import RegionViT, local_bias_indices

# window 2, local patch 4 -> region patch 8: a 64x64 input has 8x8 regions of 2x2 local tokens at every stage.
SMALL = dict(dim=(16, 32, 32, 32), depth=(1, 1, 1, 1), window_size=2, num_classes=10)


def build_pair(**kwargs) -> tuple[nn.Module, RegionViT]:
    """Seeded reference with randomised norms, and ours loaded from its state_dict (strict), both in eval mode."""
    return oracle_pair(oracle("regionvit").RegionViT, RegionViT, kwargs,
                       prepare=lambda ref: randomize_norms(ref, embeddings=True))


def test_state_dict_keys_and_init_match():
    for kw in (SMALL, dict(SMALL, tokenize_local_3_conv=True, use_peg=True)):
        assert_same_init(oracle("regionvit").RegionViT, RegionViT, kw)


@pytest.mark.parametrize("kwargs,size,windows", [
    (SMALL, (64, 64), [(2, 2)] * 4),
    (dict(SMALL, window_size=3, tokenize_local_3_conv=True, use_peg=True), (48, 48), [(3, 3)] * 3 + [(2, 2)]),
    # the default window 7 on a small image: later stages get smaller windows (sliced bias table)
    (dict(dim=16, depth=1, window_size=7, num_classes=10), (56, 56), [(7, 7), (7, 7), (4, 4), (2, 2)]),
])
def test_parity_photos(kwargs, size, windows, photo_batch):
    ref, ours = build_pair(**kwargs)
    assert ours.stage_windows(*size) == windows
    check_parity(ref, ours, photo_batch(size, 4))


@pytest.mark.parametrize("kwargs,size", [
    (SMALL, (64, 128)),
    (dict(SMALL, window_size=3, tokenize_local_3_conv=True), (96, 48)),
    (dict(dim=16, depth=1, window_size=7, num_classes=10), (28, 56)),     # windows (7,7) (4,7) (2,4) (1,2)
])
def test_parity_non_square(kwargs, size, photo_batch):
    ref, ours = build_pair(**kwargs)
    check_parity(ref, ours, photo_batch(size, 4))


@pytest.mark.parametrize("wh,ww", [(3, 3), (2, 3), (1, 2)])
def test_bias_index_slices_match_reference_formula(wh, ww):
    ws = 3
    h, w = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    grid = torch.stack((h.flatten(), w.flatten()))
    grid = grid[:, :, None] - grid[:, None, :] + (ws - 1)
    expected = grid[0] + grid[1] * (2 * ws - 1)
    got = local_bias_indices(ws)[:wh, :ww, :wh, :ww].reshape(wh * ww, wh * ww)
    assert torch.equal(got, expected)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="dim"):
        RegionViT(dim=(16, 32, 32))
    with pytest.raises(ValueError, match="depth"):
        RegionViT(depth=(1, 1))
    with pytest.raises(ValueError, match="3 input channels"):
        RegionViT(channels=1)
    model = RegionViT(**SMALL).eval()
    with pytest.raises(ValueError, match="region patch size 8"):
        model(torch.zeros(1, 3, 60, 64))
    with pytest.raises(ValueError, match="does not tile"):
        model(torch.zeros(1, 3, 32, 96))               # stage 4: local 1x3 over 1x2 regions


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_export(target, tmp_path):
    size = (32, 64)
    torch.manual_seed(0)
    model = RegionViT(**dict(SMALL, tokenize_local_3_conv=True, use_peg=True))
    randomize_norms(model, embeddings=True)
    art = export_and_check(model.eval(), size, target, tmp_path, num_classes=10, max_rank=4)
