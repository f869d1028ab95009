"""CCT (arXiv 2104.05704): parity with vit-pytorch's ``cct.CCT`` and ``cct_*`` constructors on real photos,
and export.

Small configurations keep each test to a few seconds on two CPU cores; the paper presets are under
``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch

from helpers import check_logits, export_and_check, perturb_biases_and_norms_
from oracle import oracle
from vitedge.models import cct as ours_mod
from vitedge.models.cct import CCT, sinusoidal_embedding

SMALL = dict(embedding_dim=32, num_layers=2, num_heads=4, mlp_ratio=2, num_classes=7, kernel_size=3, stride=1,
             padding=1)

# (constructor function name, kwargs) pairs, run through both the reference's and our function.
CONFIGS = {
    "cct_2_sine": ("cct_2", dict(img_size=32, num_classes=10, n_conv_layers=1, positional_embedding="sine")),
    "cct_2_learnable": ("cct_2", dict(img_size=32, num_classes=10, n_conv_layers=2, positional_embedding="learnable")),
    "cct_2_none": ("cct_2", dict(img_size=32, num_classes=10, positional_embedding="none")),
    "cct_4_7x2": ("cct_4", dict(img_size=64, num_classes=10, kernel_size=7, n_conv_layers=2,
                                positional_embedding="learnable")),
    "CCT_non_square": ("CCT", dict(SMALL, img_size=(32, 48), n_conv_layers=2, positional_embedding="learnable")),
    "CCT_non_square_sine": ("CCT", dict(SMALL, img_size=(40, 24), positional_embedding="sine",
                                        pooling_kernel_size=2, pooling_stride=2, pooling_padding=0)),
    "CCT_defaults": ("CCT", dict(img_size=32, embedding_dim=48, num_layers=1, num_heads=3, num_classes=5)),
}


def _hw(size):
    return size if isinstance(size, tuple) else (size, size)


def build_pair(fn: str, kw: dict):
    """Seeded reference (eval) and ours (same constructor function) loaded from its state_dict, strict."""
    torch.manual_seed(0)
    ref = getattr(oracle("cct"), fn)(**kw).eval()
    ours = getattr(ours_mod, fn)(**kw).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.mark.parametrize("name", CONFIGS)
def test_parity_photos(name, photo_batch):
    fn, kw = CONFIGS[name]
    ref, ours = build_pair(fn, kw)
    assert list(ref.state_dict()) == list(ours.state_dict())
    perturb_biases_and_norms_(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = photo_batch(_hw(kw["img_size"]))
    with torch.no_grad():
        check_logits(ref(x), ours(x))


@pytest.mark.parametrize("fn", ["cct_2", "cct_4", "cct_6", "cct_7", "cct_8",
                                pytest.param("cct_14", marks=pytest.mark.slow),   # ~4 s each just to initialise
                                pytest.param("cct_16", marks=pytest.mark.slow)])
def test_constructor_functions(fn, photo_batch):
    """Every ``cct_*`` function builds the same architecture as the reference's (keys, shapes, logits)."""
    kw = dict(img_size=16, num_classes=3)
    ref, ours = build_pair(fn, kw)
    a, b = ref.state_dict(), ours.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    assert ours.classifier.positional_emb.requires_grad is False          # 'sine' default: fixed
    x = photo_batch((16, 16), 2)
    with torch.no_grad():
        check_logits(ref(x), ours(x))


@pytest.mark.parametrize("n,dim", [(1, 8), (16, 32), (49, 30), (256, 128)])
def test_sinusoidal_embedding_is_exact(n, dim):
    assert torch.equal(sinusoidal_embedding(n, dim), oracle("cct").sinusoidal_embedding(n, dim))


@pytest.mark.parametrize("kw", [
    dict(img_size=(37, 50), kernel_size=7, stride=2, padding=3, n_conv_layers=2),
    dict(img_size=(33, 31), kernel_size=3, stride=1, padding=1, n_conv_layers=3),
    dict(img_size=30, kernel_size=5, stride=3, padding=0, pooling_kernel_size=2, pooling_stride=1,
         pooling_padding=1, n_conv_layers=1),
])
def test_sequence_length_matches_dummy_forward(kw):
    ref_tok = oracle("cct").Tokenizer(kw["kernel_size"], kw["stride"], kw["padding"], kw.get("pooling_kernel_size", 3),
                                     kw.get("pooling_stride", 2), kw.get("pooling_padding", 1),
                                     n_conv_layers=kw["n_conv_layers"], n_output_channels=8)
    h, w = _hw(kw["img_size"])
    model = CCT(embedding_dim=8, num_layers=1, num_heads=2, **kw)
    assert model.classifier.sequence_length == ref_tok.sequence_length(3, h, w)
    assert model.classifier.positional_emb.shape == (1, ref_tok.sequence_length(3, h, w), 8)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="positional_embedding"):
        CCT(**dict(SMALL, img_size=32, positional_embedding="rope"))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        CCT(**dict(SMALL, img_size=32, num_heads=5))
    with pytest.raises(ValueError, match="too small"):
        CCT(**dict(SMALL, img_size=2, kernel_size=7, stride=2, padding=0))
    with pytest.raises(ValueError, match="pooling_padding"):
        CCT(**dict(SMALL, img_size=32, pooling_kernel_size=2, pooling_padding=2))
    with pytest.raises(TypeError):                      # the reference silently ignores unknown options
        ours_mod.cct_2(img_size=32, image_size=32)


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
@pytest.mark.parametrize("img_size,pos", [((32, 32), "sine"), ((32, 48), "learnable")])
def test_export(target, img_size, pos, tmp_path):
    torch.manual_seed(0)
    model = CCT(**dict(SMALL, img_size=img_size, n_conv_layers=2, positional_embedding=pos)).eval()
    perturb_biases_and_norms_(model)
    export_and_check(model, img_size, target, tmp_path, num_classes=SMALL["num_classes"])
