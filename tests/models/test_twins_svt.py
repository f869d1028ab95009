"""Twins-SVT (Chu et al. 2021, arXiv 2104.13840): parity with vit-pytorch's ``twins_svt.TwinsSVT`` on real
photos, the rank <= 5 window partitioning, and export.

vit-pytorch fixes 8 heads of 64 in every block, so even tiny configurations have 512-wide attention; small
inputs (32 x 32, 32 x 48) keep each test to a few seconds on two CPU cores. The full-size preset is under
``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import check_parity, export_and_check, oracle_pair
from oracle import oracle
from vitedge.models.twins_svt import TwinsSVT, space_to_depth, window_merge, window_partition

# 32x48 input -> 16x24 (windows 4, keys 4x6) -> 8x12 (windows 2) -> 4x6 (windows 2) -> 2x3 (global only)
SMALL = dict(num_classes=10, s1_emb_dim=8, s1_patch_size=2, s1_local_patch_size=4, s1_global_k=4, s1_depth=1,
             s2_emb_dim=16, s2_patch_size=2, s2_local_patch_size=2, s2_global_k=2, s2_depth=0,
             s3_emb_dim=24, s3_patch_size=2, s3_local_patch_size=2, s3_global_k=2, s3_depth=1,
             s4_emb_dim=32, s4_patch_size=2, s4_local_patch_size=7, s4_global_k=1, s4_depth=1)


def build_pair(**kwargs) -> tuple[nn.Module, TwinsSVT]:
    """Seeded reference (eval) and ours loaded from its state_dict with strict=True."""
    return oracle_pair(oracle("twins_svt").TwinsSVT, TwinsSVT, kwargs)


def test_state_dict_keys_match():
    ref_mod = oracle("twins_svt")
    a, b = ref_mod.TwinsSVT(**SMALL).state_dict(), TwinsSVT(**SMALL).state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)


@pytest.mark.parametrize("kw,size", [
    (SMALL, (32, 32)),
    (dict(SMALL, s1_patch_size=4, s1_local_patch_size=2, s2_depth=2, s3_global_k=1, peg_kernel_size=5), (64, 64)),
])
def test_parity_photos(kw, size, photo_batch):
    ref, ours = build_pair(**kw)
    check_parity(ref, ours, photo_batch(size))


@pytest.mark.parametrize("size", [(32, 48), (48, 32)])
def test_parity_non_square(size, photo_batch):
    ref, ours = build_pair(**SMALL)
    check_parity(ref, ours, photo_batch(size))


@pytest.mark.parametrize("p", [1, 2, 3])
def test_space_to_depth_matches_einops(p):
    einops = pytest.importorskip("einops")
    x = torch.randn(2, 5, 4 * p, 3 * p)
    assert torch.equal(space_to_depth(x, p), einops.rearrange(x, "b c (h p1) (w p2) -> b (c p1 p2) h w", p1=p, p2=p))


@pytest.mark.parametrize("p,groups", [(2, 3), (3, 6), (1, 2)])
def test_window_partition_matches_einops(p, groups):
    einops = pytest.importorskip("einops")
    nh, nw, d = 3, 4, 5
    x = torch.randn(2, groups * d, nh * p, nw * p)
    ref = einops.rearrange(x, "b (g d) (x p1) (y p2) -> (b x y) g (p1 p2) d", g=groups, p1=p, p2=p)
    y = window_partition(x, p, groups)
    assert torch.equal(y, ref)
    assert torch.equal(window_merge(y, p, nh, nw), x)


def test_window_partition_traces_with_symbolic_batch():
    """Traced at batch 2, the partition/merge round trip is exact at other batch sizes."""
    def round_trip(t):
        return window_merge(window_partition(t, 2, 4), 2, 3, 5)

    fn = torch.jit.trace(round_trip, torch.randn(2, 8, 6, 10))
    for b in (1, 3):
        x = torch.randn(b, 8, 6, 10)
        assert torch.equal(fn(x), x)


def test_invalid_input_size(photo_batch):
    model = TwinsSVT(**SMALL).eval()
    with torch.no_grad(), pytest.raises(ValueError, match=r"patch_size 2\)"):
        model(torch.zeros(1, 3, 33, 32))            # 33 is not divisible by stage 1's patch size 2
    with torch.no_grad(), pytest.raises(ValueError, match=r"local_patch_size 4\)"):
        model(torch.zeros(1, 3, 36, 32))            # 18x16 maps are not divisible by the 4x4 windows
    with pytest.raises(ValueError, match="peg_kernel_size"):
        TwinsSVT(**dict(SMALL, peg_kernel_size=4))


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_export(target, tmp_path):
    size = (32, 48)
    torch.manual_seed(0)
    model = TwinsSVT(**SMALL).eval()
    export_and_check(model, size, target, tmp_path, num_classes=SMALL["num_classes"])
