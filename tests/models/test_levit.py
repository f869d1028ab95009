"""LeViT (arXiv 2104.01136): parity with vit-pytorch's ``levit.LeViT`` on real photos, distillation head, export.

Small configurations keep each test to a few seconds on two CPU cores; the full-size presets are under
``@pytest.mark.slow``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers import exercise_batchnorm, photos
from oracle import oracle
from vitedge.models.levit import LeViT

SMALL = dict(image_size=64, num_classes=10, dim=(16, 24, 32), depth=(1, 2, 1), heads=(2, 3, 4), mlp_mult=2,
             dim_key=8, dim_value=16)

# Shapes of the official LeViT configs (facebookresearch/LeViT: C, D = key dim, N = heads, X = depths,
# value dim = 2 * D) mapped onto vit-pytorch's LeViT. vit-pytorch's stem (plain convs) and downsampling
# blocks (2x heads, value dim unchanged) differ from the paper, so parameter counts differ a little.
PRESETS = {
    "levit_128s": dict(image_size=224, num_classes=1000, dim=(128, 256, 384), depth=(2, 3, 4), heads=(4, 6, 8),
                       mlp_mult=2, dim_key=16, dim_value=32),
    "levit_128": dict(image_size=224, num_classes=1000, dim=(128, 256, 384), depth=(4, 4, 4), heads=(4, 8, 12),
                      mlp_mult=2, dim_key=16, dim_value=32),
    "levit_192": dict(image_size=224, num_classes=1000, dim=(192, 288, 384), depth=(4, 4, 4), heads=(3, 5, 6),
                      mlp_mult=2, dim_key=32, dim_value=64),
    "levit_256": dict(image_size=224, num_classes=1000, dim=(256, 384, 512), depth=(4, 4, 4), heads=(4, 6, 8),
                      mlp_mult=2, dim_key=32, dim_value=64),
    "levit_384": dict(image_size=224, num_classes=1000, dim=(384, 512, 768), depth=(4, 4, 4), heads=(6, 9, 12),
                      mlp_mult=2, dim_key=32, dim_value=64),
}


def build_pair(**kwargs) -> tuple[nn.Module, LeViT]:
    """Seeded reference with exercised BatchNorm, and ours loaded from its state_dict (strict)."""
    ref_mod = oracle("levit")
    torch.manual_seed(0)
    ref = ref_mod.LeViT(**kwargs)
    exercise_batchnorm(ref, photos(kwargs["image_size"]), embeddings=True)
    ours = LeViT(**kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    return ref, ours


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def check_parity(ref: nn.Module, ours: nn.Module, x: torch.Tensor, atol: float = 1e-5) -> float:
    with torch.no_grad():
        a, b = as_tuple(ref(x)), as_tuple(ours(x))
    assert len(a) == len(b)
    worst = 0.0
    for ta, tb in zip(a, b):
        assert ta.shape == tb.shape
        assert torch.isfinite(tb).all()
        assert ta.std() > 1e-3, "degenerate logits"
        worst = max(worst, (ta - tb).abs().max().item())
    scale = a[0].abs().max().item()
    print(f"max abs diff {worst:.3g} (logit scale {scale:.3g})")
    assert worst <= atol * max(1.0, scale), worst  # float32 rounding grows with the logits (BatchNorm folded here)
    return worst


def test_state_dict_keys_match():
    ref_mod = oracle("levit")
    for kw in (SMALL, dict(SMALL, num_distill_classes=7)):
        ref, ours = ref_mod.LeViT(**kw), LeViT(**kw)
        a, b = ref.state_dict(), ours.state_dict()
        assert sorted(a) == sorted(b)
        assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
        assert any(k.endswith("pos_indices") for k in b)


def test_parity_photos():
    ref, ours = build_pair(**SMALL)
    check_parity(ref, ours, photos(SMALL["image_size"]))


def test_parity_attention_is_active():
    """The attention path (incl. the position bias) really contributes to the compared logits."""
    ref, ours = build_pair(**SMALL)
    x = photos(SMALL["image_size"])
    with torch.no_grad():
        base = ours(x)
        for m in ours.modules():
            if hasattr(m, "pos_bias"):
                m.pos_bias.weight.zero_()
        assert (ours(x) - base).abs().max() > 1e-3


@pytest.mark.parametrize("kw", [
    dict(SMALL, num_distill_classes=7),
    dict(SMALL, image_size=96, dim=24, depth=1, heads=2, stages=2, dim_key=4, dim_value=8),   # odd fmap (6 -> 3)
    dict(SMALL, image_size=112, stages=3, mlp_mult=3, num_distill_classes=5),                # fmap 7 -> 4 -> 2
])
def test_parity_variants(kw):
    ref, ours = build_pair(**kw)
    x = photos(kw["image_size"])
    check_parity(ref, ours, x)
    if kw.get("num_distill_classes"):
        with torch.no_grad():
            out, distill = ours(x)
        assert out.shape == (4, kw["num_classes"]) and distill.shape == (4, kw["num_distill_classes"])


def test_train_mode_matches_vit_pytorch():
    """Our channel-last token path runs each BatchNorm as the module in train mode: the same outputs (batch
    statistics), the same running-statistic updates and the same gradients as the reference's NCHW convolutions."""
    ref, ours = build_pair(**SMALL)
    ref.train()
    ours.train()
    x = photos(SMALL["image_size"])
    a, b = as_tuple(ref(x)), as_tuple(ours(x))
    for ta, tb in zip(a, b):
        assert (ta - tb).abs().max().item() <= 1e-4
    sum(t.sum() for t in a).backward()
    sum(t.sum() for t in b).backward()
    theirs, mine = ref.state_dict(), ours.state_dict()
    for k in theirs:  # running means/vars moved alike
        assert torch.allclose(theirs[k].float(), mine[k].float(), atol=1e-5), k
    grads = {k: p.grad for k, p in ref.named_parameters() if p.grad is not None}
    total = torch.sqrt(sum(g.square().sum() for g in grads.values()))  # some are 0 up to rounding (k's bias)
    for k, p in ours.named_parameters():
        if k in grads:
            assert (grads[k] - p.grad).norm().item() <= 1e-4 * total.item(), k


