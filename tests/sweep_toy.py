"""A toy model family for the sweep tests, registered when this module is imported (``vitedge sweep --plugin
sweep_toy``): every process of a sweep (the spawned pool's, Ray's workers) imports it, so the toy preset exists
there too. tests/ is on ``sys.path`` in the test process, and spawn passes ``sys.path`` to its children."""
from torch import nn

from vitedge.models.registry import FAMILIES, register_family, register_preset

FAMILY, PRESET = "sweeptoy", "sweeptoy_16"


class SweepToyNet(nn.Module):
    """Patch embedding, one residual GELU MLP over the tokens, a linear head over all tokens (position kept): a
    ViT-shaped model small enough to sweep in seconds that still learns the digits in a few epochs."""

    def __init__(self, image_size=16, patch_size=4, dim=16, num_classes=10):
        super().__init__()
        assert image_size % patch_size == 0
        self.embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim * (image_size // patch_size) ** 2, num_classes)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        return self.head((t + self.mlp(t)).flatten(1))


if FAMILY not in FAMILIES:
    register_family(FAMILY, SweepToyNet, size_arg=("image_size", "square"), small_config=dict(image_size=16),
                    small_input_size=(16, 16), recipes={"onnx_int8": {"mode": "static", "method": "minmax"}})
    register_preset(PRESET, FAMILY, dict(image_size=16, patch_size=4, dim=16, num_classes=10), (16, 16),
                    "Toy, a test 2026", "Nobody. A toy family.", note="registered by tests/sweep_toy.py")
