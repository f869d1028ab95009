"""Export targets and their registry.

Each target is a :class:`~vitedge.targets.base.Target` subclass registered with :func:`register_target`; see
that class for the interface (name, precisions, ``Options`` -> CLI flags, ``unavailable()``, ``write()``,
``load()``, ``default_int8_options()``, CLI hooks). :func:`get_target` returns the registered instance; the CLI,
:mod:`vitedge.export`, :mod:`vitedge.runtime` and :mod:`vitedge.quantize` go through it and never branch on a
target's name.

Built-in targets are listed in :data:`TARGETS` (name -> module): that line is all the registry needs, the module
is imported the first time the target is asked for (so importing this package imports no runtime, and
``vitedge zoo`` no torch). A target defined elsewhere registers itself when its module is imported.

Module protocol of the built-in targets (the Target subclass delegates to it): ``write(model, example, directory,
options) -> dict``, ``load(artifact, threads) -> Runner``, ``PRECISIONS`` and optionally ``runs_here()`` and
``CODE_BEARING``. ``load`` of the targets that run on CUDA (torchscript, aotinductor:
:data:`vitedge.device.CUDA_TARGETS`) also takes ``device=`` ("cpu", "cuda", "cuda:N"). The dict ``write`` returns
may hold ``"manifest": {...}``: extra top-level manifest keys (e.g. ``"coreml"``). Target-specific options reach
``write`` as ``options["target_options"]`` (a dict: the target's ``Options`` field names).
"""
from __future__ import annotations

import difflib
import importlib
import re
from typing import TYPE_CHECKING, Protocol

from ..errors import UsageError
from .base import Target, int_at_least  # noqa: F401 - int_at_least: the CLI's argument types

if TYPE_CHECKING:
    import numpy as np

__all__ = ["TARGETS", "Runner", "Target", "all_targets", "default_int8_options", "get_target", "register_target", "runs_here",
           "target_module", "target_names", "unregister_target"]

# The built-in targets, in the order the CLI lists them: name -> module that defines (and registers) its Target.
TARGETS = {"torchscript": "vitedge.targets.torchscript", "onnx": "vitedge.targets.onnx",
           "trt": "vitedge.targets.tensorrt", "coreml": "vitedge.targets.coreml",
           "executorch": "vitedge.targets.executorch", "aotinductor": "vitedge.targets.aotinductor",
           "openvino": "vitedge.targets.openvino"}

_REGISTRY: dict[str, Target] = {}
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class Runner(Protocol):
    """A loaded artifact: ``run`` maps a float32 (B, C, H, W) array to the list of output arrays."""

    runtime: str

    def run(self, x: np.ndarray) -> list[np.ndarray]: ...


def register_target(cls: type[Target]) -> type[Target]:
    """Class decorator: register ``cls`` (a :class:`Target` subclass) under ``cls.name``; returns ``cls``.

    A built-in name (:data:`TARGETS`) can be registered only from its own module; registering another class under
    a name already taken replaces it (a test or plug-in re-imported).
    Raises:
        ValueError: not a Target subclass, a malformed name, or a built-in name from elsewhere.
    """
    if not (isinstance(cls, type) and issubclass(cls, Target)):
        raise ValueError(f"register_target takes a Target subclass, got {cls!r}")
    if not isinstance(cls.name, str) or not _NAME.fullmatch(cls.name):
        raise ValueError(f"target name {cls.name!r} must be lowercase letters, digits, '-' or '_' (at most 32)")
    if cls.name in TARGETS and cls.__module__ != TARGETS[cls.name]:
        raise ValueError(f"target name {cls.name!r} is the built-in one of {TARGETS[cls.name]}")
    _REGISTRY[cls.name] = cls()
    return cls


def unregister_target(name: str) -> None:
    """Remove a target registered from outside :data:`TARGETS` (a test's); built-in ones stay."""
    if name not in TARGETS:
        _REGISTRY.pop(name, None)


def target_names() -> list[str]:
    """Every target's name: the built-in ones (no import needed), then those registered from elsewhere."""
    return list(TARGETS) + [n for n in _REGISTRY if n not in TARGETS]


def _unknown(name: str) -> UsageError:
    known = target_names()
    close = difflib.get_close_matches(str(name), known, n=2, cutoff=0.4)
    hint = f"; did you mean {close[0]}?" if close else ""
    return UsageError(f"unknown target {name!r} (known: {', '.join(known)}){hint}")


def get_target(name: str) -> Target:
    """The registered :class:`Target` named ``name`` (importing a built-in target's module the first time).
    Raises UsageError (with close matches) for an unknown one."""
    if name not in _REGISTRY:
        if not isinstance(name, str) or name not in TARGETS:
            raise _unknown(name)
        importlib.import_module(TARGETS[name])
        if name not in _REGISTRY:  # a module that forgot its @register_target
            raise RuntimeError(f"{TARGETS[name]} registers no Target named {name!r}")
    return _REGISTRY[name]


def all_targets() -> list[Target]:
    """Every target, in :func:`target_names` order (imports the built-in modules: torch; not for fast paths)."""
    return [get_target(n) for n in target_names()]


def default_int8_options(target: str, family: str | None, mode: str | None = None) -> dict:
    """The int8 options ``vitedge export --precision int8`` uses for ``target`` and a zoo ``family``: the target's
    choice (:meth:`vitedge.targets.base.Target.default_int8_options`; e.g. ONNX's family recipe,
    :func:`vitedge.quantize.onnx.default_int8_recipe`, or the target's ``default_int8_mode(family)``).
    ``mode`` (``--int8-mode``) overrides the recipe's mode.
    Calibration images are not included (add ``calibration``/``calibration_info`` for static int8).
    Raises UsageError for an unknown target."""
    return get_target(target).default_int8_options(family, mode)


def target_module(name: str):
    """The module implementing built-in target ``name`` (a registered target from elsewhere: its Target, which
    has the same ``load``/``write``). Raises UsageError (with close matches) for an unknown one."""
    target = get_target(name)
    return importlib.import_module(TARGETS[name]) if name in TARGETS else target


def runs_here(target) -> str | None:
    """None if this machine can run the artifacts of ``target`` (a :class:`Target` or a target module), else the
    reason it cannot."""
    if isinstance(target, Target):
        return target.unavailable()
    check = getattr(target, "runs_here", None)
    return check() if check else None
