"""Quantization recipes: int8 (post-training, calibrated on real images) and fp16, per target.

- ONNX (:mod:`vitedge.quantize.onnx`): ONNX Runtime static QDQ int8 with per-channel weights and MinMax /
  Percentile / Entropy calibration, or dynamic int8; fp16 by graph conversion with float32 I/O.
- TorchScript (:mod:`vitedge.quantize.pytorch`): PyTorch dynamic int8 of Linear layers; fp16 weights.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..data import DIGITS_LABELS, digits_batch, digits_split, labelled_image_paths, load_batch
from ..errors import ImageError, UsageError

__all__ = ["CALIBRATION_METHODS", "HELD_OUT_MAX", "PRECISIONS", "calibration_data", "calibration_split"]

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
HELD_OUT_MAX = 128  # held-out images parity runs on at export (the digits test split, or a quarter of a folder)


def calibration_split(source: str | os.PathLike, pre: dict, count: int = 128, seed: int = 0,
                      held_out: int = HELD_OUT_MAX) -> tuple[torch.Tensor, dict, dict | None]:
    """Calibration images and, from the same source, held-out images for the export's parity check.

    ``"digits"``: calibration on the digits TRAIN split (the first ``count`` of a seeded shuffle), held out: up to
    ``held_out`` images of the TEST split (seeded shuffle), labelled. A folder (images directly inside, or
    ImageFolder-style class subfolders: then labelled with the subfolder names): a seeded shuffle, of which a
    quarter (at least 1 of 2 or more images, at most ``held_out``) is held out and calibration takes up to
    ``count`` of the rest; a folder of one image has nothing to hold out (None: parity runs on the photos).

    Returns:
        (calibration float32 (N, 3, H, W), its description for the manifest (source, count, indices or file
        names), held-out set or None): ``{"images": float32 (M, 3, H, W), "labels": int64 (M,) or None,
        "class_names": list of str or None, "info": {"source", "split", "count", "labelled", ...}}``; the two
        never share an image.
    Raises:
        ImageError: a missing or empty folder, or an unreadable image in it (message starts "calibration images").
        UsageError: ``count`` < 1.
    """
    if count < 1:
        raise UsageError(f"--calib-count must be >= 1, got {count}")
    if str(source) == "digits":
        train, test = digits_split(seed)
        idx = np.sort(np.random.default_rng(seed).permutation(train)[:count])
        x, _ = digits_batch(idx, pre)
        hold = np.sort(np.random.default_rng(seed).permutation(test)[:held_out])
        hx, hy = digits_batch(hold, pre)
        held = {"images": hx, "labels": hy, "class_names": list(DIGITS_LABELS),
                "info": {"source": "digits", "split": "test", "split_seed": seed, "count": int(len(hold)),
                         "labelled": True}}
        return x, {"source": "digits", "split": "train", "split_seed": seed, "count": int(len(idx)),
                   "indices": [int(i) for i in idx]}, held
    try:
        paths, labels, names = labelled_image_paths(source)
        order = np.random.default_rng(seed).permutation(len(paths))
        n_held = 0 if len(paths) < 2 else min(held_out, max(1, len(paths) // 4))
        calib_idx, held_idx = sorted(order[n_held:][:count]), sorted(order[:n_held])
        x = load_batch([paths[i] for i in calib_idx], pre)
        held = None
        if held_idx:
            held = {"images": load_batch([paths[i] for i in held_idx], pre),
                    "labels": None if labels is None else torch.tensor([labels[i] for i in held_idx]),
                    "class_names": names,
                    "info": {"source": str(source), "split": "held out", "split_seed": seed,
                             "count": len(held_idx), "labelled": labels is not None,
                             "files": [_rel(paths[i], source) for i in held_idx]}}
    except ImageError as e:
        raise ImageError(f"calibration images: {e}") from None
    return x, {"source": str(source), "count": len(calib_idx),
               "files": sorted(_rel(paths[i], source) for i in calib_idx)}, held


def _rel(path, folder) -> str:
    """``path`` relative to ``folder`` as a POSIX string (``cat/1.png`` for a class subfolder)."""
    return Path(path).relative_to(Path(folder)).as_posix()


def calibration_data(source: str | os.PathLike, pre: dict, count: int = 128, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Calibration images as float32 (N, 3, H, W), preprocessed like the artifact's input: the first two items of
    :func:`calibration_split` (so never an image it holds out for parity).

    Args:
        source: ``"digits"`` (the digits TRAIN split only, never the test split) or a folder of images.
        count: how many images (the first ``count`` of a seeded shuffle).
    Returns:
        (images, description for the manifest: source, count, indices or file names).
    Raises:
        ImageError: empty folder or an unreadable image in it.  UsageError: count < 1.
    """
    x, info, _ = calibration_split(source, pre, count, seed)
    return x, info
