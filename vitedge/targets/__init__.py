"""Export targets. Each module provides ``write(model, example, directory, options) -> dict`` (the file it
wrote and how) and ``load(artifact, threads) -> Runner``; :mod:`vitedge.export` drives them."""
from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from ..errors import UsageError

TARGETS = {"torchscript": "vitedge.targets.torchscript", "onnx": "vitedge.targets.onnx"}


class Runner(Protocol):
    """A loaded artifact: ``run`` maps a float32 (B, C, H, W) array to the list of output arrays."""

    runtime: str

    def run(self, x: np.ndarray) -> list[np.ndarray]: ...


def target_module(name: str):
    """The module implementing target ``name``. Raises UsageError (with close matches) for an unknown one."""
    if name not in TARGETS:
        import difflib
        close = difflib.get_close_matches(name, TARGETS, n=2, cutoff=0.4)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown target {name!r} (known: {', '.join(TARGETS)}){hint}")
    return importlib.import_module(TARGETS[name])
