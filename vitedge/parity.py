"""Parity of an artifact against eager PyTorch: the metrics, the tolerances, and the runs that produce them.

One module for every caller: :func:`vitedge.export.export` (the check before an artifact is written),
:func:`vitedge.validate.validate` (the check of an artifact already written) and the targets that check an
intermediate file themselves (TensorRT's ONNX graph in ONNX Runtime).

Metrics (per output, over a batch of N samples): ``max_abs`` = max |a - r|; ``max_rel`` = max |a - r| / max |r|
(relative to the reference's largest magnitude, which stays meaningful for logits near zero);
``cosine`` = the smallest per-sample cosine similarity; ``top1_agreement`` = fraction of samples whose argmax
matches; ``top5_agreement`` = fraction whose top-5 index sets are equal.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from .data import bundled_photo_paths, load_batch, make_preprocessing
from .errors import ExportError

__all__ = ["CUDA_FP32_TOLERANCE", "DEFAULT_TOLERANCE", "PARITY_BATCHES", "check_batches", "check_tolerance",
           "compare", "eager_outputs", "export_tolerance", "parity_photos", "run_pairs", "tolerance_for"]

# Defaults by precision (fp32 max abs 1e-4 and 100% top-1; fp16 cosine 0.999; int8 cosine 0.99 and a 1.0-point
# drop). Keys: max_abs (<=), cosine (>=), top1_agreement (>=) on photos; max_drop_points (<=): top-1 drop in points
# vs fp32 eager on the digits test split.
DEFAULT_TOLERANCE = {
    "fp32": {"max_abs": 1e-4, "top1_agreement": 1.0, "max_drop_points": 1.0},
    "fp16": {"cosine": 0.999, "max_drop_points": 1.0},
    "int8": {"cosine": 0.99, "max_drop_points": 1.0},
    "bf16": {"cosine": 0.99, "max_drop_points": 1.0},
}
_UPPER = ("max_abs", "max_drop_points")
CUDA_FP32_TOLERANCE = {"cosine": 0.9999}  # fp32 artifact on CUDA vs fp32 eager on the CPU (see export's device)
PARITY_BATCHES = (1, 3, 8)  # the batches a dynamic-batch artifact is checked at


def tolerance_for(precision: str, overrides: dict | None = None) -> dict:
    """Default tolerance of ``precision`` updated with ``overrides`` (None values ignored)."""
    tol = dict(DEFAULT_TOLERANCE.get(precision, DEFAULT_TOLERANCE["fp32"]))
    tol.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return tol


def export_tolerance(precision: str, tol_abs: float = 1e-4, device: str = "cpu") -> dict:
    """The tolerance on photos an export must meet: :data:`CUDA_FP32_TOLERANCE` for fp32 on a CUDA device (GPU
    kernels sum in another order, cuDNN convolutions may use TF32), else the precision's default with
    ``max_abs = tol_abs`` for fp32; never ``max_drop_points`` (a dataset metric)."""
    if precision == "fp32" and device != "cpu":
        tol = dict(CUDA_FP32_TOLERANCE)
    else:
        tol = tolerance_for(precision, {"max_abs": tol_abs} if precision == "fp32" else None)
    tol.pop("max_drop_points", None)
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


def eager_outputs(model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """Every output of ``model(x)`` (a tensor or a tuple of them) as numpy arrays, under inference mode."""
    with torch.inference_mode():
        out = model(x)
    return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]


def parity_photos(example: torch.Tensor, preprocessing: dict | None = None) -> torch.Tensor:
    """The images a parity check runs on: the bundled photos, preprocessed with ``preprocessing`` (default
    ImageNet mean/std at the example's size), for a 3-channel ``example``; the example itself otherwise."""
    if example.shape[1] != 3:
        return example
    return load_batch(bundled_photo_paths(), preprocessing or make_preprocessing(tuple(example.shape[2:])))


def check_batches(model: nn.Module, run: Callable[[np.ndarray], list[np.ndarray]], photos: torch.Tensor,
                  batches, tol: dict, *, what: str, where: str = "on the bundled photos",
                  output_names: list[str] | None = None, shape_what: str | None = None) -> dict:
    """Eager ``model`` vs ``run`` (an artifact runner's ``run``) on ``photos`` at each batch of ``batches`` (photos
    repeated to fill a batch); stops at the first batch outside ``tol``.

    Args:
        what, where: name the checked thing in the failure message, "{what} differs from eager at batch {b}
            {where} (...); not written".
        output_names: check every output: their count and the first one's shape (message "{shape_what} gives
            output shape ..."), and ``max_abs`` over all of them (``outputs_max_abs`` per name). None: the first
            output only.
    Returns:
        ``{"batch_<b>": metrics}`` (:func:`compare`).
    Raises:
        ExportError: an output count or shape differs from eager's, or a batch is outside ``tol``.
    """
    results = {}
    for b in batches:
        x = photos[torch.arange(b) % photos.shape[0]].contiguous()
        ref, got = eager_outputs(model, x), run(x.numpy())
        if output_names is not None:
            if len(got) != len(ref) or got[0].shape != ref[0].shape:
                raise ExportError(f"{shape_what or what} gives output shape {got[0].shape} at batch {b}, eager "
                                  f"gives {ref[0].shape} (batch dimension specialised?)")
        m = compare(ref[0], got[0])
        if output_names is not None and len(ref) > 1:
            m["outputs_max_abs"] = {n: compare(r, g)["max_abs"] for n, r, g in zip(output_names, ref, got)}
            m["max_abs"] = max(m["max_abs"], *m["outputs_max_abs"].values())
        results[f"batch_{b}"] = m
        fails = check_tolerance(m, tol)
        if fails:
            raise ExportError(f"{what} differs from eager at batch {b} {where} ({'; '.join(fails)}); not written")
    return results


def run_pairs(eager: nn.Module, run: Callable[[np.ndarray], list[np.ndarray]], x: torch.Tensor, fixed: int,
              check: Callable[[np.ndarray], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eager and artifact first outputs over all of ``x`` in chunks of 64 (of ``fixed`` for a fixed-batch artifact,
    the last chunk padded by repeating images). ``check`` is called on each chunk's input before ``run`` (e.g. the
    artifact's input spec: shape, dtype, finite values)."""
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
        if check is not None:
            check(xa)
        outs.append(run(xa)[0][:n])
    return np.concatenate(refs), np.concatenate(outs)
