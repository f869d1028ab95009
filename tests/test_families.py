"""One parametrised test over every model family: vit-pytorch's state_dict loads strictly, fp32 logits match
vit-pytorch on real photos (max abs diff <= 1e-5), and the model exports to TorchScript and ONNX with a dynamic
batch that matches eager at batches 1, 3 and 8 (max abs diff <= 1e-4, checked inside ``export``).
Small configs here; the papers' presets at full size under ``-m slow``.

Each run writes what it measured to build/test-reports/family_matrix/ (the README's family x target table is
made from it by benchmarks/family_matrix.py).
"""
import json
import os
from pathlib import Path

import pytest
import torch

from oracle import oracle
from vitedge.data import make_preprocessing
from vitedge.export import export
from vitedge.models.zoo import FAMILIES, PRESETS, family_class, size_arg

REPORTS = Path(__file__).resolve().parents[1] / "build/test-reports/family_matrix"

VIT = dict(image_size=32, patch_size=8, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64, dim_head=8)
# family -> (vit-pytorch module, class, small kwargs, input (H, W))
SMALL = {
    "vit": ("vit", "ViT", dict(VIT, image_size=(32, 48), patch_size=(8, 16)), (32, 48)),
    "simple_vit": ("simple_vit", "SimpleViT", VIT, (32, 32)),
    "distillable_vit": ("distill", "DistillableViT", VIT, (32, 32)),
    "deepvit": ("deepvit", "DeepViT", VIT, (32, 32)),
    "cait": ("cait", "CaiT", dict(VIT, cls_depth=1), (32, 32)),
    "pit": ("pit", "PiT", dict(image_size=64, patch_size=8, num_classes=10, dim=16, depth=(1, 2, 1), heads=(2, 2, 4),
                               mlp_dim=32, dim_head=8), (64, 64)),
    "cvt": ("cvt", "CvT", dict(num_classes=10, s1_emb_dim=16, s1_heads=1, s1_depth=1, s2_emb_dim=24, s2_heads=2,
                               s2_depth=1, s3_emb_dim=32, s3_heads=2, s3_depth=2), (64, 96)),
    "twins_svt": ("twins_svt", "TwinsSVT",
                  dict(num_classes=10, s1_emb_dim=8, s1_patch_size=2, s1_local_patch_size=4, s1_global_k=4,
                       s1_depth=1, s2_emb_dim=16, s2_patch_size=2, s2_local_patch_size=2, s2_global_k=2, s2_depth=0,
                       s3_emb_dim=24, s3_patch_size=2, s3_local_patch_size=2, s3_global_k=2, s3_depth=1,
                       s4_emb_dim=32, s4_patch_size=2, s4_local_patch_size=7, s4_global_k=1, s4_depth=1), (32, 48)),
    "t2t": ("t2t", "T2TViT", dict(image_size=32, num_classes=10, dim=32, depth=2, heads=2, mlp_dim=64, dim_head=16,
                                  t2t_layers=((3, 2), (3, 2))), (32, 32)),
    "cct": ("cct", "CCT", dict(img_size=(32, 48), embedding_dim=32, num_layers=2, num_heads=4, mlp_ratio=2,
                               num_classes=7, kernel_size=3, stride=1, padding=1, positional_embedding="learnable"),
            (32, 48)),
    "cross_vit": ("cross_vit", "CrossViT",
                  dict(image_size=48, num_classes=10, sm_dim=32, lg_dim=48, sm_patch_size=8, sm_enc_depth=1,
                       sm_enc_heads=2, sm_enc_mlp_dim=64, sm_enc_dim_head=16, lg_patch_size=16, lg_enc_depth=2,
                       lg_enc_heads=3, lg_enc_mlp_dim=96, lg_enc_dim_head=16, cross_attn_depth=2, cross_attn_heads=2,
                       cross_attn_dim_head=16, depth=2), (48, 48)),
    "ats": ("ats_vit", "ViT", dict(image_size=(32, 48), patch_size=(4, 6), num_classes=10, dim=32, depth=3,
                                   max_tokens_per_depth=(32, 16, 8), heads=2, mlp_dim=64, dim_head=16), (32, 48)),
    "mobilevit": ("mobile_vit", "MobileViT",
                  dict(image_size=(64, 128), dims=(16, 20, 24), channels=(8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 48),
                       num_classes=10, depths=(1, 2, 1), expansion=2), (64, 128)),
    "crossformer": ("crossformer", "CrossFormer",
                    dict(dim=(32, 64, 64, 64), depth=(1, 1, 1, 1), global_window_size=(4, 2, 2, 1), local_window_size=2,
                         num_classes=10), (64, 64)),
    "regionvit": ("regionvit", "RegionViT", dict(dim=(16, 32, 32, 32), depth=(1, 1, 1, 1), window_size=2,
                                                 num_classes=10), (64, 128)),
    "nest": ("nest", "NesT", dict(image_size=64, patch_size=4, dim=16, heads=2, num_hierarchies=3,
                                  block_repeats=(1, 1, 2), num_classes=10), (64, 64)),
    "levit": ("levit", "LeViT", dict(image_size=64, num_classes=10, dim=(16, 24, 32), depth=(1, 2, 1),
                                     heads=(2, 3, 4), mlp_mult=2, dim_key=8, dim_value=16), (64, 64)),
}


