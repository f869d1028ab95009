"""The zoo: presets and families as registered in :mod:`vitedge.models.registry` by the family specs
(``vitedge/models/families/<family>.py``), and building and counting their models.

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
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from .registry import (FAMILIES, IMAGENET_MEAN, IMAGENET_STD, PRESETS, Preset, family_spec,  # noqa: F401
                       load_builtin_families, register_family, register_preset)
from importlib.metadata import PackageNotFoundError, version

if TYPE_CHECKING:  # torch is imported where a model is built or counted: listing presets never needs it
    from torch import nn

__all__ = ["FAMILIES", "PRESETS", "Preset", "count_cache_path", "create_model", "family_class", "get_preset",
           "model_stats", "preset_counts", "register_family", "register_preset", "size_arg"]

# The registry (vitedge.models.registry), filled by the family specs in vitedge/models/families/: FAMILIES maps a
# family name to its FamilySpec (class path, vit-pytorch counterpart, size argument, recipes), PRESETS a preset name
# to its Preset. They are the only classes a manifest may name (nothing else is ever imported from it).
load_builtin_families()


def size_arg(family: str) -> tuple[str | None, str]:
    """(constructor argument for the input size, kind) of a family: kind "tuple" ((H, W) accepted), "square" (an
    int only) or "none" (no size argument: fully convolutional, any size divisible by its strides).
    Raises UsageError for an unknown family."""
    return family_spec(family).size_arg


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
    return family_spec(family).load_class()


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
    """Cache key of a preset's counts: its family and class, constructor kwargs and input size, the model sources'
    digest and torch's version (its FLOP counter's rules)."""
    doc = {"v": COUNT_CACHE_VERSION, "family": p.family, "class": FAMILIES[p.family].class_path, "kwargs": p.kwargs,
           "input_size": list(p.input_size), "sources": sources, "torch": torch_version}
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
