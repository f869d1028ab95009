"""SimpleViT (Beyer, Zhai, Kolesnikov, "Better plain ViT baselines for ImageNet-1k", 2022, arXiv 2205.01580).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.simple_vit.SimpleViT`` (vit-pytorch 1.x): the
same keyword arguments, the same parameter names, the same logits. The differences from the plain ViT are
a fixed 2-D sin-cos position embedding, global average pooling instead of a class token, no dropout, a
bias-free attention output projection and a single Linear head.

Written for export:

* the sin-cos position embedding is computed once at construction and kept as a *non-persistent* buffer
  (it follows ``.to(device)`` / ``.half()`` but is not in the ``state_dict``, exactly like the reference,
  which keeps it as a plain tensor attribute);
* the patch embedding is :class:`~vitedge.models.vit.Patchify` (rank <= 5, symbolic batch);
* attention is :func:`torch.nn.functional.scaled_dot_product_attention` (the reference's math is plain
  softmax(QK^T / sqrt(d)) V with no dropout or mask, so SDPA maps exactly).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_image, merge_heads, patch_grid, split_heads
from .vit import linear_patch_embedding

__all__ = ["SimpleViT", "SimpleAttention", "SimpleFeedForward", "SimpleTransformer", "posemb_sincos_2d"]


def posemb_sincos_2d(h: int, w: int, dim: int, temperature: int = 10000,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding, float (h*w, dim), rows in row-major (y, x) patch order.

    Columns are ``[sin(x*w), cos(x*w), sin(y*w), cos(y*w)]`` with ``dim // 4`` frequencies
    ``w_k = temperature ** -(k / (dim//4 - 1))`` (the reference's formula, computed with the same ops so the
    values are bit-identical).

    Raises:
        ValueError: ``dim`` is not a multiple of 4, or is 4 (a single frequency divides by zero -> NaN).
    """
    if dim % 4 or dim < 8:
        raise ValueError(f"feature dimension must be a multiple of 4 and at least 8 for the 2-D sincos position "
                         f"embedding, got dim={dim}")
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    omega = torch.arange(dim // 4) / (dim // 4 - 1)
    omega = 1.0 / (temperature ** omega)
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1).to(dtype)


class SimpleAttention(nn.Module):
    """Pre-norm multi-head self-attention with a bias-free output projection and no dropout.

    Matches ``vit_pytorch.simple_vit.Attention`` (keys ``norm``, ``to_qkv``, ``to_out``; ``to_out`` is a
    plain bias-free Linear, always present). Shape (..., N, dim) -> (..., N, dim), float.
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64):
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.to_out = nn.Linear(inner_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        q, k, v = (split_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.to_out(merge_heads(out))


class SimpleFeedForward(nn.Module):
    """Pre-norm MLP without dropout: LayerNorm -> Linear -> GELU -> Linear (keys ``net.0``, ``net.1``, ``net.3``).

    Shape (..., N, dim) -> (..., N, dim), float.
    """

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SimpleTransformer(nn.Module):
    """``depth`` residual (SimpleAttention, SimpleFeedForward) pairs, then a LayerNorm.

    Same parameter names and order as ``vit_pytorch.simple_vit.Transformer`` (``norm`` first, then
    ``layers``). Shape (..., N, dim) -> (..., N, dim).
    """

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([SimpleAttention(dim, heads, dim_head), SimpleFeedForward(dim, mlp_dim)])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


class SimpleViT(nn.Module):
    """SimpleViT classifier (Beyer et al. 2022, arXiv 2205.01580).

    Args (as ``vit_pytorch.simple_vit.SimpleViT``, keyword-only): image_size int or (H, W); patch_size int or
    (ph, pw) dividing it; num_classes; dim (a multiple of 4, >= 8, for the sincos embedding); depth; heads;
    mlp_dim; channels=3; dim_head=64.

    Input: float32 (B, channels, H, W) with exactly the constructor's H, W. Output: float32 logits
    (B, num_classes), from the mean of the final tokens.

    Raises:
        ValueError: image size not divisible by the patch size, or ``dim`` unusable for the 2-D sincos
            embedding (not a multiple of 4, or 4); in ``forward``, an input that is not (B, channels, H, W) at
            the constructor's size (:func:`~vitedge.models.layers.check_image`).
    """

    def __init__(self, *, image_size, patch_size, num_classes, dim, depth, heads, mlp_dim, channels=3, dim_head=64):
        super().__init__()
        self.image_size, self.patch_size, (nh, nw) = patch_grid(image_size, patch_size)
        self.in_channels = channels

        self.to_patch_embedding = linear_patch_embedding(channels, self.image_size, self.patch_size, dim)
        # A constant of the architecture; not in the state_dict (the reference does not save it either).
        self.register_buffer("pos_embedding", posemb_sincos_2d(nh, nw, dim), persistent=False)
        self.transformer = SimpleTransformer(dim, depth, heads, dim_head, mlp_dim)
        self.pool = "mean"
        self.to_latent = nn.Identity()
        self.linear_head = nn.Linear(dim, num_classes)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        check_image(self, img, self.in_channels, self.image_size)
        x = self.to_patch_embedding(img)
        x = x + self.pos_embedding.to(x.dtype)
        x = self.transformer(x)
        x = x.mean(dim=1)
        return self.linear_head(self.to_latent(x))
