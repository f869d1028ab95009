"""One parametrised test over every model family: vit-pytorch's state_dict loads strictly, fp32 logits match
vit-pytorch on real photos (max abs diff <= 1e-5), and the model exports to TorchScript and ONNX with a dynamic
batch that matches eager at batches 1, 3 and 8 (max abs diff <= 1e-4, checked inside ``export``).
Families, their vit-pytorch counterparts and small configs come from the registry (each family spec,
vitedge/models/families/); the papers' presets at full size under ``-m slow``.

Each run writes what it measured to build/test-reports/family_matrix/ (the README's family x target table is
made from it by benchmarks/family_matrix.py).
"""
import json
from pathlib import Path

import pytest
import torch

from helpers import SMALL, oracle_kwargs as _oracle_kwargs
from oracle import oracle
from vitedge.data import make_preprocessing
from vitedge.export import export
from vitedge.models.zoo import FAMILIES, PRESETS, family_class

REPORTS = Path(__file__).resolve().parents[2] / "build/test-reports/family_matrix"

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
    """Every registered family names its vit-pytorch counterpart and a small configuration (the tests' oracle)."""
    for family, spec in FAMILIES.items():
        assert spec.upstream and spec.small_config and spec.small_input_size, family


@pytest.mark.parametrize("family", sorted(SMALL))
def test_family_small(family, photo_batch, tmp_path):
    _, _, kw, size = SMALL[family]
    _check_family(family, kw, size, photo_batch, tmp_path, "small")


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_family_preset_full_size(preset, photo_batch, tmp_path):
    p = PRESETS[preset]
    _check_family(p.family, dict(p.kwargs), p.input_size, photo_batch, tmp_path, preset)
