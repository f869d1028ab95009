"""CaiT (arXiv 2103.17239): parity with vit-pytorch's ``cait.CaiT`` on real photos, and export.

Small configurations keep each test to a few seconds on two CPU cores; the full-size presets are under
``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch

import vitedge.data
import vitedge.export
from oracle import oracle
from vitedge.models.cait import CaiT, layer_scale_init

SMALL = dict(image_size=32, patch_size=8, num_classes=10, dim=32, depth=2, cls_depth=1, heads=4, mlp_dim=64,
             dim_head=8)

# Touvron et al. 2021, Table 1 / model zoo: dim_head 48, MLP ratio 4, 2 class-attention layers.
PRESETS = {
    "cait_xxs24": dict(image_size=224, patch_size=16, num_classes=1000, dim=192, depth=24, cls_depth=2, heads=4,
                       mlp_dim=768, dim_head=48),
    "cait_xxs36": dict(image_size=224, patch_size=16, num_classes=1000, dim=192, depth=36, cls_depth=2, heads=4,
                       mlp_dim=768, dim_head=48),
    "cait_s24": dict(image_size=224, patch_size=16, num_classes=1000, dim=384, depth=24, cls_depth=2, heads=8,
                     mlp_dim=1536, dim_head=48),
}


def build_pair(ref_kw, ours_kw=None):
    """Seeded reference and ours (same kwargs unless given) loaded from its state_dict (strict), in eval mode."""
    torch.manual_seed(0)
    ref = oracle("cait").CaiT(**ref_kw).eval()
    ours = CaiT(**(ours_kw or ref_kw)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def check_parity(ref, ours, x, atol=1e-5) -> float:
    with torch.no_grad():
        a, b = ref(x), ours(x)
    assert a.shape == b.shape and torch.isfinite(b).all()
    assert a.std() > 1e-3, "degenerate logits"
    diff = (a - b).abs().max().item()
    print(f"max abs diff {diff:.3g} (logit scale {a.abs().max().item():.3g})")
    assert diff <= atol, diff
    return diff


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
    h, w = kw["image_size"]
    art = vitedge.export.export(model, torch.zeros(2, 3, h, w), target, tmp_path / target,
                                preprocessing=vitedge.data.make_preprocessing((h, w)))
    m = art.manifest
    assert m["inputs"][0]["shape"] == [-1, 3, h, w] and m["outputs"][0]["shape"] == [-1, 10]
    for b in ("batch_1", "batch_3", "batch_8"):
        assert m["parity"][b]["max_abs"] <= 1e-4 and m["parity"][b]["top1_agreement"] == 1.0
    if target == "onnx":
        assert "dynamo=True" in m["export"]["method"] and "fallback_reason" not in m["export"]
        onnx = pytest.importorskip("onnx")
        graph = onnx.shape_inference.infer_shapes(onnx.load(str(art.file))).graph
        ranks = [len(v.type.tensor_type.shape.dim) for v in graph.value_info if v.type.tensor_type.HasField("shape")]
        assert ranks and max(ranks) <= 5, max(ranks)


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_full_size_preset_parity(name, photo_batch):
    ref, ours = build_pair(PRESETS[name])
    print(f"{name}: {sum(p.numel() for p in ours.parameters())} params")
    check_parity(ref, ours, photo_batch((224, 224), 2))
