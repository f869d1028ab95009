"""CrossViT (arXiv 2103.14899): parity with vit-pytorch's ``cross_vit.CrossViT`` on real photos, and export.

Small configurations keep each test to a few seconds on two CPU cores; the paper presets are under
``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch

from helpers import check_logits, export_and_check, perturb_biases_and_norms_
from oracle import oracle
from vitedge.models.cross_vit import CrossViT

SMALL = dict(num_classes=10, sm_dim=32, lg_dim=48, sm_patch_size=8, sm_enc_depth=1, sm_enc_heads=2,
             sm_enc_mlp_dim=64, sm_enc_dim_head=16, lg_patch_size=16, lg_enc_depth=2, lg_enc_heads=3,
             lg_enc_mlp_dim=96, lg_enc_dim_head=16, cross_attn_depth=2, cross_attn_heads=2, cross_attn_dim_head=16,
             depth=2)

CONFIGS = {
    "small": dict(SMALL, image_size=48),
    "equal_dims_no_projection": dict(SMALL, image_size=32, lg_dim=32),
    "defaults": dict(image_size=48, num_classes=5, sm_dim=32, lg_dim=64, sm_enc_mlp_dim=64, lg_enc_mlp_dim=64,
                     sm_enc_heads=2, lg_enc_heads=2, cross_attn_heads=2, depth=1),
}


def _hw(size):
    return size if isinstance(size, tuple) else (size, size)


def build_pair(**kw):
    """Seeded reference (eval, randomised norms) and ours loaded from its state_dict with strict=True."""
    torch.manual_seed(0)
    ref = oracle("cross_vit").CrossViT(**kw).eval()
    perturb_biases_and_norms_(ref, also=("mlp_head.0",))
    ours = CrossViT(**kw).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def test_state_dict_keys_match():
    for kw in CONFIGS.values():
        torch.manual_seed(0)
        a, b = oracle("cross_vit").CrossViT(**kw).state_dict(), CrossViT(**kw).state_dict()
        assert list(a) == list(b)
        assert all(a[k].shape == b[k].shape for k in a)


@pytest.mark.parametrize("name", CONFIGS)
def test_parity_photos(name, photo_batch):
    kw = CONFIGS[name]
    ref, ours = build_pair(**kw)
    x = photo_batch(_hw(kw["image_size"]))
    with torch.no_grad():
        check_logits(ref(x), ours(x))


@pytest.mark.parametrize("image_size", [(32, 64), (64, 48)])
def test_non_square(image_size, photo_batch):
    """Non-square input (our extension). Oracle: the reference built for a square 64x64 image, run on the
    non-square photos (its einops patching infers the grid; it slices the first 1+N position embeddings)."""
    ref, _ = build_pair(**dict(SMALL, image_size=64))
    ours = CrossViT(**dict(SMALL, image_size=image_size)).eval()
    sd = ref.state_dict()
    for branch in ("sm", "lg"):
        key = f"{branch}_image_embedder.pos_embedding"
        sd[key] = sd[key][:, :getattr(ours, f"{branch}_image_embedder").pos_embedding.shape[1]]
    ours.load_state_dict(sd, strict=True)
    x = photo_batch(image_size)
    with torch.no_grad():
        check_logits(ref(x), ours(x))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="divisible"):
        CrossViT(**dict(SMALL, image_size=40))                 # 40 % 16 != 0
    with pytest.raises(ValueError, match="divisible"):
        CrossViT(**dict(SMALL, image_size=(48, 36)))           # 36 % 16 != 0


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
@pytest.mark.parametrize("image_size", [(48, 48), (32, 64)])
def test_export(target, image_size, tmp_path):
    torch.manual_seed(0)
    model = CrossViT(**dict(SMALL, image_size=image_size, depth=1, lg_enc_depth=1, cross_attn_depth=1)).eval()
    perturb_biases_and_norms_(model, also=("mlp_head.0",))
    export_and_check(model, image_size, target, tmp_path, num_classes=SMALL["num_classes"])
