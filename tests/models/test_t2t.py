"""T2T-ViT (arXiv 2101.11986): parity with vit-pytorch's ``t2t.T2TViT`` on real photos, and export.

Small configurations keep each test to a few seconds on two CPU cores; the paper preset is under
``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch

from helpers import check_logits, export_and_check, oracle_pair
from oracle import oracle
from vitedge.models.layers import Transformer
from vitedge.models.t2t import SoftSplit, T2TViT

SMALL = dict(num_classes=10, dim=32, depth=2, heads=2, mlp_dim=64, dim_head=16, t2t_layers=((3, 2), (3, 2)))

CONFIGS = {
    "small": dict(SMALL, image_size=32),
    # the reference's default soft split (7/4, 3/2, 3/2): token widths 147 -> 1323 -> 11907
    "default_t2t_layers": dict(image_size=32, num_classes=5, dim=32, depth=1, heads=2, mlp_dim=32, dim_head=16),
    "mean_pool": dict(SMALL, image_size=24, pool="mean"),
    "single_stage": dict(SMALL, image_size=16, t2t_layers=((4, 4),)),
    "odd_sizes": dict(SMALL, image_size=29, t2t_layers=((5, 3), (3, 1), (2, 2))),
}


def _hw(image_size):
    return image_size if isinstance(image_size, tuple) else (image_size, image_size)


def build_pair(**kw):
    """Seeded reference (eval) and ours loaded from its state_dict with strict=True."""
    return oracle_pair(oracle("t2t").T2TViT, T2TViT, kw)


def test_state_dict_keys_match():
    kw = CONFIGS["small"]
    torch.manual_seed(0)
    ref, ours = oracle("t2t").T2TViT(**kw), T2TViT(**kw)
    a, b = ref.state_dict(), ours.state_dict()
    assert set(a) == set(b)
    assert all(a[k].shape == b[k].shape for k in a)


@pytest.mark.parametrize("name", CONFIGS)
def test_parity_photos(name, photo_batch):
    kw = CONFIGS[name]
    ref, ours = build_pair(**kw)
    x = photo_batch(_hw(kw["image_size"]))
    with torch.no_grad():
        check_logits(ref(x), ours(x))


@pytest.mark.parametrize("k,s,hw,c", [(7, 4, (32, 32), 3), (3, 2, (8, 12), 5), (3, 1, (7, 5), 2), (5, 3, (29, 31), 1),
                                     (2, 2, (6, 6), 4), (4, 4, (16, 8), 3)])
def test_soft_split_equals_unfold(k, s, hw, c):
    x = torch.randn(2, c, *hw)
    split = SoftSplit(k, s, s // 2, hw, c)
    ref = torch.nn.Unfold(kernel_size=k, stride=s, padding=s // 2)(x)
    assert torch.equal(split(x), ref)
    assert ref.shape[-1] == split.out_size[0] * split.out_size[1]


def test_custom_transformer(photo_batch):
    """``transformer=`` replaces the backbone (vit-pytorch's own Transformer for the reference, ours for us)."""
    kw = dict(image_size=32, num_classes=4, dim=32, t2t_layers=((3, 2), (3, 2)))
    torch.manual_seed(0)
    ref = oracle("t2t").T2TViT(transformer=oracle("vit").Transformer(32, 2, 4, 8, 48), **kw).eval()
    ours = T2TViT(transformer=Transformer(32, 2, 4, 8, 48), **kw).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = photo_batch((32, 32))
    with torch.no_grad():
        check_logits(ref(x), ours(x))


def test_square_tuple_is_the_int_model():
    torch.manual_seed(0)
    a = T2TViT(**CONFIGS["small"])
    b = T2TViT(**dict(CONFIGS["small"], image_size=(32, 32)))
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


@pytest.mark.parametrize("image_size", [(32, 48), (40, 24)])
def test_non_square_matches_reference_blocks(image_size, photo_batch):
    """Non-square input (our extension; the reference infers a square grid from sqrt(N)).

    Oracle: the reference's own modules (nn.Unfold, its T2T transformers, Linear, backbone, head) run with
    an einops re-structurisation told the true grid height, and our position embedding.
    """
    einops = pytest.importorskip("einops")
    ref, _ = build_pair(**CONFIGS["small"])                     # weights do not depend on the image size
    ours = T2TViT(**dict(CONFIGS["small"], image_size=image_size)).eval()
    sd = {k: v for k, v in ref.state_dict().items() if k != "pos_embedding"}
    ours.load_state_dict(sd, strict=False)
    x = photo_batch(image_size)
    with torch.no_grad():
        t = x
        h = image_size[0]
        for module in ref.to_patch_embedding:
            if type(module).__name__ == "RearrangeImage":
                t = einops.rearrange(t, "b (h w) c -> b c h w", h=h)
            else:
                t = module(t)
            if isinstance(module, torch.nn.Unfold):
                k, s, p = module.kernel_size, module.stride, module.padding
                h = (h + 2 * p - k) // s + 1
        assert t.shape[1] == ours.grid_size[0] * ours.grid_size[1]
        t = torch.cat((ref.cls_token.expand(t.shape[0], -1, -1), t), dim=1) + ours.pos_embedding
        a = ref.mlp_head(ref.transformer(t)[:, 0])
        b = ours(x)
    check_logits(a, b)
    assert b.shape == (x.shape[0], SMALL["num_classes"])


def test_invalid_arguments():
    with pytest.raises(ValueError, match="pool"):
        T2TViT(**dict(CONFIGS["small"], pool="max"))
    with pytest.raises(ValueError, match="depth, heads, and mlp_dim"):
        T2TViT(image_size=32, num_classes=2, dim=16, heads=2)
    with pytest.raises(ValueError, match="too small"):
        T2TViT(**dict(CONFIGS["small"], image_size=2, t2t_layers=((7, 4), (3, 2))))
    with pytest.raises(ValueError, match="t2t_layers"):
        T2TViT(**dict(CONFIGS["small"], t2t_layers=()))


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
@pytest.mark.parametrize("image_size", [(32, 32), (32, 48)])
def test_export(target, image_size, tmp_path):
    torch.manual_seed(0)
    model = T2TViT(**dict(CONFIGS["small"], image_size=image_size)).eval()
    export_and_check(model, image_size, target, tmp_path, num_classes=SMALL["num_classes"])