def test_invalid_arguments():
    with pytest.raises(ValueError, match="stages"):
        LeViT(**dict(SMALL, dim=(16, 24, 32, 40)))
    with pytest.raises(ValueError, match="multiple of 16"):
        LeViT(**dict(SMALL, image_size=100))
    with pytest.raises(ValueError, match="multiple of 16"):
        LeViT(**dict(SMALL, image_size=(64, 64)))


def _small_model(**extra) -> LeViT:
    torch.manual_seed(0)
    model = LeViT(**dict(SMALL, **extra))
    exercise_batchnorm(model, photos(SMALL["image_size"]), embeddings=True)
    return model


@pytest.mark.parametrize("distill", [None, 7])
def test_torchscript_trace_dynamic_batch(distill):
    model = _small_model(num_distill_classes=distill)
    x = photos(SMALL["image_size"])
    x8 = torch.cat([x, x.flip(-1)])
    with torch.no_grad():
        traced = torch.jit.trace(model, x8[:2])
        for n in (1, 3, 8):
            for a, b in zip(as_tuple(traced(x8[:n])), as_tuple(model(x8[:n]))):
                assert a.shape[0] == n
                diff = (a - b).abs().max().item()
                assert diff <= 1e-4, (n, diff)


@pytest.mark.parametrize("distill", [None, 7])
def test_onnx_dynamo_dynamic_batch(tmp_path, distill):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _small_model(num_distill_classes=distill)
    x = photos(SMALL["image_size"])
    x8 = torch.cat([x, x.flip(-1)])
    path = tmp_path / "levit.onnx"
    torch.onnx.export(model, (x8[:2],), str(path), dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},), opset_version=18)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    assert len(sess.get_outputs()) == (2 if distill else 1)
    with torch.no_grad():
        for n in (1, 3, 8):
            outs = sess.run(None, {name: x8[:n].numpy()})
            for a, b in zip(outs, as_tuple(model(x8[:n]))):
                assert a.shape == tuple(b.shape)
                diff = np.abs(a - b.numpy()).max()
                assert diff <= 1e-4, (n, diff)


@pytest.mark.slow
def test_full_size_parity_128s():
    ref, ours = build_pair(**dict(PRESETS["levit_128s"], num_distill_classes=1000))
    check_parity(ref, ours, photos(224))