def _oracle_kwargs(family, kw):
    """ATS samples at random in vit-pytorch; with budgets above the token count nothing is sampled, so the oracle
    comparison is exact there (test_ats.py compares the sampling itself); the export uses the real budgets."""
    if family == "ats":
        return {**kw, "max_tokens_per_depth": (10 ** 6,) * len(kw["max_tokens_per_depth"])}
    return kw


def _randomise_buffers(model):
    """Give BatchNorm layers and zero-initialised biases non-trivial values so they take part in the comparison."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _check_family(family, kw, size, photo_batch, tmp_path, tag):
    mod, cls_name, _, _ = SMALL[family]
    ref_kw = _oracle_kwargs(family, kw)
    torch.manual_seed(0)
    ref = getattr(oracle(mod), cls_name)(**ref_kw).eval()
    _randomise_buffers(ref)
    ours = family_class(family)(**ref_kw).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = photo_batch(size, 4)
    with torch.no_grad():
        a, b = ref(x), ours(x)
    a, b = (t[0] if isinstance(t, tuple) else t for t in (a, b))
    oracle_diff = (a - b).abs().max().item()
    assert oracle_diff <= 1e-5, f"{family}: {oracle_diff}"
    if ref_kw is not kw:  # export the sampling configuration, not the no-sampling one
        ours = family_class(family)(**kw).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
    row = {"family": family, "config": tag, "size": list(size), "oracle_max_abs": oracle_diff}
    for target in ("torchscript", "onnx"):
        art = export(ours, torch.zeros(2, 3, *size), target, tmp_path / target, preprocessing=make_preprocessing(size))
        parity = art.manifest["parity"]
        worst = max(parity[f"batch_{b}"]["max_abs"] for b in (1, 3, 8))
        assert worst <= 1e-4
        row[target] = {"max_abs_b1_3_8": worst, "method": art.manifest["export"]["method"]}
    assert "dynamo" in row["onnx"]["method"], row["onnx"]["method"]
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"{family}-{tag}.json").write_text(json.dumps(row, indent=2))


def test_every_family_is_covered():
    assert set(SMALL) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(SMALL))
def test_family_small(family, photo_batch, tmp_path):
    _, _, kw, size = SMALL[family]
    _check_family(family, kw, size, photo_batch, tmp_path, "small")


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_family_preset_full_size(preset, photo_batch, tmp_path):
    p = PRESETS[preset]
    _check_family(p.family, dict(p.kwargs), p.input_size, photo_batch, tmp_path, preset)
