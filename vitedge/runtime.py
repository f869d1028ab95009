"""Open any artifact in the runtime its manifest names, with input checks."""
from __future__ import annotations

import os

import numpy as np

from .errors import ArtifactError, RuntimeMissingError, UsageError
from .manifest import Artifact, read_manifest
from .targets import runs_here, target_module

__all__ = ["check_input", "open_artifact"]


def open_artifact(path: str | os.PathLike, *, threads: int | None = None, verify: bool = True):
    """Read the manifest (verifying file hashes unless ``verify`` is False) and load the runner.

    Returns (Artifact, Runner). Raises ArtifactError (missing/corrupt/unknown target) or RuntimeMissingError.
    """
    art = read_manifest(path, verify=verify)
    try:
        mod = target_module(art.manifest["target"])
    except UsageError as e:
        raise ArtifactError(f"{art.path}: {e}") from None
    cannot = runs_here(mod)
    if cannot:
        raise RuntimeMissingError(f"{art.manifest['target']} artifact {art.path} cannot run here: {cannot}")
    return art, mod.load(art, threads)


def check_input(art: Artifact, x: np.ndarray) -> None:
    """Raise UsageError unless ``x`` is a float32 array whose shape fits the artifact's input spec (-1 = any)
    and whose values are all finite (a NaN or Inf input is refused rather than timed or compared)."""
    spec = art.manifest["inputs"][0]
    if not isinstance(x, np.ndarray):
        raise UsageError(f"input must be a numpy array, got {type(x).__name__}")
    try:
        want_dtype = np.dtype(spec["dtype"])
    except TypeError:
        raise ArtifactError(f"{art.path}: manifest input dtype {spec['dtype']!r} is not a numpy dtype") from None
    if x.dtype != want_dtype:
        raise UsageError(f"input dtype {x.dtype} does not match the artifact's {spec['dtype']}")
    want = spec["shape"]
    if x.ndim != len(want) or any(w not in (-1, g) for w, g in zip(want, x.shape)):
        shown = ["B" if w == -1 else str(w) for w in want]
        raise UsageError(f"input shape {tuple(x.shape)} does not fit the artifact's input ({', '.join(shown)}); "
                         f"this artifact was exported for {want[-2]}x{want[-1]} images")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(x.size - np.isfinite(x).sum())
        raise UsageError(f"input holds {bad} NaN/Inf value(s) of {x.size}; refusing to run the artifact on it")
