"""The family registry: every model family, its presets and its per-target export recipes, in one place.

A family is declared once, by its *family spec* (``vitedge/models/families/<family>.py``), which calls
:func:`register_family` (class, vit-pytorch counterpart, input-size argument, small test configuration, export
recipes) and :func:`register_preset` for each paper configuration. The spec modules import nothing but this module:
the class is named by ``"module:Class"`` and imported only when a model is built (:func:`family_class`), so listing
the zoo never imports torch. Every module in :mod:`vitedge.models.families` is imported by
:func:`load_builtin_families` (no list to edit); code outside vitedge may register more families the same way
(with a class object or a ``"module:Class"`` path).

Readers: :mod:`vitedge.models.zoo` (``FAMILIES``, ``PRESETS``, :func:`family_class`, :func:`size_arg`),
:func:`vitedge.models.upstream.upstream_class`, and the export targets through :func:`family_recipe`.
"""
from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError

__all__ = ["DEFAULT_RECIPES", "FAMILIES", "PRESETS", "FamilySpec", "Preset", "family_recipe", "family_spec",
           "load_builtin_families", "register_family", "register_preset", "unregister_family"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SIZE_KINDS = ("tuple", "square", "none")

# Recipe kinds and the recipe a family gets when it declares none (a family's recipe replaces the default whole,
# it is not merged into it). Each target reads its kind with family_recipe(family, kind):
# * "onnx": vitedge.targets.onnx, the ONNX Runtime fusions of the stored fp32 graph (``fusions``, a subset of
#   vitedge.targets.onnx.FUSIONS). Families not measured keep ORT's own fusions only.
# * "onnx_int8": vitedge.quantize.onnx, the options of quantize_int8 (mode, method, conv_weight_storage, ...).
# * "openvino_int8": vitedge.targets.openvino, the nncf.quantize options (model_type, preset, smooth_quant,
#   ignored_types, method); see the measurements in that module.
# * "executorch_int8": vitedge.targets.executorch, the PT2E int8 ``mode`` (static | dynamic).
DEFAULT_RECIPES: dict[str, dict] = {
    "onnx": {"fusions": ()},
    "onnx_int8": {"mode": "static", "method": "minmax"},
    "openvino_int8": {"model_type": "transformer", "preset": "performance", "smooth_quant": False,
                      "ignored_types": (), "method": "minmax"},
    "executorch_int8": {"mode": "static"},
}


@dataclass(frozen=True)
class FamilySpec:
    """One registered family.

    ``cls``: the model class, or ``"module:Class"`` (imported on first use); ``upstream``: (vit_pytorch submodule,
    class) of the vit-pytorch class it mirrors, None if none; ``size_arg``: (constructor argument for the input
    size, kind) with kind "tuple" ((H, W) accepted), "square" (an int only) or "none" (no size argument: fully
    convolutional, any size divisible by its strides); ``small_config`` / ``small_input_size``: a small
    configuration and its input (H, W) for the family tests; ``recipes``: recipe kind -> recipe (see
    :data:`DEFAULT_RECIPES`).
    """

    name: str
    cls: Any
    upstream: tuple[str, str] | None = None
    size_arg: tuple[str | None, str] = ("image_size", "tuple")
    small_config: dict | None = None
    small_input_size: tuple[int, int] | None = None
    recipes: dict = field(default_factory=dict)
    module: str = ""  # the spec module that registered it

    @property
    def class_path(self) -> str:
        """``"module:Class"`` of the family's class (without importing it)."""
        if isinstance(self.cls, str):
            return self.cls
        return f"{self.cls.__module__}:{self.cls.__qualname__}"

    def load_class(self):
        """The model class (imports its module the first time; that import brings torch)."""
        if not isinstance(self.cls, str):
            return self.cls
        module, name = self.cls.split(":")
        return getattr(importlib.import_module(module), name)


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


# The registry itself (insertion order is the listing order of `vitedge zoo`). vitedge.models.zoo exposes these
# same dict objects as FAMILIES and PRESETS.
FAMILIES: dict[str, FamilySpec] = {}
PRESETS: dict[str, Preset] = {}

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def register_family(name: str, cls, *, upstream: tuple[str, str] | None = None,
                    size_arg: tuple[str | None, str] = ("image_size", "tuple"), small_config: dict | None = None,
                    small_input_size: tuple[int, int] | None = None, recipes: dict | None = None) -> FamilySpec:
    """Register model family ``name``; returns its :class:`FamilySpec` (fields documented there).

    Raises:
        ValueError: a name already registered or not ``[a-z][a-z0-9_]*``, an unknown recipe kind or size kind,
            ``cls`` neither a class nor ``"module:Class"``.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"family name {name!r} is not [a-z][a-z0-9_]*")
    if name in FAMILIES:
        raise ValueError(f"family {name!r} is already registered (by {FAMILIES[name].module or 'code'})")
    if isinstance(cls, str):
        if cls.count(":") != 1:
            raise ValueError(f"family {name!r}: class path {cls!r} is not 'module:Class'")
    elif not isinstance(cls, type):
        raise ValueError(f"family {name!r}: {cls!r} is not a class or 'module:Class'")
    if size_arg[1] not in SIZE_KINDS or (size_arg[1] == "none") != (size_arg[0] is None):
        raise ValueError(f"family {name!r}: size_arg {size_arg!r} is not (argument, 'tuple'|'square') or "
                         "(None, 'none')")
    recipes = dict(recipes or {})
    unknown = set(recipes) - set(DEFAULT_RECIPES)
    if unknown:
        raise ValueError(f"family {name!r}: unknown recipe kinds {sorted(unknown)} (known: "
                         f"{', '.join(DEFAULT_RECIPES)})")
    spec = FamilySpec(name, cls, tuple(upstream) if upstream else None, tuple(size_arg), small_config,
                      tuple(small_input_size) if small_input_size else None, {k: dict(v) for k, v in recipes.items()},
                      _caller_module())
    FAMILIES[name] = spec
    return spec


def register_preset(name: str, family: str, kwargs: dict, input_size: tuple[int, int], paper: str, citation: str,
                    paper_params_m: float | None = None, note: str = "", **fields) -> Preset:
    """Register a preset of a registered family (arguments: the :class:`Preset` fields); returns it.

    Raises:
        ValueError: a name already registered, or a family not registered (register the family first).
    """
    if name in PRESETS:
        raise ValueError(f"preset {name!r} is already registered")
    if family not in FAMILIES:
        raise ValueError(f"preset {name!r}: family {family!r} is not registered")
    p = Preset(name, family, dict(kwargs), tuple(input_size), paper, citation, paper_params_m, note, **fields)
    PRESETS[name] = p
    return p


def unregister_family(name: str) -> None:
    """Remove a family and its presets (for code that registered one for a while, e.g. a test)."""
    FAMILIES.pop(name, None)
    for n in [n for n, p in PRESETS.items() if p.family == name]:
        del PRESETS[n]


def family_spec(family: str) -> FamilySpec:
    """The :class:`FamilySpec` of a registered family. Raises UsageError for an unknown family."""
    load_builtin_families()
    try:
        return FAMILIES[family]
    except (KeyError, TypeError):
        raise UsageError(f"unknown model family {family!r}; known: {', '.join(sorted(FAMILIES))}") from None


def family_recipe(family: str | None, kind: str) -> dict:
    """The ``kind`` recipe of ``family`` (a copy): the one its spec declares, else :data:`DEFAULT_RECIPES`'
    (also for None and families not registered: a model outside the zoo). Raises KeyError for an unknown kind."""
    default = DEFAULT_RECIPES[kind]
    load_builtin_families()
    spec = FAMILIES.get(family) if isinstance(family, str) else None
    return dict(spec.recipes.get(kind, default) if spec is not None else default)


_loaded = False


def load_builtin_families() -> None:
    """Import every family spec module in :mod:`vitedge.models.families` (once; in name order)."""
    global _loaded
    if _loaded:
        return
    pkg = importlib.import_module(".families", __package__)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    _loaded = True


def _caller_module() -> str:
    """The module that called register_family (for the "already registered by" message)."""
    return sys._getframe(2).f_globals.get("__name__", "")
