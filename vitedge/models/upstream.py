"""vit-pytorch itself, for two uses:

* the ``vit-pytorch`` counterpart of each zoo family (:func:`upstream_class`): the test oracle and the "done by
  hand" peer of the speed comparison (benchmarks/compare.py);
* :func:`compat_base`: the vit-pytorch class that a few vitedge classes also derive from, so that vit-pytorch's
  own wrappers, which test ``isinstance`` against its classes, accept vitedge models (``Recorder`` looks for
  ``vit_pytorch.vit.Attention`` modules, ``DistillWrapper`` wants a ``vit_pytorch.distill.DistillableViT``).

``import vit_pytorch`` runs the package ``__init__``, which imports ``dino`` and hence torchvision, which has no
CPU build that imports beside the torch 2.13.0 CPU wheel (torchvision from PyPI fails with "operator
torchvision::nms does not exist"). The model files themselves import only torch and einops. So the package is
resolved once, in this order (:func:`upstream_module`):

1. ``vit_pytorch`` already imported (by the user, or by an earlier call): that one;
2. torchvision installed and ``import vit_pytorch`` succeeds: the real package;
3. otherwise, vit-pytorch's files installed: an empty ``vit_pytorch`` package whose ``__path__`` points at the
   installed files is registered in ``sys.modules`` and the submodules are imported from it. ``import
   vit_pytorch.recorder`` etc. then work for the user too (the real ``import vit_pytorch`` could not), and they
   are the same module objects vitedge's classes derive from.

A fake package is never registered where the real one imports.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

from torch import nn

from ..errors import RuntimeMissingError, UsageError
from .registry import family_spec

__all__ = ["COMPAT_ENV", "compat_base", "upstream_class", "upstream_module"]

COMPAT_ENV = "VITEDGE_VIT_PYTORCH_COMPAT"  # "0" (or false/no/off): vitedge classes derive from nn.Module only

def _resolve_package() -> None:
    """Make ``vit_pytorch`` importable as described in the module docstring, or raise RuntimeMissingError."""
    if "vit_pytorch" in sys.modules:
        return
    spec = importlib.util.find_spec("vit_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeMissingError("vit-pytorch is not installed (pip install --no-deps vit-pytorch einops)")
    if importlib.util.find_spec("torchvision") is not None:  # without it the package __init__ cannot import
        try:
            importlib.import_module("vit_pytorch")
            return
        except Exception:  # noqa: BLE001 - a broken torchvision raises RuntimeError, OSError, ... at import
            sys.modules.pop("vit_pytorch", None)
    pkg = types.ModuleType("vit_pytorch")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["vit_pytorch"] = pkg


def upstream_module(module: str):
    """``vit_pytorch.<module>`` (e.g. ``"vit"``, ``"levit"``, ``"mobile_vit"``): from the real package where it
    imports, else without the package ``__init__`` (see the module docstring).

    Raises:
        RuntimeMissingError: vit-pytorch (or einops) is not installed.
    """
    _resolve_package()
    try:
        return importlib.import_module(f"vit_pytorch.{module}")
    except ImportError as e:
        raise RuntimeMissingError(f"cannot import vit_pytorch.{module}: {e}") from None


def compat_base(module: str, name: str) -> type[nn.Module]:
    """The class ``vit_pytorch.<module>.<name>`` for a vitedge class to derive from, else ``nn.Module``.

    ``nn.Module`` when vit-pytorch (or einops) is not installed, the class is missing or is not an ``nn.Module``,
    or the environment variable ``VITEDGE_VIT_PYTORCH_COMPAT`` is ``0`` / ``false`` / ``no`` / ``off``. A class
    deriving from it overrides ``__init__`` and ``forward`` and calls ``nn.Module.__init__(self)`` instead of
    ``super().__init__()``, so the vit-pytorch base adds no parameters: the ``state_dict`` and the computation are
    vitedge's either way; only ``isinstance`` checks against the vit-pytorch class (its wrappers' checks) change.
    Costs one import of the vit-pytorch file (and einops) the first time, a few milliseconds.
    """
    if os.environ.get(COMPAT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return nn.Module
    try:
        cls = getattr(upstream_module(module), name)
    except Exception:  # noqa: BLE001 - not installed, or a vit-pytorch version without it: no compatibility
        return nn.Module
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else nn.Module


def upstream_class(family: str):
    """The vit-pytorch class a zoo family mirrors (same constructor arguments, same state_dict keys), as its family
    spec declares it (``register_family(..., upstream=(submodule, class))``). Raises UsageError (unknown family, or
    one without a counterpart), RuntimeMissingError."""
    spec = family_spec(family)
    if spec.upstream is None:
        raise UsageError(f"no vit-pytorch counterpart known for family {family!r}")
    module, cls = spec.upstream
    return getattr(upstream_module(module), cls)
