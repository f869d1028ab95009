"""Parity of an artifact against eager PyTorch on real images.

Metrics (per output, over a batch of N samples): ``max_abs`` = max |a - r|; ``max_rel`` = max |a - r| / max |r|
(relative to the reference's largest magnitude, which stays meaningful for logits near zero);
``cosine`` = the smallest per-sample cosine similarity; ``top1_agreement`` = fraction of samples whose argmax
matches; ``top5_agreement`` = fraction whose top-5 index sets are equal.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_TOLERANCE", "compare", "validate"]

DEFAULT_TOLERANCE = {"fp32": {"max_abs": 1e-4, "top1_agreement": 1.0}}


def compare(ref: np.ndarray, out: np.ndarray) -> dict:
    """Parity metrics of ``out`` against ``ref``, both float arrays (N, K). See the module docstring."""
    ref = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    out = np.asarray(out, dtype=np.float64).reshape(len(out), -1)
    diff = np.abs(ref - out)
    scale = max(float(np.abs(ref).max()), 1e-12)
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.where(denom > 0, (ref * out).sum(1) / np.maximum(denom, 1e-300), 1.0)
    k = min(5, ref.shape[1])
    top_r = np.sort(np.argsort(-ref, axis=1)[:, :k], axis=1)
    top_o = np.sort(np.argsort(-out, axis=1)[:, :k], axis=1)
    return {"max_abs": float(diff.max()), "max_rel": float(diff.max() / scale), "cosine": float(cos.min()),
            "top1_agreement": float((ref.argmax(1) == out.argmax(1)).mean()),
            "top5_agreement": float((top_r == top_o).all(1).mean()), "samples": int(len(ref))}


def validate(path: str | os.PathLike, *, images: str | os.PathLike | None = None, model=None,
             tolerance: dict | None = None, threads: int | None = None, verify: bool = True) -> dict:
    """Run an artifact in its runtime and eager PyTorch on the same preprocessed real images.

    Args:
        path: artifact directory (or its manifest / main file).
        images: folder of JPEG/PNG files; default the photos bundled with scikit-image.
        model: the eager ``nn.Module`` to compare with; default rebuilt from the manifest.
        tolerance: ``{"max_abs": float, "top1_agreement": float}``; default by precision (fp32: 1e-4, 100%).
        verify: check the manifest's SHA-256 of every file before loading.
    Returns:
        ``{"artifact", "target", "runtime", "images", "metrics": {...}, "tolerance", "passed": bool}``.
    Raises:
        ArtifactError, ImageError, RuntimeMissingError, VitedgeError: with a one-line message.
    """
    import torch

    from .data import bundled_photo_paths, image_paths, load_batch
    from .export import build_model
    from .runtime import open_artifact

    art, runner = open_artifact(path, threads=threads, verify=verify)
    paths = image_paths(images) if images else bundled_photo_paths()
    x = load_batch(paths, art.manifest["preprocessing"])
    fixed = art.manifest["inputs"][0]["shape"][0]
    eager = model.eval() if model is not None else build_model(art.manifest["model"])
    refs, outs = [], []
    step = fixed if fixed > 0 else len(x)
    for i in range(0, len(x), step):
        xb = x[i:i + step]
        if fixed > 0 and len(xb) < fixed:  # fixed-batch artifact: pad the last chunk by repeating images
            xb = xb[torch.arange(fixed) % len(xb)]
        with torch.inference_mode():
            r = eager(xb)
        r = r[0] if isinstance(r, (tuple, list)) else r
        n = min(step, len(x) - i)
        refs.append(r.numpy()[:n])
        outs.append(runner.run(xb.numpy())[0][:n])
    metrics = compare(np.concatenate(refs), np.concatenate(outs))
    tol = {**DEFAULT_TOLERANCE.get(art.manifest.get("precision", "fp32"), DEFAULT_TOLERANCE["fp32"]),
           **(tolerance or {})}
    passed = metrics["max_abs"] <= tol["max_abs"] and metrics["top1_agreement"] >= tol["top1_agreement"]
    return {"artifact": str(art.path), "target": art.manifest["target"], "runtime": runner.runtime,
            "precision": art.manifest.get("precision", "fp32"),
            "images": [str(p) for p in paths], "metrics": metrics, "tolerance": tol, "passed": bool(passed)}
