"""CvT (Wu et al. 2021, arXiv 2103.15808): parity with vit-pytorch's ``cvt.CvT`` on real photos, and export.

The q/k/v projections carry BatchNorm, so every parity test first gives the BatchNorms non-trivial affine
parameters and running statistics. Small configurations keep each test to a few seconds on two CPU cores;
the full-size preset is under ``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import vitedge.data
import vitedge.export
from oracle import oracle
from vitedge.models.cvt import ChannelLayerNorm, CvT

SMALL = dict(num_classes=10, s1_emb_dim=16, s1_heads=1, s1_depth=1, s2_emb_dim=24, s2_heads=2, s2_depth=1,
             s3_emb_dim=32, s3_heads=2, s3_depth=2)

# CvT-13 (paper Table 2): 7x7/4, 3x3/2, 3x3/2 token embeddings, widths (64, 192, 384), heads (1, 3, 6) of 64,
# depths (1, 2, 10), MLP ratio 4, 3x3 depthwise q/k/v projections with stride-2 k/v: vit-pytorch's defaults.
# vit-pytorch has no class token (global average pooling instead) and k, v share one depthwise conv + BN.
PRESETS = {"cvt_13": dict(num_classes=1000)}
PAPER_PARAMS_M = {"cvt_13": 20.0}


def exercise_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics, then switch to eval.

    The affine parameters are drawn at random; the running statistics are the exact (cumulative) batch
    statistics of train-mode passes over ``x`` and its mirror images.
    """
    g = torch.Generator().manual_seed(1234)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns, "model has no BatchNorm"
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=g) * 0.1)
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        for batch in (x, x.flip(-1), x.flip(-2)):
            model(batch)
        for bn in bns:
            bn.momentum = 0.1
            assert bn.running_var.min() > 0 and bn.running_mean.abs().max() > 0
            assert (bn.running_var - 1).abs().max() > 1e-2        # really not the default statistics
    model.eval()


def build_pair(x: torch.Tensor, **kwargs) -> tuple[nn.Module, CvT]:
    """Seeded reference with exercised BatchNorm (on ``x``), and ours loaded from its state_dict (strict)."""
    ref_mod = oracle("cvt")
    torch.manual_seed(0)
    ref = ref_mod.CvT(**kwargs)
    exercise_batchnorm(ref, x)
    ours = CvT(**kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours.eval()


def check_parity(ref: nn.Module, ours: nn.Module, x: torch.Tensor, atol: float = 1e-5) -> float:
    with torch.no_grad():
        a, b = ref(x), ours(x)
    assert a.shape == b.shape
    assert torch.isfinite(b).all()
    assert a.std() > 1e-3, "degenerate logits"
    diff = (a - b).abs().max().item()
    print(f"max abs diff {diff:.3g} (logit scale {a.abs().max().item():.3g})")
    assert diff <= atol, diff
    return diff


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
    onnx = pytest.importorskip("onnx") if target == "onnx" else None
    size = (64, 96)
    torch.manual_seed(0)
    model = CvT(**SMALL)
    exercise_batchnorm(model, photo_batch(size))
    art = vitedge.export.export(model, torch.zeros(2, 3, *size), target, tmp_path / target,
                                preprocessing=vitedge.data.make_preprocessing(size))
    m = art.manifest
    for b in (1, 3, 8):
        assert m["parity"][f"batch_{b}"]["max_abs"] <= 1e-4
        assert m["parity"][f"batch_{b}"]["samples"] == b
    assert m["inputs"][0]["shape"] == [-1, 3, *size]
    assert m["outputs"][0]["shape"] == [-1, SMALL["num_classes"]]
    if target == "onnx":
        assert "dynamo" in m["export"]["method"] and "legacy" not in m["export"]["method"]
        graph = onnx.shape_inference.infer_shapes(onnx.load(str(art.file))).graph
        ranks = [len(v.type.tensor_type.shape.dim) for v in graph.value_info if v.type.tensor_type.HasField("shape")]
        assert ranks and max(ranks) <= 5, max(ranks)          # Core ML's rank limit


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PRESETS))
def test_full_size_preset_parity(name, photo_batch):
    x = photo_batch((224, 224))
    ref, ours = build_pair(x, **PRESETS[name])
    n = sum(p.numel() for p in ours.parameters())
    print(f"{name}: {n / 1e6:.2f} M params (paper {PAPER_PARAMS_M[name]} M)")
    check_parity(ref, ours, x)
