"""Pooling-based Vision Transformer, PiT (Heo, Yun, Han, Chun, Choe & Oh, "Rethinking Spatial Dimensions of
Vision Transformers", 2021, arXiv 2103.16302).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.pit.PiT`` (vit-pytorch 1.x): the same
keyword arguments, the same parameter names and shapes, the same logits. Written for export:

* the overlapping patch embedding (``nn.Unfold`` with stride ``patch_size // 2`` followed by a Linear) is
  computed as one strided ``Conv2d`` whose kernel is the Linear weight viewed as (dim, C, p, p): the same
  map, without the im2col tensor, and a single standard op in every runtime;
* token <-> feature-map conversions in the pooling layers are transpose + reshape with the grid sizes fixed
  at construction (no ``sqrt`` of a runtime length), the batch dimension is always ``-1``;
* attention is the shared SDPA :class:`~vitedge.models.layers.Transformer`; no einops, lambdas or
  data-dependent control flow in ``forward``; every tensor has rank <= 4.

Extension: ``image_size`` may also be a non-square ``(H, W)`` tuple (the reference takes a square int);
the position embedding then has ``oh * ow + 1`` rows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Transformer, check_image

__all__ = ["PiT", "PiTPool", "DepthWiseConv2d", "OverlappingPatchEmbedding", "conv_output_size"]


def conv_output_size(image_size: int, kernel_size: int, stride: int, padding: int = 0) -> int:
    """Output length of an unpadded (or ``padding``-padded) convolution / unfold: floor((n - k + 2p) / s) + 1."""
    return (image_size - kernel_size + 2 * padding) // stride + 1


def _down(n: int) -> int:
    """Output length of the 3x3, stride-2, padding-1 pooling convolution: ceil(n / 2)."""
    return (n + 1) // 2


class OverlappingPatchEmbedding(nn.Sequential):
    """Overlapping patches (kernel ``p``, stride ``p // 2``) projected to ``dim``: (B, C, H, W) -> (B, N, dim).

    Same map as vit-pytorch's ``Sequential(nn.Unfold(p, stride=p // 2), Rearrange('b c n -> b n c'),
    nn.Linear(C * p * p, dim))``, with N = oh * ow, oh = (H - p) // (p // 2) + 1 (likewise ow). Unfold orders
    a patch as (c, kh, kw), which is exactly a Conv2d weight's layout, so the Linear weight viewed as
    (dim, C, p, p) is the kernel of an equivalent strided convolution. Items 0 and 1 are parameter-free
    placeholders for the Unfold and the Rearrange so the Linear keeps its state_dict key ``2``.
    """

    def __init__(self, channels: int, patch_size: int, dim: int):
        super().__init__(nn.Identity(), nn.Identity(), nn.Linear(channels * patch_size ** 2, dim))
        self.channels = channels
        self.patch_size = patch_size
        self.stride = patch_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj: nn.Linear = self[2]
        p = self.patch_size
        weight = proj.weight.reshape(proj.out_features, self.channels, p, p)
        x = F.conv2d(x, weight, proj.bias, stride=self.stride)          # b, dim, oh, ow
        return x.flatten(2).transpose(1, 2)                              # b, oh*ow, dim


class DepthWiseConv2d(nn.Module):
    """Depthwise ``kernel_size`` conv (channel multiplier ``dim_out // dim_in``) then a pointwise conv.

    As ``vit_pytorch.pit.DepthWiseConv2d`` (keys ``net.0``, ``net.1``).
    (B, dim_in, H, W) -> (B, dim_out, (H + 2 * padding - kernel_size) // stride + 1, ...), float32.
    """

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int, padding: int, stride: int, bias: bool = True):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(dim_in, dim_out, kernel_size=kernel_size, padding=padding, groups=dim_in, stride=stride,
                      bias=bias),
            nn.Conv2d(dim_out, dim_out, kernel_size=1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PiTPool(nn.Module):
    """PiT pooling layer: doubles the width and halves the token grid (``vit_pytorch.pit.Pool``).

    The class token goes through ``cls_ff`` (Linear dim -> 2 dim); the patch tokens are laid back onto their
    (h, w) grid, pass a 3x3 stride-2 depthwise conv (dim -> 2 dim) + 1x1 conv, and are flattened again.

    Input: float32 (B, 1 + h*w, dim) with (h, w) == ``grid`` given at construction.
    Output: float32 (B, 1 + ceil(h/2)*ceil(w/2), 2*dim).
    """

    def __init__(self, dim: int, grid: tuple[int, int]):
        super().__init__()
        self.dim = dim
        self.h, self.w = grid
        self.downsample = DepthWiseConv2d(dim, dim * 2, kernel_size=3, stride=2, padding=1)
        self.cls_ff = nn.Linear(dim, dim * 2)

    @property
    def out_grid(self) -> tuple[int, int]:
        """Token grid after pooling: (ceil(h / 2), ceil(w / 2))."""
        return _down(self.h), _down(self.w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls_token = self.cls_ff(x[:, :1])
        tokens = x[:, 1:].transpose(1, 2).reshape(-1, self.dim, self.h, self.w)   # b, dim, h, w
        tokens = self.downsample(tokens).flatten(2).transpose(1, 2)               # b, h'*w', 2 dim
        return torch.cat((cls_token, tokens), dim=1)


class PiT(nn.Module):
    """PiT image classifier (Heo et al. 2021, arXiv 2103.16302), vit-pytorch's variant.

    Args (as ``vit_pytorch.pit.PiT``, keyword-only):
        image_size: int side of a square input (the reference's only form), or an (H, W) tuple (extension);
            divisible by ``patch_size``.
        patch_size: int >= 2; patches of ``patch_size`` with stride ``patch_size // 2`` (overlapping).
        num_classes: logits size.
        dim: width of the first stage; it doubles at every pooling layer.
        depth: tuple of transformer depths, one per stage (``len(depth) - 1`` pooling layers).
        heads: int, or a tuple with one entry per stage.
        mlp_dim: MLP hidden size (the same in every stage, as in vit-pytorch).
        dim_head, dropout, emb_dropout, channels: as vit-pytorch's ViT.

    Input: float32 (B, channels, H, W) with exactly the constructor's (H, W); B is free (symbolic under
    tracing and export). Output: float32 logits (B, num_classes).

    Raises:
        ValueError: image size not divisible by ``patch_size``, ``patch_size < 2``, ``depth`` not a
            non-empty tuple, ``heads`` a tuple of another length than ``depth`` (the reference silently
            drops the extra stages), or a patch larger than the image; in ``forward``, an input that is not
            (B, channels, H, W) at the constructor's size (:func:`~vitedge.models.layers.check_image`).
    """

    def __init__(self, *, image_size, patch_size, num_classes, dim, depth, heads, mlp_dim, dim_head=64,
                 dropout=0., emb_dropout=0., channels=3):
        super().__init__()
        ih, iw = image_size if isinstance(image_size, tuple) else (image_size, image_size)
        if not isinstance(patch_size, int) or patch_size < 2:
            raise ValueError(f"patch_size must be an int >= 2 (the unfold stride is patch_size // 2), "
                             f"got {patch_size!r}")
        if ih % patch_size or iw % patch_size:
            raise ValueError(f"image size {(ih, iw)} must be divisible by the patch size {patch_size}")
        if not isinstance(depth, tuple) or not depth:
            raise ValueError("depth must be a tuple of integers, specifying the number of blocks before each "
                             f"downsizing, got {depth!r}")
        heads = heads if isinstance(heads, tuple) else (heads,) * len(depth)
        if len(heads) != len(depth):
            raise ValueError(f"heads must be an int or a tuple of len(depth)={len(depth)}, got {heads!r}")
        self.image_size = (ih, iw)
        self.in_channels = channels

        stride = patch_size // 2
        oh, ow = conv_output_size(ih, patch_size, stride), conv_output_size(iw, patch_size, stride)
        num_patches = oh * ow

        self.to_patch_embedding = OverlappingPatchEmbedding(channels, patch_size, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(emb_dropout)

        layers: list[nn.Module] = []
        grid = (oh, ow)
        for ind, (layer_depth, layer_heads) in enumerate(zip(depth, heads)):
            layers.append(Transformer(dim, layer_depth, layer_heads, dim_head, mlp_dim, dropout, final_norm=False))
            if ind < len(depth) - 1:
                pool = PiTPool(dim, grid)
                layers.append(pool)
                grid = pool.out_grid
                dim *= 2
        self.layers = nn.Sequential(*layers)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def features(self, img: torch.Tensor) -> torch.Tensor:
        """Final tokens: (B, C, H, W) -> (B, 1 + h*w, dim * 2**(len(depth) - 1)) float32, class token first.

        Raises:
            ValueError: ``img`` is not (B, channels, H, W) at the constructor's size
                (:func:`~vitedge.models.layers.check_image`).
        """
        check_image(self, img, self.in_channels, self.image_size)
        x = self.to_patch_embedding(img)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self.pos_embedding
        return self.layers(self.dropout(x))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.mlp_head(self.features(img)[:, 0])
