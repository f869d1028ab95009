"""Helpers shared by the per-family parity and export tests (``from helpers import ...``; tests/ is on sys.path).

* :func:`oracle_pair`: a seeded reference model and ours loaded from its ``state_dict``.
* :func:`check_parity` / :func:`check_logits`: reference vs ours on the same input, with a tolerance.
* :func:`randomize_norms`, :func:`perturb_biases_and_norms_`, :func:`exercise_batchnorm`: move parameters and
  statistics away from their initial values so that the parity checks exercise every term.
* :func:`export_and_check`, :func:`max_onnx_rank`: export to a target and check the manifest's parity record.
* :func:`photos`: four scikit-image photos resized with ``F.interpolate`` (for the tests whose tolerances were
  set on that batch rather than on the ``photo_batch`` fixture's).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vitedge.data
import vitedge.export
from vitedge.models.zoo import FAMILIES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def oracle_pair(ref_cls, ours_cls, ref_kw: dict, ours_kw: dict | None = None, prepare=None):
    """Seeded (``torch.manual_seed(0)``) reference ``ref_cls(**ref_kw)``, passed to ``prepare`` if given (e.g.
    :func:`randomize_norms`), and ``ours_cls(**(ours_kw or ref_kw))`` loaded from its state_dict with
    ``strict=True``; returns ``(ref, ours)``, both in eval mode."""
    torch.manual_seed(0)
    ref = ref_cls(**ref_kw)
    if prepare is not None:
        prepare(ref)
    ours = ours_cls(**(ours_kw or ref_kw))
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref.eval(), ours.eval()


def check_logits(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> float:
    """Assert that ours (``b``) matches the reference's logits ``a`` to ``atol`` (max abs); return the difference.

    Also asserts equal shapes, finite ``b``, and non-degenerate reference logits (std > 1e-3).
    """
    assert a.shape == b.shape
    assert torch.isfinite(b).all()
    assert a.std() > 1e-3, "degenerate logits"
    diff = (a - b).abs().max().item()
    print(f"max abs diff {diff:.3g} (logit scale {a.abs().max().item():.3g})")
    assert diff <= atol, diff
    return diff


def check_parity(ref: nn.Module, ours: nn.Module, x: torch.Tensor, atol: float = 1e-5) -> float:
    """Run ``ref`` and ``ours`` on ``x`` without grad and :func:`check_logits` their outputs."""
    with torch.no_grad():
        a, b = ref(x), ours(x)
    return check_logits(a, b, atol)


def randomize_norms(model: nn.Module, seed: int = 1234, embeddings: bool = False) -> None:
    """Give every LayerNorm (torch's, and any module with ``g``/``b`` parameters: vit-pytorch's channel one)
    non-trivial affine parameters: weight ~ 1 + 0.3 N(0, 1), bias ~ 0.1 N(0, 1).

    With ``embeddings``, every ``nn.Embedding`` (e.g. a relative-position bias table) also gets unit-scale
    normal weights. Draws come from one generator seeded with ``seed``, module by module.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            pairs = [(m.weight, m.bias)] if isinstance(m, nn.LayerNorm) else []
            if isinstance(getattr(m, "g", None), nn.Parameter):
                pairs.append((m.g, m.b))
            for w, b in pairs:
                w.copy_(1 + 0.3 * torch.randn(w.shape, generator=g))
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            if embeddings and isinstance(m, nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))


def perturb_biases_and_norms_(model: nn.Module, also: tuple[str, ...] = ()) -> None:
    """Add 0.1 N(0, 1) noise (seed 1234) to every bias, every parameter with ``norm`` in its name, and every
    parameter whose name contains one of ``also``, so zero-initialised biases and LayerNorm affines matter."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or any(s in name for s in also):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def exercise_batchnorm(model: nn.Module, x: torch.Tensor, embeddings: bool = False,
                       moved_var: bool = False) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics, then switch to eval.

    The affine parameters are drawn at random (seed 1234); the running statistics are the exact (cumulative)
    batch statistics of train-mode passes over ``x`` and its mirror images. With ``embeddings``, every
    ``nn.Embedding`` (position biases) first gets 0.1 N(0, 1) weights from the same generator. With
    ``moved_var``, also asserts that every running variance moved away from the default 1.
    """
    g = torch.Generator().manual_seed(1234)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns, "model has no BatchNorm"
    with torch.no_grad():
        if embeddings:
            for m in model.modules():
                if isinstance(m, nn.Embedding):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.1)
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
            if moved_var:
                assert (bn.running_var - 1).abs().max() > 1e-2        # really not the default statistics
    model.eval()


