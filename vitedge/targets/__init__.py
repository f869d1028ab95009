"""Export targets. Each module provides ``write(model, example, directory, options) -> dict`` (the file it
wrote and how), ``load(artifact, threads) -> Runner`` and ``PRECISIONS``; :mod:`vitedge.export` drives them.

``load`` of the targets that run on CUDA (torchscript, aotinductor: :data:`vitedge.device.CUDA_TARGETS`) also
takes ``device=`` ("cpu", "cuda", "cuda:N"); the others are only ever called without it.

Optional module attributes:
    ``runs_here() -> str | None``: None when this machine can run the target's artifacts, else the one-line
        reason it cannot (e.g. "Core ML prediction needs macOS"). Export then writes the artifact without the
        parity run (recorded as skipped, with the reason), and ``validate``/``bench`` refuse it with the reason.
    ``CODE_BEARING = "<what the file is>"``: loading the target's artifact runs code its author chose
        (TorchScript, AOTInductor); :func:`vitedge.runtime.open_artifact` loads it only when it is signed by a
        trusted key or the caller passes ``trust_code=True`` (``--trust-code``).
The dict ``write`` returns may hold ``"manifest": {...}``: extra top-level manifest keys (e.g. ``"coreml"``).
Target-specific options reach ``write`` as ``options["target_options"]`` (a dict; see each target).
"""
from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from ..errors import UsageError

TARGETS = {"torchscript": "vitedge.targets.torchscript", "onnx": "vitedge.targets.onnx",
           "trt": "vitedge.targets.tensorrt", "coreml": "vitedge.targets.coreml",
           "executorch": "vitedge.targets.executorch", "aotinductor": "vitedge.targets.aotinductor",
           "openvino": "vitedge.targets.openvino"}


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


def runs_here(module) -> str | None:
    """None if this machine can run ``module``'s artifacts, else the reason it cannot (see module docstring)."""
    check = getattr(module, "runs_here", None)
    return check() if check else None
