"""Shared fixtures: real photos (scikit-image's bundled set) preprocessed to a model's input size."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

if os.environ.get("PYTEST_XDIST_WORKER"):  # one intra-op thread per xdist worker: no oversubscription on 2 cores
    torch.set_num_threads(1)

from vitedge.data import bundled_photo_paths, load_batch, make_preprocessing  # noqa: E402


def photos(size, n: int | None = None) -> torch.Tensor:
    """The bundled photos as a float32 (N, 3, H, W) batch, ImageNet-normalised, at ``size`` (H, W)."""
    x = load_batch(bundled_photo_paths(), make_preprocessing(size))
    return x if n is None else x[torch.arange(n) % len(x)]


@pytest.fixture(autouse=True)
def _autograd_on():
    """Every test starts with autograd on. A test that trains (vit-pytorch's DistillWrapper on our student) failed in
    a full xdist run with "element 0 of tensors does not require grad" after another test in the same worker had left
    it off; restoring the process-wide mode keeps tests independent of their order."""
    torch.set_grad_enabled(True)
    yield
    if not torch.is_grad_enabled():  # name the culprit (seen once, not found yet) without failing the test
        warnings.warn("this test (or a library it called) left autograd switched off", RuntimeWarning, stacklevel=1)


@pytest.fixture(scope="session")
def photo_batch():
    """Factory fixture: ``photo_batch((H, W), n=None)``."""
    return photos
