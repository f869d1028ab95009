"""Preset registry: name -> (family, constructor kwargs, input size, paper, citation).

Presets carry the configuration of their paper mapped onto the vit-pytorch constructor. Where vit-pytorch's
architecture is a simplification of the paper's (LeViT, MobileViT), the parameter count differs from the
paper's figure; ``paper_params_m`` keeps the paper's number for comparison and ``vitedge zoo`` prints both.
Parameter counts and FLOPs are always counted on the built model, never typed in.
"""
from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils import flop_counter

from ..errors import UsageError

__all__ = ["FAMILIES", "PRESETS", "Preset", "create_model", "family_class", "get_preset", "model_stats"]

# family name -> "module:Class"; the only classes a manifest may name (nothing else is ever imported from it)
FAMILIES = {
    "vit": "vitedge.models.vit:ViT",
    "mobilevit": "vitedge.models.mobilevit:MobileViT",
    "levit": "vitedge.models.levit:LeViT",
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preset:
    """One zoo entry. ``input_size`` is (H, W); ``paper_params_m`` is the paper's parameter count in millions."""

    name: str
    family: str
    kwargs: dict
    input_size: tuple[int, int]
    paper: str
    citation: str
    paper_params_m: float | None = None
    note: str = ""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def source(self) -> str:
        """Short source: the paper's name and arXiv id, e.g. ``DeiT arXiv 2012.12877``."""
        m = re.search(r"arXiv \S+?(?=,|$)", self.paper)
        return f"{self.paper.split(',')[0]} {m.group(0) if m else ''}".strip()


def _deit(name, dim, heads, params, cite):
    return Preset(name, "vit", dict(image_size=224, patch_size=16, num_classes=1000, dim=dim, depth=12, heads=heads,
                                    mlp_dim=4 * dim, dim_head=64),
                  (224, 224), "DeiT, Touvron et al. 2021, arXiv 2012.12877, Table 1", cite, params)


def _mobilevit(name, dims, channels, expansion, params):
    return Preset(name, "mobilevit", dict(image_size=(256, 256), dims=dims, channels=channels, num_classes=1000,
                                          expansion=expansion),
                  (256, 256), "MobileViT, Mehta & Rastegari 2022, arXiv 2110.02178, Table 4 / Appendix A",
                  "Mehta, Rastegari. MobileViT: Light-weight, General-purpose, and Mobile-friendly Vision "
                  "Transformer. ICLR 2022.", params,
                  note="vit-pytorch's MobileViT transformer uses 4 heads of dim 8 and a 1x1 fusion input, "
                       "so its parameter count differs from the paper's")


def _levit(name, dims, depths, heads, dim_key, params):
    return Preset(name, "levit", dict(image_size=224, num_classes=1000, dim=dims, depth=depths, heads=heads,
                                      mlp_mult=2, stages=3, dim_key=dim_key, dim_value=2 * dim_key),
                  (224, 224), "LeViT, Graham et al. 2021, arXiv 2104.01136, Table 2",
                  "Graham et al. LeViT: a Vision Transformer in ConvNet's Clothing for Faster Inference. "
                  "ICCV 2021.", params,
                  note="vit-pytorch's LeViT is a simplification (plain conv stem, one shared value dim, "
                       "no attention-bias resolution change), so its parameter count differs from the paper's")


_DEIT = ("Touvron et al. Training data-efficient image transformers & distillation through attention. "
         "ICML 2021.")
PRESETS: dict[str, Preset] = {p.name: p for p in [
    _deit("deit_tiny", 192, 3, 5.7, _DEIT),
    _deit("deit_small", 384, 6, 22.1, _DEIT),
    _deit("deit_base", 768, 12, 86.6, _DEIT),
    _mobilevit("mobilevit_xxs", (64, 80, 96), (16, 16, 24, 24, 48, 48, 64, 64, 80, 80, 320), 2, 1.3),
    _mobilevit("mobilevit_xs", (96, 120, 144), (16, 32, 48, 48, 64, 64, 80, 80, 96, 96, 384), 4, 2.3),
    _mobilevit("mobilevit_s", (144, 192, 240), (16, 32, 64, 64, 96, 96, 128, 128, 160, 160, 640), 4, 5.6),
    _levit("levit_128s", (128, 256, 384), (2, 3, 4), (4, 6, 8), 16, 7.8),
    _levit("levit_128", (128, 256, 384), (4, 4, 4), (4, 8, 12), 16, 9.2),
    _levit("levit_192", (192, 288, 384), (4, 4, 4), (3, 5, 6), 32, 11.0),
    _levit("levit_256", (256, 384, 512), (4, 4, 4), (4, 6, 8), 32, 19.0),
]}


def get_preset(name: str) -> Preset:
    """Look up a preset by name.

    Raises:
        UsageError: unknown name; the message lists close matches.
    """
    try:
        return PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, PRESETS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; run `vitedge zoo` to list the {len(PRESETS)} presets"
        raise UsageError(f"unknown preset {name!r}{hint}") from None


def family_class(family: str) -> type[nn.Module]:
    """The model class of a family name in :data:`FAMILIES`. Raises UsageError for an unknown family."""
    if family not in FAMILIES:
        raise UsageError(f"unknown model family {family!r}; known: {', '.join(sorted(FAMILIES))}")
    module, cls = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), cls)


def create_model(name: str, *, seed: int | None = 0, **overrides) -> nn.Module:
    """Build preset ``name`` in eval mode; ``overrides`` replace constructor kwargs (e.g. ``num_classes=10``).

    With ``seed`` set, the random initialisation is reproducible (the same weights on every call), which is
    what lets ``vitedge validate`` rebuild the eager model of an artifact exported without a checkpoint.
    """
    preset = get_preset(name)
    cls = family_class(preset.family)
    kwargs = {**preset.kwargs, **overrides}
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(**kwargs)
    else:
        model = cls(**kwargs)
    return model.eval()


def _sdpa_flops(q, k, v, *args, out_shape=None, **kwargs):
    return flop_counter.sdpa_flop_count(q, k, v)


def model_stats(model: nn.Module, input_size: tuple[int, int], channels: int = 3) -> dict:
    """Count parameters and forward FLOPs of ``model`` on one (1, channels, H, W) input.

    FLOPs are counted by ``torch.utils.flop_counter`` (matmul, conv, SDPA; 2 FLOPs per multiply-add).
    Returns ``{"params": int, "params_m": float, "gflops": float, "gmacs": float}``; papers' "FLOPs"
    columns are usually multiply-adds, i.e. ``gmacs``.
    """
    params = sum(p.numel() for p in model.parameters())
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}
    with torch.no_grad(), flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(torch.zeros(1, channels, *input_size))
    flops = counter.get_total_flops()
    return {"params": params, "params_m": params / 1e6, "gflops": flops / 1e9, "gmacs": flops / 2e9}
