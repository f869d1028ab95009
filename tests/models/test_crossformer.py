"""CrossFormer (arXiv 2108.00154): parity with vit-pytorch's ``crossformer.CrossFormer`` on real photos, export.

Small configurations keep each test short on two CPU cores; the full-size preset is under ``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import assert_same_init, check_parity, export_and_check, oracle_pair, randomize_norms
from oracle import oracle
from vitedge.models.crossformer import CrossFormer, CrossFormerAttention, grid_partition, grid_reverse, \
    window_partition, window_reverse

# 64x64 input -> stage maps 16, 8, 4, 2: local windows of 2, dilated groups of 4, 2, 2, 1.
SMALL = dict(dim=(32, 64, 64, 64), depth=(1, 1, 1, 1), global_window_size=(4, 2, 2, 1), local_window_size=2,
             num_classes=10)
# 32x64 input -> stage maps 8x16, 4x8, 2x4, 1x2.
TINY = dict(dim=(32, 32, 64, 64), depth=1, global_window_size=(4, 2, 1, 1), local_window_size=(2, 2, 2, 1),
            num_classes=10)


def build_pair(**kwargs) -> tuple[nn.Module, CrossFormer]:
    """Seeded reference with randomised norms, and ours loaded from its state_dict (strict), both in eval mode."""
    return oracle_pair(oracle("crossformer").CrossFormer, CrossFormer, kwargs, prepare=randomize_norms)


def test_state_dict_keys_and_init_match():
    for kw in (SMALL, TINY):
        assert_same_init(oracle("crossformer").CrossFormer, CrossFormer, kw)


@pytest.mark.parametrize("kwargs,size", [
    (SMALL, (64, 64)),
    # unsorted kernels (sorted by the layer), three scales, a dropout that eval mode must ignore
    (dict(SMALL, cross_embed_kernel_sizes=((8, 4, 16), (4, 2), (2, 4, 6), (2, 4)), attn_dropout=0.1,
          ff_dropout=0.1), (64, 64)),
])
def test_parity_photos(kwargs, size, photo_batch):
    ref, ours = build_pair(**kwargs)
    check_parity(ref, ours, photo_batch(size, 4))


@pytest.mark.parametrize("size", [(64, 128), (128, 64)])
def test_parity_non_square(size, photo_batch):
    ref, ours = build_pair(**SMALL)
    x = photo_batch(size, 4)
    check_parity(ref, ours, x)
    assert ours.stage_sizes(*size)[0] == (size[0] // 4, size[1] // 4)


@pytest.mark.parametrize("gh,gw", [(2, 2), (2, 3), (4, 1)])
def test_partitions_match_einops(gh, gw):
    einops = pytest.importorskip("einops")
    x = torch.randn(2, 4 * gh, 3 * gw, 5)
    win = einops.rearrange(x, "b (h p1) (w p2) c -> (b h w) (p1 p2) c", p1=gh, p2=gw)
    grid = einops.rearrange(x, "b (l1 h) (l2 w) c -> (b h w) (l1 l2) c", l1=gh, l2=gw)
    assert torch.equal(window_partition(x, gh, gw), win)
    assert torch.equal(grid_partition(x, gh, gw), grid)
    assert torch.equal(window_reverse(win, gh, gw, 4 * gh, 3 * gw), x)
    assert torch.equal(grid_reverse(grid, gh, gw, 4 * gh, 3 * gw), x)


def test_position_bias_grid_is_static_and_mlp_stays_live():
    attn = CrossFormerAttention(64, "short", window_size=3)
    assert attn.rel_pos_grid.shape == (49, 2) and attn.rel_pos_indices.shape == (9, 9)
    assert "rel_pos_grid" not in attn.state_dict() and "rel_pos_indices" not in attn.state_dict()
    before = attn.position_bias().clone()
    with torch.no_grad():
        attn.dpb[-1].bias.add_(1.0)
    assert torch.allclose(attn.position_bias(), before + 1.0)      # the bias is recomputed from the MLP


def test_invalid_arguments():
    with pytest.raises(ValueError, match="depth"):
        CrossFormer(depth=(1, 1, 1))
    with pytest.raises(ValueError, match="cross_embed_strides"):
        CrossFormer(cross_embed_strides=(4, 2, 2))
    with pytest.raises(ValueError, match="attention type"):
        CrossFormerAttention(64, "medium", window_size=2)
    model = CrossFormer(**SMALL).eval()
    with pytest.raises(ValueError, match="not divisible by its local window size"):
        model(torch.zeros(1, 3, 64, 96))                  # stage 4 map 2x3, local window 2
    with pytest.raises(ValueError, match="unequal"):
        CrossFormer(**dict(SMALL, cross_embed_kernel_sizes=((4, 7), (2, 4), (2, 4), (2, 4))))(torch.zeros(1, 3, 64, 64))


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_export(target, tmp_path):
    size = (32, 64)
    torch.manual_seed(0)
    model = CrossFormer(**TINY)
    randomize_norms(model)
    art = export_and_check(model.eval(), size, target, tmp_path, num_classes=10, max_rank=4)
    if target == "onnx":
        assert art.manifest["export"]["ops"].get("Relu", 0) > 0          # the position-bias MLP is in the graph
