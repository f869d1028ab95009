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

__all__ = ["DEFAULT_TOLERANCE", "check_tolerance", "compare", "tolerance_for", "validate"]

# Defaults by precision (fp32 max abs 1e-4 and 100% top-1; fp16 cosine 0.999; int8 cosine 0.99 and a 1.0-point drop). Keys: max_abs (<=), cosine (>=), top1_agreement (>=) on photos;
# max_drop_points (<=): top-1 drop in points vs fp32 eager on the digits test split.
DEFAULT_TOLERANCE = {
    "fp32": {"max_abs": 1e-4, "top1_agreement": 1.0, "max_drop_points": 1.0},
    "fp16": {"cosine": 0.999, "max_drop_points": 1.0},
    "int8": {"cosine": 0.99, "max_drop_points": 1.0},
    "bf16": {"cosine": 0.99, "max_drop_points": 1.0},
}
_UPPER = ("max_abs", "max_drop_points")


def tolerance_for(precision: str, overrides: dict | None = None) -> dict:
    """Default tolerance of ``precision`` updated with ``overrides`` (None values ignored)."""
    tol = dict(DEFAULT_TOLERANCE.get(precision, DEFAULT_TOLERANCE["fp32"]))
    tol.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return tol


def check_tolerance(metrics: dict, tol: dict) -> list[str]:
    """Human-readable failures of ``metrics`` against ``tol`` (empty when within tolerance)."""
    fails = []
    for key, bound in tol.items():
        if key not in metrics:
            continue
        v = metrics[key]
        if (key in _UPPER and not v <= bound) or (key not in _UPPER and not v >= bound):
            fails.append(f"{key} {v:.4g} {'>' if key in _UPPER else '<'} {bound:g}")
    return fails


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


def _run_pairs(eager, runner, x: "torch.Tensor", fixed: int, art=None):
    """Eager and artifact first outputs over ``x`` in chunks (padded to a fixed batch if the artifact has one).
    With ``art``, each chunk is checked against its input spec first (shape, dtype, finite values)."""
    import torch
    from .runtime import check_input
    refs, outs = [], []
    step = fixed if fixed > 0 else 64
    for i in range(0, len(x), step):
        xb = x[i:i + step]
        n = len(xb)
        if fixed > 0 and n < fixed:  # fixed-batch artifact: pad the last chunk by repeating images
            xb = xb[torch.arange(fixed) % n]
        with torch.inference_mode():
            r = eager(xb)
        r = r[0] if isinstance(r, (tuple, list)) else r
        refs.append(r.numpy()[:n])
        xa = np.ascontiguousarray(xb.numpy())
        if art is not None:
            check_input(art, xa)
        outs.append(runner.run(xa)[0][:n])
    return np.concatenate(refs), np.concatenate(outs)


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
    from .data import bundled_photo_paths, image_paths, load_batch
    from .export import build_model
    from .runtime import open_artifact

    art, runner = open_artifact(path, threads=threads, verify=verify, trusted_keys=trusted_keys,
                                trust_code=trust_code, device=device)
    eager = model.eval() if model is not None else build_model(art.manifest.get("model") or {})
    pre = art.manifest["preprocessing"]
    fixed = art.manifest["inputs"][0]["shape"][0]
    precision = art.manifest.get("precision", "fp32")
    result = {"artifact": str(art.path), "target": art.manifest["target"], "runtime": runner.runtime,
              "precision": precision}
    if dataset is not None:
        from .data import digits_batch, digits_split
        from .errors import UsageError
        if dataset != "digits":
            raise UsageError(f"unknown dataset {dataset!r} (known: digits)")
        _, test_idx = digits_split(int((art.manifest["model"].get("training") or {}).get("split_seed", 0)))
        x, y = digits_batch(test_idx, pre)
        ref, out = _run_pairs(eager, runner, x, fixed, art)
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
        ref, out = _run_pairs(eager, runner, load_batch(paths, pre), fixed, art)
        metrics = compare(ref, out)
        result["images"] = [str(p) for p in paths]
        tol = {k: v for k, v in tolerance_for(precision, tolerance).items() if k != "max_drop_points"}
        if precision == "fp32" and device not in (None, "cpu") and not any(
                (tolerance or {}).get(k) is not None for k in ("max_abs", "top1_agreement", "cosine")):
            from .export import CUDA_FP32_TOLERANCE  # GPU sums in another order, TF32 convolutions: as at export
            tol = dict(CUDA_FP32_TOLERANCE)
    failures = check_tolerance(metrics, tol)
    for name, a in (("artifact", out), ("eager reference", ref)):  # NaN/Inf outputs fail, named as such
        bad = int(np.size(a) - np.isfinite(a).sum())
        if bad:
            failures.append(f"{name} output holds {bad} NaN/Inf value(s)")
    metrics.pop("max_drop_points", None)
    return {**result, "metrics": metrics, "tolerance": tol, "failures": failures, "passed": not failures}
