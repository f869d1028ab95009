"""Open any artifact in the runtime its manifest names, with input checks."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .device import check_target_device, parse_device, require_device
from .errors import ArtifactError, RuntimeMissingError, SignatureError, UntrustedCodeError, UsageError
from .manifest import MANIFEST, Artifact, artifact_folder, read_manifest
from .signing import verify_artifact
from .targets import get_target

__all__ = ["CheckedRunner", "check_input", "code_bearing", "open_artifact"]


def code_bearing(target: str) -> str | None:
    """What a ``target``'s artifact file is (e.g. "TorchScript file") when loading it runs code from the
    artifact's author (the target's ``code_bearing``), else None (a data format)."""
    try:
        return get_target(target).code_bearing
    except UsageError:
        return None


def _artifact_dir(path) -> Path:
    """The artifact folder ``path`` designates, as :func:`~vitedge.manifest.read_manifest` resolves it."""
    return artifact_folder(path)


def _check_signed_manifest(art: Artifact, signed: dict) -> None:
    """The manifest that was parsed is the one the signature covers, and it records the signed digests."""
    want = signed["files"].get(MANIFEST)
    if want is None or art.manifest_sha256 != want:
        raise SignatureError(f"{art.path / MANIFEST} is not the manifest the signature covers (changed while "
                             "loading?)")
    for name, entry in art.manifest["files"].items():
        if signed["files"].get(name) != entry["sha256"]:
            raise SignatureError(f"manifest {art.path / MANIFEST} lists {name!r} with a SHA-256 that the signature "
                                 "does not record")


class CheckedRunner:
    """A loaded artifact whose ``run`` checks its input first (:func:`check_input`: numpy float32 array of the
    artifact's (B, C, H, W), finite values) and then runs the target's runner (:attr:`inner`).

    Every other attribute (``runtime``, ``device``, ...) is the inner runner's. Timing loops that have checked
    their input once may call ``inner.run`` directly.
    """

    def __init__(self, art: Artifact, inner):
        self.art = art
        self.inner = inner

    def run(self, x):
        """float32 (B, C, H, W) numpy array -> list of float32 numpy outputs (logits (B, classes) first).

        Raises:
            UsageError: ``x`` is not a numpy array, not the artifact's dtype or shape, or holds NaN/Inf.
        """
        check_input(self.art, x)
        return self.inner.run(x)

    def __getattr__(self, name):
        if name in ("art", "inner"):  # not yet set (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def open_artifact(path: str | os.PathLike, *, threads: int | None = None, verify: bool = True,
                  trusted_keys=None, trust_code: bool = False, device: str | None = None):
    """Read the manifest (verifying file hashes unless ``verify`` is False) and load the runner.

    Trust rule: with ``trusted_keys`` (a PEM path or a list of them), the folder's ``model.sig`` must verify with
    one of them (:func:`vitedge.signing.verify_artifact`) before anything else is read, for any target; the
    manifest that is then parsed must be the signed one (same SHA-256) and list the signed digests, and the
    file hashes are verified whatever ``verify`` says. Without keys, a code-bearing artifact (TorchScript,
    AOTInductor: loading it runs its author's code) is refused unless ``trust_code`` is True; data formats
    (ONNX, OpenVINO, ExecuTorch, Core ML, TensorRT) load as before.

    ``device``: cpu (default), cuda or cuda:N. CUDA is for TorchScript and AOTInductor artifacts only (not
    TorchScript int8); an AOTInductor package runs only on the kind of device it was compiled for (manifest
    ``export.device``). See :mod:`vitedge.device`.

    Returns:
        (Artifact, CheckedRunner): the runner's ``run(x)`` checks ``x`` with :func:`check_input` first.
    Raises:
        SignatureError: a missing, malformed or untrusted signature, or files that differ from the signed ones.
        UntrustedCodeError: a code-bearing artifact with neither a trusted key nor ``trust_code``.
        ArtifactError (missing/corrupt/unknown target), RuntimeMissingError (also: CUDA asked for, none usable),
        UsageError (bad key file; a malformed device, or CUDA for a target that runs on the CPU only).
    """
    device = parse_device(device)
    keys = [trusted_keys] if isinstance(trusted_keys, (str, os.PathLike)) else list(trusted_keys or [])
    signed = None
    if keys:
        signed = verify_artifact(_artifact_dir(path), keys)
        verify = True
    art = read_manifest(path, verify=verify)
    if signed is not None:
        _check_signed_manifest(art, signed)
    try:
        mod = get_target(art.manifest["target"])
    except UsageError as e:
        raise ArtifactError(f"{art.path}: {e}") from None
    what = mod.code_bearing
    if what and signed is None and not trust_code:
        raise UntrustedCodeError(
            f"refusing to load {art.manifest['target']} artifact {art.path}: its {what} runs code when it is loaded "
            "and it is not signed by a trusted key; pass --key PUB.pem to check its signature, or --trust-code if "
            "you trust its source")
    cannot = mod.unavailable()
    if cannot:
        raise RuntimeMissingError(f"{art.manifest['target']} artifact {art.path} cannot run here: {cannot}")
    check_target_device(art.manifest["target"], device, art.manifest.get("precision", "fp32"))
    if device == "cpu":
        return art, CheckedRunner(art, mod.load(art, threads))
    require_device(device)
    return art, CheckedRunner(art, mod.load(art, threads, device=device))


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
