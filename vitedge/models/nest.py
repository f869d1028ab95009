"""NesT (Zhang et al., "Nested Hierarchical Transformer: Towards Accurate, Data-Efficient and Interpretable Visual
Understanding", 2021, arXiv 2105.12723; also published as "Aggregating Nested Transformers").

Constructor- and ``state_dict``-compatible with ``vit_pytorch.nest.NesT`` (vit-pytorch 1.x): the same keyword
arguments, the same parameter names and shapes, the same logits. Written for export:

* the patch embedding is :class:`~vitedge.models.vit.Patchify` (rank <= 5) followed by channel-last norms and
  the 1x1 conv as a ``linear``;
* block partitioning ``'b c (b1 h) (b2 w) -> (b b1 b2) c h w'`` and its inverse are rank-4 reshape/transpose
  chains on channel-last tensors, with the batch always ``-1``; every block size is fixed at construction
  from ``image_size``;
* attention is SDPA on 4-D q/k/v (B*blocks, heads, tokens, dim_head); no einops or lambdas.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .crossformer import ChannelLastSequential, merge_heads, pointwise, window_partition, window_reverse
from .layers import ChanLayerNorm, GlobalAvgPool, check_image, split_heads
from .vit import Patchify

__all__ = ["NesT", "NesTAttention", "NesTFeedForward", "NesTTransformer", "PatchEmbedding", "Aggregate"]


def _cast_tuple(val, depth: int) -> tuple:
    """``val`` if it is a tuple, else ``(val,) * depth`` (vit-pytorch's ``cast_tuple``)."""
    return val if isinstance(val, tuple) else ((val,) * depth)


class NesTFeedForward(nn.Module):
    """Conv MLP on channel-last tokens: ChanLayerNorm -> 1x1 Conv(dim, dim*mult) -> GELU -> Dropout -> 1x1 Conv ->
    Dropout (keys ``net.0, net.1, net.4``). Shape (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, mlp_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = ChannelLastSequential(
            ChanLayerNorm(dim), nn.Conv2d(dim, dim * mlp_mult, 1), nn.GELU(), nn.Dropout(dropout),
            nn.Conv2d(dim * mlp_mult, dim, 1), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class NesTAttention(nn.Module):
    """Pre-norm multi-head self-attention inside one block, ``dim_head = dim // heads``.

    Parameters as ``vit_pytorch.nest.Attention``: ``norm`` (:class:`ChanLayerNorm`), bias-free 1x1 ``to_qkv``,
    ``to_out`` = 1x1 Conv + Dropout, used as ``linear`` on channel-last tokens. Input and output: float
    (B*blocks, N, dim).
    """

    def __init__(self, dim: int, heads: int = 8, dropout: float = 0.0):
        super().__init__()
        dim_head = dim // heads
        inner_dim = dim_head * heads
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.attn_dropout = dropout
        self.norm = ChanLayerNorm(dim)
        self.to_qkv = nn.Conv2d(dim, inner_dim * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(inner_dim, dim, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm.forward_last(x)
        q, k, v = (split_heads(t, self.heads) for t in pointwise(self.to_qkv, x).chunk(3, dim=-1))
        p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=self.scale)
        return self.to_out[1](pointwise(self.to_out[0], merge_heads(out)))


class NesTTransformer(nn.Module):
    """Position embedding (one learned scalar per block position, shared by all channels) then ``depth`` x
    (attention, MLP), residual. Shape (B*blocks, seq_len, dim) -> same, float."""

    def __init__(self, dim: int, seq_len: int, depth: int, heads: int, mlp_mult: int, dropout: float = 0.0):
        super().__init__()
        self.pos_emb = nn.Parameter(torch.randn(seq_len))
        self.layers = nn.ModuleList(
            nn.ModuleList([NesTAttention(dim, heads=heads, dropout=dropout),
                           NesTFeedForward(dim, mlp_mult, dropout=dropout)])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_emb.unsqueeze(-1)
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x


class PatchEmbedding(nn.Sequential):
    """(B, C, S, S) -> (B, dim, S/p, S/p): patches in (p1, p2, c) order -> ChanLayerNorm -> 1x1 Conv ->
    ChanLayerNorm (keys ``1, 2, 3`` as vit-pytorch's ``to_patch_embedding``), computed on channel-last tokens."""

    def __init__(self, channels: int, image_size: int, patch_size: int, dim: int):
        patch_dim = channels * patch_size ** 2
        super().__init__(Patchify(channels, (image_size, image_size), (patch_size, patch_size)),
                         ChanLayerNorm(patch_dim), nn.Conv2d(patch_dim, dim, 1), ChanLayerNorm(dim))
        self.fmap_size = image_size // patch_size
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self[0](x)                                                     # b, (h w), p1*p2*c
        x = self[3].forward_last(pointwise(self[2], self[1].forward_last(x)))
        return x.transpose(1, 2).reshape(-1, self.dim, self.fmap_size, self.fmap_size)


class Aggregate(nn.Sequential):
    """Block aggregation: 3x3 Conv -> ChanLayerNorm -> 3x3 stride-2 max pool, on (B, C, H, W) ->
    (B, dim_out, ceil(H/2), ceil(W/2)); keys ``0, 1`` as vit-pytorch's ``Aggregate``."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__(nn.Conv2d(dim, dim_out, 3, padding=1), ChanLayerNorm(dim_out),
                         nn.MaxPool2d(3, stride=2, padding=1))


class NesT(nn.Module):
    """NesT image classifier (Zhang et al. 2021, arXiv 2105.12723), vit-pytorch's variant.

    Args (as ``vit_pytorch.nest.NesT``, keyword-only):
        image_size: side S of the square input (an int; a square (S, S) tuple is accepted too).
        patch_size: p, dividing S. num_classes. dim, heads: width and heads of the finest hierarchy, doubled
            at each coarser one. num_hierarchies: n; the finest level has 4**(n-1) blocks. block_repeats: int
            or n-tuple, transformer depth per hierarchy (finest first). mlp_mult, channels, dropout.
            dim_head: accepted and ignored, as in the reference (the head width is dim // heads).

    Input: float32 (B, channels, S, S), exactly the constructor's size; B is free (symbolic under tracing
    and export). Output: logits (B, num_classes).

    Raises:
        ValueError: a non-square ``image_size``, ``image_size`` not divisible by ``patch_size``, a patch grid
            not divisible by 2**(num_hierarchies-1) blocks, or ``block_repeats`` shorter than num_hierarchies;
            from ``forward``, an input of another size or channel count (:func:`~vitedge.models.layers.check_image`).
    """

    def __init__(self, *, image_size, patch_size, num_classes, dim, heads, num_hierarchies, block_repeats,
                 mlp_mult=4, channels=3, dim_head=64, dropout=0.):
        super().__init__()
        if isinstance(image_size, tuple):
            if len(image_size) != 2 or image_size[0] != image_size[1]:
                raise ValueError(f"NesT takes square images: image_size must be an int or (S, S), got {image_size!r}")
            image_size = image_size[0]
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} must be divisible by the patch size {patch_size}")
        fmap_size = image_size // patch_size
        blocks = 2 ** (num_hierarchies - 1)
        if fmap_size % blocks:
            raise ValueError(f"the {fmap_size}x{fmap_size} patch grid must be divisible into {blocks}x{blocks} blocks "
                             f"(num_hierarchies={num_hierarchies})")
        block_repeats = _cast_tuple(block_repeats, num_hierarchies)
        if len(block_repeats) < num_hierarchies:        # extra entries are ignored, as by the reference's zip
            raise ValueError(f"block_repeats must be an int or a tuple of (at least) {num_hierarchies}, "
                             f"got {block_repeats!r}")
        self.image_size = image_size
        self.in_channels = channels
        self.block_side = fmap_size // blocks           # tokens per block side, the same at every hierarchy
        seq_len = self.block_side ** 2

        hierarchies = list(reversed(range(num_hierarchies)))
        mults = [2 ** i for i in reversed(hierarchies)]
        layer_heads = [m * heads for m in mults]
        layer_dims = [m * dim for m in mults]
        last_dim = layer_dims[-1]
        layer_dims = [*layer_dims, layer_dims[-1]]

        self.to_patch_embedding = PatchEmbedding(channels, image_size, patch_size, layer_dims[0])
        self.layers = nn.ModuleList(
            nn.ModuleList([
                NesTTransformer(dim_in, seq_len, depth, h, mlp_mult, dropout),
                Aggregate(dim_in, dim_out) if level else nn.Identity(),
            ])
            for level, h, dim_in, dim_out, depth in zip(hierarchies, layer_heads, layer_dims[:-1], layer_dims[1:],
                                                       block_repeats)
        )
        # blocks per side at each hierarchy, finest first: 2**level
        self.blocks_per_side = [2 ** level for level in hierarchies]
        self.mlp_head = nn.Sequential(ChanLayerNorm(last_dim), GlobalAvgPool(), nn.Linear(last_dim, num_classes))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        check_image(self, img, self.in_channels, (self.image_size, self.image_size))
        s = self.block_side
        x = self.to_patch_embedding(img)                                        # b, d, h, w
        for (transformer, aggregate), nb in zip(self.layers, self.blocks_per_side):
            x = window_partition(x.permute(0, 2, 3, 1), s, s)                   # b*nb*nb, s*s, d
            x = transformer(x)
            x = window_reverse(x, s, s, nb * s, nb * s).permute(0, 3, 1, 2)     # b, d, nb*s, nb*s
            x = aggregate(x)
        return self.mlp_head(x)