def onnx_ranks(path) -> tuple[list[int], list[int]]:
    """Tensor ranks in an ONNX graph after shape inference: (intermediate values, graph outputs)."""
    onnx = pytest.importorskip("onnx")
    g = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph

    def ranks(values):
        return [len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")]

    return ranks(g.value_info), ranks(g.output)


def max_onnx_rank(path) -> int:
    """Largest tensor rank in an ONNX graph after shape inference (Core ML takes rank <= 5).

    Asserts that shape inference gave ranks to some intermediate values (else the check would be vacuous).
    """
    inner, outputs = onnx_ranks(path)
    assert inner, "no shapes inferred"
    return max(inner + outputs)


def export_and_check(model: nn.Module, size: tuple[int, int], target: str, tmp_path, num_classes: int,
                     max_rank: int = 5):
    """Export ``model`` (B, 3, *size) -> (B, num_classes) to ``target`` under ``tmp_path / target`` and check
    the manifest; return the artifact.

    Checks: input/output shapes with a dynamic batch; at batches 1, 3 and 8 (that many samples) max abs
    difference to eager <= 1e-4 and top-1 agreement 1.0; for ONNX, the dynamo exporter without the legacy
    fallback and tensor ranks <= ``max_rank`` (Core ML's limit is 5).
    """
    size = tuple(size)
    art = vitedge.export.export(model, torch.zeros(2, 3, *size), target, tmp_path / target,
                                preprocessing=vitedge.data.make_preprocessing(size))
    m = art.manifest
    assert m["inputs"][0]["shape"] == [-1, 3, *size]
    assert [o["shape"] for o in m["outputs"]] == [[-1, num_classes]]
    for b in (1, 3, 8):
        p = m["parity"][f"batch_{b}"]
        assert p["max_abs"] <= 1e-4 and p["top1_agreement"] == 1.0, (b, p)
        assert p["samples"] == b
    if target == "onnx":
        method = m["export"]["method"]
        assert "dynamo=True" in method and "fallback" not in method and "legacy" not in method, method
        assert "fallback_reason" not in m["export"]
        rank = max_onnx_rank(art.file)
        assert rank <= max_rank, rank
    return art


def photos(size: int | tuple[int, int]) -> torch.Tensor:
    """Four real photos (astronaut, chelsea, coffee, rocket), bilinear-resized (antialiased) to ``size``
    (an int for a square), ImageNet-normalised: float32 (4, 3, H, W)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    skdata = pytest.importorskip("skimage.data")
    imgs = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()]
    out = []
    for img in imgs:
        t = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)[None].float() / 255.0
        out.append(F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True))
    x = torch.cat(out)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def assert_same_init(ref_cls, ours_cls, kwargs) -> None:
    """Built with the same seed, the reference and ours have the same state_dict keys (in order), shapes and values."""
    torch.manual_seed(0)
    a = ref_cls(**kwargs).state_dict()
    torch.manual_seed(0)
    b = ours_cls(**kwargs).state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def assert_one_line_error(err: str, *needles) -> str:
    """``err`` (a CLI's stderr) is one ``vitedge: error: ...`` line, no traceback, containing every needle.
    Returns that line."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("vitedge: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def one_line_error(capsys, *needles) -> str:
    """What the in-process CLI printed to stderr (pytest's ``capsys``) is one error line with every needle."""
    return assert_one_line_error(capsys.readouterr().err, *needles)


def train_on_digits(model: nn.Module, pre: dict, epochs: int = 6) -> nn.Module:
    """Train ``model`` (10 classes) on the digits train split at ``pre``'s size with AdamW (lr 3e-3, batch 64,
    seeded order): a few seconds for the tiny test configs. Returns it in eval mode."""
    train, _ = vitedge.data.digits_split(0)
    xtr, ytr = vitedge.data.digits_batch(train, pre)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def cli_digits_checkpoint(folder, epochs: int, preset: str = "deit_tiny", size: int = 32):
    """``vitedge train`` of ``preset`` on the digits at ``size`` x ``size`` for ``epochs`` epochs (seconds for the
    tiny presets), into ``folder``; returns the safetensors path."""
    from vitedge.cli import main
    out = folder / f"{preset}.safetensors"
    assert main(["train", "--preset", preset, "--dataset", "digits", "--image-size", str(size), str(size),
                 "--epochs", str(epochs), "-o", str(out)]) == 0
    return out


# family -> (vit-pytorch module, class, small kwargs, input (H, W)), as each family spec registers them
# (vitedge/models/families/<family>.py: upstream, small_config, small_input_size)
SMALL = {f: (*spec.upstream, spec.small_config, spec.small_input_size) for f, spec in FAMILIES.items()
         if spec.upstream and spec.small_config}


def oracle_kwargs(family, kw):
    """ATS samples at random in vit-pytorch; with budgets above the token count nothing is sampled, so the oracle
    comparison is exact there (test_ats.py compares the sampling itself); the export uses the real budgets."""
    if family == "ats":
        return {**kw, "max_tokens_per_depth": (10 ** 6,) * len(kw["max_tokens_per_depth"])}
    return kw
