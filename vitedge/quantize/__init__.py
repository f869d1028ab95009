"""Quantization recipes: int8 (post-training, calibrated on real images) and fp16, per target.

- ONNX (:mod:`vitedge.quantize.onnx`): ONNX Runtime static QDQ int8 with per-channel weights and MinMax /
  Percentile / Entropy calibration, or dynamic int8; fp16 by graph conversion with float32 I/O.
- TorchScript (:mod:`vitedge.quantize.pytorch`): PyTorch dynamic int8 of Linear layers; fp16 weights.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ..data import digits_batch, digits_split, image_paths, load_batch
from ..errors import ImageError, UsageError

__all__ = ["CALIBRATION_METHODS", "PRECISIONS", "calibration_data"]

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def calibration_data(source: str | os.PathLike, pre: dict, count: int = 128, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Calibration images as float32 (N, 3, H, W), preprocessed like the artifact's input.

    Args:
        source: ``"digits"`` (the digits TRAIN split only, never the test split) or a folder of images.
        count: how many images (the first ``count`` of a seeded shuffle).
    Returns:
        (images, description for the manifest: source, count, indices or file names).
    Raises:
        ImageError: empty folder or an unreadable image in it.  UsageError: count < 1.
    """
    if count < 1:
        raise UsageError(f"--calib-count must be >= 1, got {count}")
    if str(source) == "digits":
        train, _ = digits_split(seed)
        idx = np.random.default_rng(seed).permutation(train)[:count]
        x, _ = digits_batch(np.sort(idx), pre)
        return x, {"source": "digits", "split": "train", "split_seed": seed, "count": int(len(idx)),
                   "indices": [int(i) for i in np.sort(idx)]}
    try:
        paths = image_paths(source)
        paths = [paths[i] for i in np.random.default_rng(seed).permutation(len(paths))[:count]]
        x = load_batch(paths, pre)
    except ImageError as e:
        raise ImageError(f"calibration images: {e}") from None
    return x, {"source": str(source), "count": len(paths), "files": sorted(p.name for p in paths)}
