"""vit-pytorch's model files as the test oracle (loaded by :mod:`vitedge.models.upstream`, which skips the
package ``__init__`` and its torchvision import); a test that needs one is skipped when it is not installed."""
from __future__ import annotations

import pytest

from vitedge.errors import RuntimeMissingError
from vitedge.models.upstream import upstream_module


def oracle(module: str):
    """Return ``vit_pytorch.<module>`` (e.g. ``'vit'``, ``'levit'``, ``'mobile_vit'``), or skip the test."""
    try:
        return upstream_module(module)
    except RuntimeMissingError as e:
        pytest.skip(str(e))
