"""Load vit-pytorch's model files as the test oracle without running its package ``__init__``.

``import vit_pytorch`` imports ``dino`` and hence torchvision, which has no CPU build that imports beside
the torch 2.13.0 CPU wheel (ENVIRONMENT.md). The model files themselves import only torch and einops, so we
register an empty ``vit_pytorch`` package whose ``__path__`` points at the installed files and import
the submodules from it.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest


def oracle(module: str):
    """Return ``vit_pytorch.<module>`` (e.g. ``'vit'``, ``'levit'``, ``'mobile_vit'``), or skip the test."""
    if "vit_pytorch" not in sys.modules:
        spec = importlib.util.find_spec("vit_pytorch")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("vit-pytorch is not installed (pip install --no-deps vit-pytorch einops)")
        pkg = types.ModuleType("vit_pytorch")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["vit_pytorch"] = pkg
    return importlib.import_module(f"vit_pytorch.{module}")
