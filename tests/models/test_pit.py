"""PiT (Heo et al. 2021, arXiv 2103.16302): parity with vit-pytorch's ``pit.PiT`` on real photos, and export.

Small configurations keep each test to a few seconds on two CPU cores; the full-size presets are under
``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import check_parity, export_and_check, oracle_pair
from oracle import oracle
from vitedge.models.pit import PiT, PiTPool

SMALL = dict(image_size=64, patch_size=8, num_classes=10, dim=16, depth=(1, 2, 1), heads=(2, 2, 4), mlp_dim=32,
             dim_head=8)


def build_pair(**kwargs) -> tuple[nn.Module, PiT]:
    """Seeded reference (eval) and ours loaded from its state_dict with strict=True."""
    return oracle_pair(oracle("pit").PiT, PiT, kwargs)


def test_state_dict_keys_match():
    ref_mod = oracle("pit")
    for kw in (SMALL, dict(SMALL, heads=2, depth=(1,))):
        a, b = ref_mod.PiT(**kw).state_dict(), PiT(**kw).state_dict()
        assert list(a) == list(b)
        assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)


@pytest.mark.parametrize("kw", [
    SMALL,
    dict(SMALL, heads=2, depth=(2, 1)),                                # int heads, two stages
    dict(SMALL, image_size=63, patch_size=7, dim_head=16, heads=(1, 2, 2)),   # odd patch: stride 3, grid 19 -> 10 -> 5
    dict(SMALL, image_size=48, patch_size=4, depth=(1,), heads=(1,), dim_head=16, mlp_dim=16),  # no pooling;
])                                                                     # heads=1, dim_head=dim: to_out is Identity
def test_parity_photos(kw, photo_batch):
    ref, ours = build_pair(**kw)
    check_parity(ref, ours, photo_batch((kw["image_size"],) * 2))


def _reference_forward_any_grid(ref: nn.Module, img: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """vit-pytorch's PiT forward, with its pooling's square-grid ``sqrt`` replaced by the true (h, w) grid."""
    einops = pytest.importorskip("einops")
    x = ref.to_patch_embedding(img)
    x = torch.cat((ref.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + ref.pos_embedding
    h, w = grid
    for layer in ref.layers:
        if type(layer).__name__ == "Pool":
            cls, tokens = layer.cls_ff(x[:, :1]), x[:, 1:]
            tokens = layer.downsample(einops.rearrange(tokens, "b (h w) c -> b c h w", h=h, w=w))
            h, w = tokens.shape[-2:]
            x = torch.cat((cls, einops.rearrange(tokens, "b c h w -> b (h w) c")), dim=1)
        else:
            x = layer(x)
    return ref.mlp_head(x[:, 0])


@pytest.mark.parametrize("image_size", [(64, 96), (96, 48)])
def test_non_square(image_size, photo_batch):
    """Extension: (H, W) image sizes. The oracle is vit-pytorch's own modules with the grid made explicit."""
    torch.manual_seed(0)
    ours = PiT(**dict(SMALL, image_size=image_size)).eval()
    ref = oracle("pit").PiT(**dict(SMALL, image_size=image_size[0])).eval()
    ref.pos_embedding = nn.Parameter(torch.zeros_like(ours.pos_embedding))
    ref.load_state_dict(ours.state_dict(), strict=True)
    oh, ow = (image_size[0] - 8) // 4 + 1, (image_size[1] - 8) // 4 + 1
    assert ours.pos_embedding.shape == (1, oh * ow + 1, SMALL["dim"])
    x = photo_batch(image_size)
    with torch.no_grad():
        a, b = _reference_forward_any_grid(ref, x, (oh, ow)), ours(x)
    diff = (a - b).abs().max().item()
    print(f"max abs diff {diff:.3g}")
    assert b.shape == (len(x), SMALL["num_classes"]) and a.std() > 1e-3
    assert diff <= 1e-5, diff


def test_square_tuple_equals_int(photo_batch):
    torch.manual_seed(0)
    a = PiT(**SMALL).eval()
    b = PiT(**dict(SMALL, image_size=(64, 64))).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    x = photo_batch((64, 64), 2)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_pool_grid():
    pool = PiTPool(8, (7, 5))
    assert pool.out_grid == (4, 3)
    assert pool(torch.randn(2, 1 + 35, 8)).shape == (2, 1 + 12, 16)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="divisible"):
        PiT(**dict(SMALL, image_size=60))
    with pytest.raises(ValueError, match="divisible"):
        PiT(**dict(SMALL, image_size=(64, 60)))
    with pytest.raises(ValueError, match="depth must be a tuple"):
        PiT(**dict(SMALL, depth=3))
    with pytest.raises(ValueError, match="heads"):
        PiT(**dict(SMALL, heads=(2, 2)))
    with pytest.raises(ValueError, match="patch_size"):
        PiT(**dict(SMALL, patch_size=1))


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_export(target, tmp_path):
    size = (64, 96)
    torch.manual_seed(0)
    model = PiT(**dict(SMALL, image_size=size)).eval()
    export_and_check(model, size, target, tmp_path, num_classes=SMALL["num_classes"])
