"""Preset registry: name -> (family, constructor kwargs, input size, paper, citation).

Presets carry the configuration of their paper mapped onto the vit-pytorch constructor. Where vit-pytorch's
architecture is a simplification of the paper's (LeViT, MobileViT), the parameter count differs from the
paper's figure; ``paper_params_m`` keeps the paper's number for comparison and ``vitedge zoo`` prints both.
Parameter counts and FLOPs are always counted on the built model, never typed in (:func:`model_stats`); counting
builds the model, so :func:`preset_counts` keeps the counts in a cache keyed by the preset and the model sources.
Listing presets needs no counting: this module imports torch only when a model is built or counted, so
``vitedge zoo`` lists the registry in a fraction of a second.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:  # torch is imported where a model is built or counted: listing presets never needs it
    from torch import nn

__all__ = ["FAMILIES", "PRESETS", "Preset", "count_cache_path", "create_model", "family_class", "get_preset",
           "model_stats", "preset_counts"]

# family name -> "module:Class"; the only classes a manifest may name (nothing else is ever imported from it)
FAMILIES = {
    "vit": "vitedge.models.vit:ViT",
    "simple_vit": "vitedge.models.simple_vit:SimpleViT",
    "distillable_vit": "vitedge.models.distill:DistillableViT",
    "deepvit": "vitedge.models.deepvit:DeepViT",
    "cait": "vitedge.models.cait:CaiT",
    "pit": "vitedge.models.pit:PiT",
    "cvt": "vitedge.models.cvt:CvT",
    "twins_svt": "vitedge.models.twins_svt:TwinsSVT",
    "t2t": "vitedge.models.t2t:T2TViT",
    "cct": "vitedge.models.cct:CCT",
    "cross_vit": "vitedge.models.cross_vit:CrossViT",
    "ats": "vitedge.models.ats:ATSViT",
    "crossformer": "vitedge.models.crossformer:CrossFormer",
    "regionvit": "vitedge.models.regionvit:RegionViT",
    "nest": "vitedge.models.nest:NesT",
    "mobilevit": "vitedge.models.mobilevit:MobileViT",
    "levit": "vitedge.models.levit:LeViT",
}

# How a family takes its input size: (argument name, kind) with kind "tuple" ((H, W) accepted), "square" (an
# int only) or "none" (no size argument: fully convolutional, any size divisible by its strides).
SIZE_ARG = {"levit": ("image_size", "square"), "cvt": (None, "none"), "twins_svt": (None, "none"),
            "cct": ("img_size", "tuple"), "crossformer": (None, "none"), "regionvit": (None, "none"),
            "nest": ("image_size", "square")}


def size_arg(family: str) -> tuple[str | None, str]:
    """(constructor argument for the input size, kind) of a family; see :data:`SIZE_ARG`."""
    return SIZE_ARG.get(family, ("image_size", "tuple"))

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
    params_comparable: bool = True  # vit-pytorch's architecture is the paper's, so its params should match
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
                       "so its parameter count differs from the paper's", params_comparable=False)


def _levit(name, dims, depths, heads, dim_key, params):
    return Preset(name, "levit", dict(image_size=224, num_classes=1000, dim=dims, depth=depths, heads=heads,
                                      mlp_mult=2, stages=3, dim_key=dim_key, dim_value=2 * dim_key),
                  (224, 224), "LeViT, Graham et al. 2021, arXiv 2104.01136, Table 2",
                  "Graham et al. LeViT: a Vision Transformer in ConvNet's Clothing for Faster Inference. "
                  "ICCV 2021.", params,
                  note="vit-pytorch's LeViT is a simplification (plain conv stem, one shared value dim, "
                       "no attention-bias resolution change), so its parameter count differs from the paper's",
                  params_comparable=False)


def _p(name, family, kwargs, size, paper, citation, params=None, note="", comparable=True):
    return Preset(name, family, kwargs, size, paper, citation, params, note, params_comparable=comparable)


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
    _p("deit_tiny_distilled", "distillable_vit",
       dict(image_size=224, patch_size=16, num_classes=1000, dim=192, depth=12, heads=3, mlp_dim=768, dim_head=64),
       (224, 224), "DeiT, Touvron et al. 2021, arXiv 2012.12877, Table 1 (distillation token)", _DEIT, None,
       "DeiT-Ti with a distillation token; to_vit() gives the plain ViT"),
    _p("simple_vit_s16", "simple_vit",
       dict(image_size=224, patch_size=16, num_classes=1000, dim=384, depth=12, heads=6, mlp_dim=1536, dim_head=64),
       (224, 224), "Better plain ViT baselines, Beyer et al. 2022, arXiv 2205.01580",
       "Beyer, Zhai, Kolesnikov. Better plain ViT baselines for ImageNet-1k. 2022.",
       note="ViT-S/16 body; the paper states no parameter count"),
    _p("simple_vit_b16", "simple_vit",
       dict(image_size=224, patch_size=16, num_classes=1000, dim=768, depth=12, heads=12, mlp_dim=3072, dim_head=64),
       (224, 224), "Better plain ViT baselines, Beyer et al. 2022, arXiv 2205.01580",
       "Beyer, Zhai, Kolesnikov. Better plain ViT baselines for ImageNet-1k. 2022.",
       note="ViT-B/16 body; the paper states no parameter count"),
    _p("deepvit_s", "deepvit",
       dict(image_size=224, patch_size=16, num_classes=1000, dim=396, depth=16, heads=12, mlp_dim=1188, dim_head=33),
       (224, 224), "DeepViT, Zhou et al. 2021, arXiv 2103.11886",
       "Zhou et al. DeepViT: Towards Deeper Vision Transformer. 2021.", None,
       "width/heads/MLP ratio of the official DeepViT-S; vit-pytorch re-attends in every layer and embeds "
       "patches linearly, so the parameter count differs from the paper's"),
    _p("cait_xxs24", "cait",
       dict(image_size=224, patch_size=16, num_classes=1000, dim=192, depth=24, cls_depth=2, heads=4, mlp_dim=768,
            dim_head=48),
       (224, 224), "CaiT, Touvron et al. 2021, arXiv 2103.17239, Table 1",
       "Touvron et al. Going deeper with Image Transformers. ICCV 2021.", 12.0),
    _p("cait_s24", "cait",
       dict(image_size=224, patch_size=16, num_classes=1000, dim=384, depth=24, cls_depth=2, heads=8, mlp_dim=1536,
            dim_head=48),
       (224, 224), "CaiT, Touvron et al. 2021, arXiv 2103.17239, Table 1",
       "Touvron et al. Going deeper with Image Transformers. ICCV 2021.", 46.9),
    *[_p(f"pit_{n}", "pit",
         dict(image_size=224, patch_size=16, num_classes=1000, dim=d, depth=(2, 6, 4), heads=h, mlp_dim=12 * d,
              dim_head=dh),
         (224, 224), "PiT, Heo et al. 2021, arXiv 2103.16302, Table 2",
         "Heo et al. Rethinking Spatial Dimensions of Vision Transformers. ICCV 2021.", params,
         "vit-pytorch shares one mlp_dim across stages; 12 x dim matches the paper's parameter count "
         "(its FLOPs are ~20% above the paper's; 8 x dim would match FLOPs instead)")
      for n, d, h, dh, params in [("ti", 64, (2, 4, 8), 32, 4.9), ("xs", 96, (2, 4, 8), 48, 10.6),
                                  ("s", 144, (3, 6, 12), 48, 23.5)]],
    _p("cvt_13", "cvt", dict(num_classes=1000), (224, 224), "CvT, Wu et al. 2021, arXiv 2103.15808, Table 2",
       "Wu et al. CvT: Introducing Convolutions to Vision Transformers. ICCV 2021.", 20.0,
       "vit-pytorch's CvT defaults are CvT-13 (average pooling instead of a class token)"),
    _p("cvt_21", "cvt", dict(num_classes=1000, s2_depth=4, s3_depth=16), (224, 224),
       "CvT, Wu et al. 2021, arXiv 2103.15808, Table 2",
       "Wu et al. CvT: Introducing Convolutions to Vision Transformers. ICCV 2021.", 32.0),
    _p("twins_svt_s", "twins_svt",
       dict(num_classes=1000, s1_emb_dim=64, s1_patch_size=4, s1_local_patch_size=7, s1_global_k=8, s1_depth=0,
            s2_emb_dim=128, s2_patch_size=2, s2_local_patch_size=7, s2_global_k=4, s2_depth=0,
            s3_emb_dim=256, s3_patch_size=2, s3_local_patch_size=7, s3_global_k=2, s3_depth=4,
            s4_emb_dim=512, s4_patch_size=2, s4_local_patch_size=7, s4_global_k=1, s4_depth=3),
       (224, 224), "Twins, Chu et al. 2021, arXiv 2104.13840, Table 1",
       "Chu et al. Twins: Revisiting the Design of Spatial Attention in Vision Transformers. NeurIPS 2021.", 24.0,
       "vit-pytorch hard-codes 8 heads of 64 per block (the paper: 2/4/8/16 heads of 32), so it is larger",
       comparable=False),
    _p("t2t_vit_14", "t2t",
       dict(image_size=224, num_classes=1000, dim=384, depth=14, heads=6, mlp_dim=1152, dim_head=64,
            t2t_layers=((7, 4), (3, 2), (3, 2))),
       (224, 224), "T2T-ViT, Yuan et al. 2021, arXiv 2101.11986, Table 1",
       "Yuan et al. Tokens-to-Token ViT: Training Vision Transformers from Scratch on ImageNet. ICCV 2021.", 21.5,
       "backbone as the paper's; vit-pytorch's T2T module keeps the full unfolded widths (147, 1323) and a "
       "learnable position embedding instead of the paper's 64-wide Performer tokens, so it is larger",
       comparable=False),
    _p("cct_7_3x1_32", "cct",
       dict(img_size=32, embedding_dim=256, num_layers=7, num_heads=4, mlp_ratio=2, kernel_size=3, stride=1, padding=1,
            n_conv_layers=1, num_classes=10, positional_embedding="learnable"),
       (32, 32), "CCT, Hassani et al. 2021, arXiv 2104.05704, Table 2 (CIFAR-10)",
       "Hassani et al. Escaping the Big Data Paradigm with Compact Transformers. 2021.", 3.76),
    _p("cct_14_7x2_224", "cct",
       dict(img_size=224, embedding_dim=384, num_layers=14, num_heads=6, mlp_ratio=3, kernel_size=7, stride=2,
            padding=3, n_conv_layers=2, num_classes=1000, positional_embedding="learnable"),
       (224, 224), "CCT, Hassani et al. 2021, arXiv 2104.05704, Table 3 (ImageNet)",
       "Hassani et al. Escaping the Big Data Paradigm with Compact Transformers. 2021.", 22.36),
    *[_p(f"cct_{n}", "cct",
         dict(img_size=224, embedding_dim=e, num_layers=n, num_heads=h, mlp_ratio=r, kernel_size=7, stride=2,
              padding=3, n_conv_layers=1, pooling_kernel_size=3, pooling_stride=2, pooling_padding=1,
              num_classes=1000, positional_embedding="learnable"),
         (224, 224), "CCT, Hassani et al. 2021, arXiv 2104.05704 (vit_pytorch.cct.cct_%d)" % n,
         "Hassani et al. Escaping the Big Data Paradigm with Compact Transformers. 2021.", None,
         "vit-pytorch's cct_%d() with its README's 224x224 tokenizer (one 7x7 conv, stride 2)" % n)
      for n, e, h, r in [(2, 128, 2, 1), (4, 128, 2, 1), (6, 256, 4, 2), (7, 256, 4, 2), (8, 256, 4, 2),
                         (14, 384, 6, 3), (16, 384, 6, 3)]],
    *[_p(f"crossvit_{n}", "cross_vit",
         dict(image_size=240, num_classes=1000, sm_dim=sm, lg_dim=lg, sm_patch_size=12, sm_enc_depth=1,
              sm_enc_heads=h, sm_enc_mlp_dim=3 * sm, sm_enc_dim_head=32, lg_patch_size=16, lg_enc_depth=ld,
              lg_enc_heads=h, lg_enc_mlp_dim=3 * lg, lg_enc_dim_head=64, cross_attn_depth=1, cross_attn_heads=h,
              cross_attn_dim_head=64, depth=3, dropout=0., emb_dropout=0.),
         (240, 240), "CrossViT, Chen et al. 2021, arXiv 2103.14899, Table 1",
         "Chen, Fan, Panda. CrossViT: Cross-Attention Multi-Scale Vision Transformer. ICCV 2021.", params,
         "vit-pytorch uses one image size for both branches: 240 (divisible by 12 and 16), and one "
         "cross_attn_dim_head (64) for both fusion attentions where the paper's small branch uses 32", comparable=ok)
      for n, sm, lg, h, ld, params, ok in [("9", 128, 256, 4, 3, 8.6, True), ("15", 192, 384, 6, 5, 27.4, False)]],
    _p("crossformer_t", "crossformer",
       dict(dim=(64, 128, 256, 512), depth=(1, 1, 4, 3), global_window_size=(8, 4, 2, 1), local_window_size=7,
            cross_embed_kernel_sizes=((4, 8, 16, 32), (2, 4), (2, 4), (2, 4)), cross_embed_strides=(4, 2, 2, 2),
            num_classes=1000),
       (224, 224), "CrossFormer, Wang et al. 2021, arXiv 2108.00154, Table 1",
       "Wang et al. CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention. ICLR 2022.", 27.8,
       "the paper's depths (1, 1, 8, 6) count single SDA/LDA blocks; vit-pytorch's depth counts pairs"),
    _p("regionvit_ti", "regionvit",
       dict(dim=(64, 128, 256, 512), depth=(2, 2, 8, 2), window_size=7, num_classes=1000, tokenize_local_3_conv=True,
            local_patch_size=4, use_peg=False),
       (224, 224), "RegionViT, Chen et al. 2021, arXiv 2106.02689, Table 2",
       "Chen, Panda, Fan. RegionViT: Regional-to-Local Attention for Vision Transformers. ICLR 2022.", 13.8,
       "vit-pytorch fixes attention at 4 heads of 32 (the paper: 2/4/8/16 heads), so it is smaller",
       comparable=False),
    _p("nest_t", "nest",
       dict(image_size=224, patch_size=4, dim=96, heads=3, num_hierarchies=3, block_repeats=(2, 2, 8),
            num_classes=1000),
       (224, 224), "NesT, Zhang et al. 2021, arXiv 2105.12723, Table A1",
       "Zhang et al. Nested Hierarchical Transformer. AAAI 2022.", 17.0,
       "vit-pytorch's heads/dim_head layout differs from the paper's (3, 6, 12) heads of 32",
       comparable=False),
    _p("ats_readme", "ats",
       dict(image_size=256, patch_size=16, num_classes=1000, dim=1024, depth=6,
            max_tokens_per_depth=(256, 128, 64, 32, 16, 8), heads=16, mlp_dim=2048, dropout=0.1, emb_dropout=0.1),
       (256, 256), "ATS, Fayyaz et al. 2022, arXiv 2111.15667 (vit-pytorch README configuration)",
       "Fayyaz et al. Adaptive Token Sampling For Efficient Vision Transformers. ECCV 2022.", None,
       "deterministic fixed-capacity sampling in eval (vitedge.models.ats); the paper gives no preset for this "
       "constructor"),
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
    import torch
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
    from torch.utils import flop_counter
    return flop_counter.sdpa_flop_count(q, k, v)


def model_stats(model: nn.Module, input_size: tuple[int, int], channels: int = 3) -> dict:
    """Count parameters and forward FLOPs of ``model`` on one (1, channels, H, W) input.

    FLOPs are counted by ``torch.utils.flop_counter`` (matmul, conv, SDPA; 2 FLOPs per multiply-add).
    Returns ``{"params": int, "params_m": float, "gflops": float, "gmacs": float}``; papers' "FLOPs"
    columns are usually multiply-adds, i.e. ``gmacs``.
    """
    import torch
    from torch.utils import flop_counter
    params = sum(p.numel() for p in model.parameters())
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}
    # the counter's module tracker hooks autograd on inputs that require grad; a parameter passed straight into a
    # submodule (CaiT's class token) trips it, so count with gradients switched off on the parameters
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.no_grad(), flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            model(torch.zeros(1, channels, *input_size))
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    flops = counter.get_total_flops()
    return {"params": params, "params_m": params / 1e6, "gflops": flops / 1e9, "gmacs": flops / 2e9}


COUNT_CACHE_VERSION = 1


def count_cache_path() -> Path:
    """Where :func:`preset_counts` keeps its counts: ``$VITEDGE_CACHE_DIR/zoo-counts.json``, else
    ``$XDG_CACHE_HOME/vitedge/zoo-counts.json`` (``~/.cache/vitedge/zoo-counts.json``)."""
    root = os.environ.get("VITEDGE_CACHE_DIR")
    if root:
        return Path(root) / "zoo-counts.json"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "vitedge" / "zoo-counts.json"


def _sources_digest() -> str:
    """SHA-256 over the model definitions (every ``vitedge/models/*.py``, by name): a changed file invalidates
    every cached count."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _count_key(p: Preset, sources: str, torch_version: str) -> str:
    """Cache key of a preset's counts: its family, constructor kwargs and input size, the model sources' digest
    and torch's version (its FLOP counter's rules)."""
    doc = {"v": COUNT_CACHE_VERSION, "family": p.family, "kwargs": p.kwargs, "input_size": list(p.input_size),
           "sources": sources, "torch": torch_version}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=list).encode()).hexdigest()


def preset_counts(names, *, cache: bool = True, on_count=None) -> dict[str, dict]:
    """Parameters and forward FLOPs of the presets ``names`` (:func:`model_stats` on the built model, one
    (1, 3, H, W) image at the preset's input size).

    Counting builds the model (seconds for the large ones), so with ``cache`` the counts are read from and written
    to :func:`count_cache_path`, keyed per preset by :func:`_count_key` (kwargs, input size, the source of every
    ``vitedge/models/*.py``, torch's version): a count is reused only for the same model code. An unreadable or
    unwritable cache is ignored (everything is counted). ``on_count(name, i, n)`` is called before each preset that
    has to be built (i from 1 to n, the number to build).

    Returns:
        ``{name: {"params": int, "params_m": float (millions), "gflops": float (1e9 FLOPs), "gmacs": float
        (1e9 multiply-adds)}}`` in the order of ``names``.
    """
    from importlib.metadata import PackageNotFoundError, version
    try:
        torch_version = version("torch")
    except PackageNotFoundError:  # a torch without distribution metadata: count every time
        torch_version, cache = "", False
    sources = _sources_digest()
    names = [get_preset(n).name for n in names]
    keys = {n: _count_key(p, sources, torch_version) for n, p in PRESETS.items()}
    path = count_cache_path()
    stored: dict = {}
    if cache:
        try:
            doc = json.loads(path.read_text())
            stored = doc.get("counts", {}) if isinstance(doc, dict) else {}
            stored = stored if isinstance(stored, dict) else {}
        except (OSError, ValueError):
            stored = {}
    out: dict[str, dict] = {}
    todo = []
    for n in names:
        hit = stored.get(keys[n])
        if isinstance(hit, dict) and {"params", "params_m", "gflops", "gmacs"} <= set(hit):
            out[n] = {k: hit[k] for k in ("params", "params_m", "gflops", "gmacs")}
        else:
            todo.append(n)
    for i, n in enumerate(todo, 1):
        if on_count is not None:
            on_count(n, i, len(todo))
        out[n] = model_stats(create_model(n), get_preset(n).input_size)
        stored[keys[n]] = out[n]
    if cache and todo:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            current = set(keys.values())  # counts of older model code or presets are dropped
            kept = {k: v for k, v in stored.items() if k in current}
            tmp.write_text(json.dumps({"version": COUNT_CACHE_VERSION, "counts": kept}, indent=1) + "\n")
            os.replace(tmp, path)
        except OSError:
            pass
    return {n: out[n] for n in names}
