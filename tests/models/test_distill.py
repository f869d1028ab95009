"""DistillableViT (DeiT, arXiv 2012.12877): parity with vit-pytorch's ``distill.DistillableViT`` on real photos
(with and without a distillation token), ``to_vit()``, and export of the plain (logits-only) forward.

Small configurations keep each test to a few seconds on two CPU cores; the full-size presets are under
``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch

from helpers import export_and_check, oracle_pair
from oracle import oracle
from vitedge.models.distill import DistillableViT
from vitedge.models.vit import ViT

SMALL = dict(image_size=32, patch_size=8, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64, dim_head=8)

CONFIGS = {
    "small": SMALL,
    "mean_pool": dict(SMALL, pool="mean"),
    "non_square": dict(SMALL, image_size=(32, 48), patch_size=(8, 16)),
}


def _hw(kw) -> tuple[int, int]:
    s = kw["image_size"]
    return s if isinstance(s, tuple) else (s, s)


def build_pair(**kw):
    """Seeded reference and ours loaded from its state_dict (strict), both in eval mode."""
    return oracle_pair(oracle("distill").DistillableViT, DistillableViT, kw)


def _max_diff(a, b) -> float:
    assert a.shape == b.shape and torch.isfinite(b).all()
    return (a - b).abs().max().item()


def test_state_dict_keys_match():
    ref, ours = oracle("distill").DistillableViT(**SMALL), DistillableViT(**SMALL)
    a, b = ref.state_dict(), ours.state_dict()
    assert set(a) == set(b)
    assert all(a[k].shape == b[k].shape for k in a)
    assert ours.dim == 32 and ours.num_classes == 10 and isinstance(ours, ViT)


@pytest.mark.parametrize("name", CONFIGS)
def test_parity_photos(name, photo_batch):
    kw = CONFIGS[name]
    ref, ours = build_pair(**kw)
    x = photo_batch(_hw(kw))
    torch.manual_seed(1)
    token = torch.randn(1, kw["dim"])
    with torch.no_grad():
        a, b = ref(x), ours(x)
        (a_logits, a_tok), (b_logits, b_tok) = ref(x, distill_token=token), ours(x, distill_token=token)
    assert a.std() > 1e-3, "degenerate logits"
    diffs = [_max_diff(a, b), _max_diff(a_logits, b_logits), _max_diff(a_tok, b_tok)]
    print(f"{name}: max abs diffs (logits, distilling logits, distill tokens) {diffs}")
    assert max(diffs) <= 1e-5, diffs
    assert b_tok.shape == (x.shape[0], kw["dim"])
    assert (a_logits - a).abs().max() > 1e-4       # the token really takes part in the attention


@pytest.mark.parametrize("name", ["small", "mean_pool"])
def test_to_vit(name, photo_batch):
    kw = CONFIGS[name]
    ref, ours = build_pair(**kw)
    v = ours.to_vit().eval()
    assert type(v) is ViT
    v_ref = ref.to_vit().eval()
    x = photo_batch(_hw(kw))
    with torch.no_grad():
        logits = ours(x)
        assert torch.equal(v(x), logits)                 # same weights, same ops
        assert _max_diff(v_ref(x), v(x)) <= 1e-5
    assert all(torch.equal(p, q) for p, q in zip(v.state_dict().values(), ours.state_dict().values()))


def test_features_only(photo_batch):
    """num_classes=0 (the reference crashes there): final tokens, as ViT, with and without a distill token."""
    ours = DistillableViT(**dict(SMALL, num_classes=0)).eval()
    x = photo_batch((32, 32), 2)
    with torch.no_grad():
        tokens = ours(x)
        assert torch.equal(tokens, ours.to_vit().eval()(x))
        t2, dt = ours(x, distill_token=torch.zeros(1, 32))
    assert tokens.shape == t2.shape == (2, 17, 32) and dt.shape == (2, 32)


def test_invalid_arguments(photo_batch):
    with pytest.raises(ValueError, match="divisible"):
        DistillableViT(**dict(SMALL, image_size=30))
    with pytest.raises(ValueError, match="pool"):
        DistillableViT(**dict(SMALL, pool="max"))
    model = DistillableViT(**SMALL).eval()
    with pytest.raises(ValueError, match="distill_token"):
        model(photo_batch((32, 32), 1), distill_token=torch.zeros(1, 16))


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_export_plain_forward(target, tmp_path):
    kw = CONFIGS["non_square"]
    torch.manual_seed(0)
    model = DistillableViT(**kw).eval()
    export_and_check(model, kw["image_size"], target, tmp_path, num_classes=10)
