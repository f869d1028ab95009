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
    """Every test starts with autograd on, and a test that leaves it off is named (RuntimeWarning). The one seen,
    a model build stopped by vitedge.export's op budget inside an init's no_grad block, is fixed there; this keeps
    a new one from failing some later test in the same xdist worker instead of its own."""
    torch.set_grad_enabled(True)
    yield
    if not torch.is_grad_enabled():  # name the culprit without failing the test
        warnings.warn("this test (or a library it called) left autograd switched off", RuntimeWarning, stacklevel=1)


@pytest.fixture(scope="session")
def photo_batch():
    """Factory fixture: ``photo_batch((H, W), n=None)``."""
    return photos
