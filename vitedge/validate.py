"""Parity of an artifact against eager PyTorch on real images.

The metrics and tolerances are :mod:`vitedge.parity`'s (``compare``, ``tolerance_for``, ``check_tolerance`` and
``DEFAULT_TOLERANCE`` are also importable from here, as before).
"""
from __future__ import annotations

import os
from functools import partial

import numpy as np

from .data import bundled_photo_paths, digits_batch, digits_split, image_paths, load_batch
from .errors import UsageError
from .export import build_model
from .parity import CUDA_FP32_TOLERANCE, DEFAULT_TOLERANCE, check_tolerance, compare, run_pairs, tolerance_for
from .runtime import check_input, open_artifact

__all__ = ["DEFAULT_TOLERANCE", "check_tolerance", "compare", "tolerance_for", "validate"]


def validate(path: str | os.PathLike, *, images: str | os.PathLike | None = None, model=None,
             tolerance: dict | None = None, threads: int | None = None, verify: bool = True,
             dataset: str | None = None, trusted_keys=None, trust_code: bool = False,
             device: str | None = None) -> dict:
    """Run an artifact in its runtime and eager PyTorch on the same preprocessed real images.

    Args:
        path: artifact directory (or the model file in it).
        images: folder of JPEG/PNG files; default the photos bundled with scikit-image.
        model: the eager ``nn.Module`` to compare with; default rebuilt from the manifest.
        tolerance: overrides of :data:`DEFAULT_TOLERANCE` for the artifact's precision.
        verify: check the manifest's SHA-256 of every file before loading.
        dataset: ``"digits"``: instead of photos, the held-out digits test split: top-1 of the artifact and of
            the fp32 eager model against the labels, and the drop in points (plus the parity metrics).
        trusted_keys, trust_code: the trust rule of :func:`vitedge.runtime.open_artifact` (public key PEM
            path(s) whose signature must verify; or load an unsigned code-bearing artifact anyway).
        device: where the artifact runs: cpu (default), cuda or cuda:N (TorchScript and AOTInductor only, see
            :mod:`vitedge.device`); the eager reference always runs in fp32 on the CPU.
    Returns:
        ``{"artifact", "target", "runtime", "precision", "images" | "dataset", "metrics": {...}, "tolerance",
        "failures": [...], "passed": bool}``; with a dataset, metrics also hold ``top1``, ``eager_top1``,
        ``drop_points``.
    Raises:
        ArtifactError (SignatureError, UntrustedCodeError), ImageError, RuntimeMissingError, VitedgeError:
            with a one-line message.
    """
    art, runner = open_artifact(path, threads=threads, verify=verify, trusted_keys=trusted_keys,
                                trust_code=trust_code, device=device)
    eager = model.eval() if model is not None else build_model(art.manifest.get("model") or {})
    pre = art.manifest["preprocessing"]
    fixed = art.manifest["inputs"][0]["shape"][0]
    precision = art.manifest.get("precision", "fp32")
    result = {"artifact": str(art.path), "target": art.manifest["target"], "runtime": runner.runtime,
              "precision": precision}
    if dataset is not None:
        if dataset != "digits":
            raise UsageError(f"unknown dataset {dataset!r} (known: digits)")
        _, test_idx = digits_split(int((art.manifest["model"].get("training") or {}).get("split_seed", 0)))
        x, y = digits_batch(test_idx, pre)
        ref, out = run_pairs(eager, runner.run, x, fixed, partial(check_input, art))
        metrics = compare(ref, out)
        y = y.numpy()
        metrics["top1"] = float((out.argmax(1) == y).mean())
        metrics["eager_top1"] = float((ref.argmax(1) == y).mean())
        metrics["drop_points"] = 100.0 * (metrics["eager_top1"] - metrics["top1"])
        metrics["max_drop_points"] = metrics["drop_points"]  # checked against the tolerance of the same name
        result["dataset"] = {"name": "digits", "split": "test", "size": int(len(test_idx))}
        tol = {k: v for k, v in tolerance_for(precision, tolerance).items() if k == "max_drop_points"}
    else:
        paths = image_paths(images) if images else bundled_photo_paths()
        ref, out = run_pairs(eager, runner.run, load_batch(paths, pre), fixed, partial(check_input, art))
        metrics = compare(ref, out)
        result["images"] = [str(p) for p in paths]
        tol = {k: v for k, v in tolerance_for(precision, tolerance).items() if k != "max_drop_points"}
        if precision == "fp32" and device not in (None, "cpu") and not any(
                (tolerance or {}).get(k) is not None for k in ("max_abs", "top1_agreement", "cosine")):
            tol = dict(CUDA_FP32_TOLERANCE)  # GPU sums in another order, TF32 convolutions: as at export
    failures = check_tolerance(metrics, tol)
    for name, a in (("artifact", out), ("eager reference", ref)):  # NaN/Inf outputs fail, named as such
        bad = int(np.size(a) - np.isfinite(a).sum())
        if bad:
            failures.append(f"{name} output holds {bad} NaN/Inf value(s)")
    metrics.pop("max_drop_points", None)
    return {**result, "metrics": metrics, "tolerance": tol, "failures": failures, "passed": not failures}
