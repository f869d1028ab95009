"""The ``vit-pytorch`` counterpart of each zoo family: the test oracle and the "done by hand" peer of the speed
comparison (benchmarks/compare.py). Nothing in vitedge's export path imports it.

``import vit_pytorch`` runs the package ``__init__``, which imports ``dino`` and hence torchvision, which has no
CPU build that imports beside the torch 2.13.0 CPU wheel (torchvision from PyPI fails with "operator torchvision::nms does not exist"). The model files themselves import only
torch and einops, so :func:`upstream_module` registers an empty ``vit_pytorch`` package whose ``__path__`` points
at the installed files and imports the submodules from it.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from ..errors import RuntimeMissingError, UsageError

__all__ = ["UPSTREAM", "upstream_class", "upstream_module"]

# zoo family -> (vit_pytorch submodule, class): the class each vitedge family mirrors (same constructor arguments,
# same state_dict keys).
UPSTREAM = {
    "vit": ("vit", "ViT"), "simple_vit": ("simple_vit", "SimpleViT"), "distillable_vit": ("distill", "DistillableViT"),
    "deepvit": ("deepvit", "DeepViT"), "cait": ("cait", "CaiT"), "pit": ("pit", "PiT"), "cvt": ("cvt", "CvT"),
    "twins_svt": ("twins_svt", "TwinsSVT"), "t2t": ("t2t", "T2TViT"), "cct": ("cct", "CCT"),
    "cross_vit": ("cross_vit", "CrossViT"), "ats": ("ats_vit", "ViT"), "crossformer": ("crossformer", "CrossFormer"),
    "regionvit": ("regionvit", "RegionViT"), "nest": ("nest", "NesT"), "mobilevit": ("mobile_vit", "MobileViT"),
    "levit": ("levit", "LeViT"),
}


def upstream_module(module: str):
    """``vit_pytorch.<module>`` (e.g. ``"vit"``, ``"levit"``, ``"mobile_vit"``) without the package ``__init__``.

    Raises:
        RuntimeMissingError: vit-pytorch (or einops) is not installed.
    """
    if "vit_pytorch" not in sys.modules:
        spec = importlib.util.find_spec("vit_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeMissingError("vit-pytorch is not installed (pip install --no-deps vit-pytorch einops)")
        pkg = types.ModuleType("vit_pytorch")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["vit_pytorch"] = pkg
    try:
        return importlib.import_module(f"vit_pytorch.{module}")
    except ImportError as e:
        raise RuntimeMissingError(f"cannot import vit_pytorch.{module}: {e}") from None


def upstream_class(family: str):
    """The vit-pytorch class a zoo family mirrors. Raises UsageError (unknown family), RuntimeMissingError."""
    if family not in UPSTREAM:
        raise UsageError(f"no vit-pytorch counterpart known for family {family!r}")
    module, cls = UPSTREAM[family]
    return getattr(upstream_module(module), cls)
