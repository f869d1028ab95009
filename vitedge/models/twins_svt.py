"""Twins-SVT (Chu, Tian, Wang, Zhang, Ren, Wei, Xia & Shen, "Twins: Revisiting the Design of Spatial Attention
in Vision Transformers", 2021, arXiv 2104.13840).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.twins_svt.TwinsSVT`` (vit-pytorch 1.x): the
same keyword arguments, the same parameter names and shapes, the same logits. Written for export:

* the patch merging ``'b c (h p1) (w p2) -> b (c p1 p2) h w'`` and the window partition / merge of the
  locally-grouped self-attention are reshape/permute chains whose tensors never exceed rank 5 (Core ML's
  limit); the batch dimension is always ``-1`` (never read into a Python int);
* the 1x1 q/k/v projections of the local attention run once on the whole map (they are pointwise, so
  this equals projecting each window) and q, k, v are partitioned together in one pass;
* attention is :func:`torch.nn.functional.scaled_dot_product_attention` on rank-4 (B', heads, N, d)
  tensors (windows folded into the batch); no einops, lambdas, ``**kwargs`` or data-dependent control
  flow in ``forward``.

The model is fully convolutional, as the reference (no ``image_size`` argument): the spatial sizes are
read from the input's shape (static under export, where only the batch is dynamic). At every stage the
feature map must be divisible by that stage's ``patch_size`` and, for the stages with local attention
(all but the last), by its ``local_patch_size``; ``forward`` raises ``ValueError`` otherwise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cvt import ConvFeedForward
from .layers import ChannelLayerNorm, GlobalAvgPool, check_image

__all__ = ["TwinsSVT", "PatchEmbedding", "PEG", "LocalAttention", "GlobalAttention", "TwinsTransformer",
           "Residual", "space_to_depth", "window_partition", "window_merge"]

_STAGES = ("s1", "s2", "s3", "s4")
_STAGE_KEYS = ("emb_dim", "patch_size", "local_patch_size", "global_k", "depth")


def space_to_depth(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, h*p, w*p) -> (B, C*p*p, h, w) with channels ordered (c, p1, p2) (rank <= 5).

    Same result as einops ``'b c (h p1) (w p2) -> b (c p1 p2) h w'`` and ``F.pixel_unshuffle(x, p)``, whose
    decomposition would use a rank-6 tensor.
    """
    c, hh, ww = x.shape[1], x.shape[2], x.shape[3]
    h, w = hh // p, ww // p
    x = x.reshape(-1, c, h, p, ww).permute(0, 1, 3, 2, 4)            # b, c, p1, h, W
    x = x.reshape(-1, c * p, h, w, p).permute(0, 1, 4, 2, 3)         # b, c*p1, p2, h, w
    return x.reshape(-1, c * p * p, h, w)


def window_partition(x: torch.Tensor, p: int, groups: int) -> torch.Tensor:
    """(B, groups*d, nh*p, nw*p) -> (B*nh*nw, groups, p*p, d): non-overlapping p x p windows as sequences.

    ``groups`` splits the channels (heads, or q/k/v x heads) with the group index major, as einops
    ``'b (h d) p1 p2 -> b h (p1 p2) d'`` applied to each window. Windows are ordered (b, nh, nw); every
    intermediate tensor has rank <= 5 and the batch dimension stays symbolic.
    """
    c, hh, ww = x.shape[1], x.shape[2], x.shape[3]
    nh, nw = hh // p, ww // p
    x = x.reshape(-1, c, nh, p, ww).permute(0, 2, 1, 3, 4)           # b, nh, c, p1, W
    x = x.reshape(-1, c, p, nw, p).permute(0, 3, 1, 2, 4)            # b*nh, nw, c, p1, p2
    return x.reshape(-1, groups, c // groups, p * p).transpose(-1, -2)


def window_merge(x: torch.Tensor, p: int, nh: int, nw: int) -> torch.Tensor:
    """(B*nh*nw, heads, p*p, d) -> (B, heads*d, nh*p, nw*p), the inverse of :func:`window_partition` (rank <= 5)."""
    c = x.shape[1] * x.shape[3]
    x = x.transpose(-1, -2).reshape(-1, nw, c, p, p)                 # b*nh, nw, c, p1, p2
    x = x.permute(0, 2, 3, 1, 4).reshape(-1, nh, c, p, nw * p)       # b, nh, c, p1, W
    return x.permute(0, 2, 1, 3, 4).reshape(-1, c, nh * p, nw * p)


def _check_divisible(h, w, p: int, what: str) -> None:
    """Raise ValueError unless the (h, w) map is divisible by ``p``. Shapes are static under export; under
    ``torch.jit.trace`` they are traced values, so the check is skipped there (no TracerWarning)."""
    if not torch.jit.is_tracing() and (h % p or w % p):
        raise ValueError(f"Twins-SVT {what}: feature map {(int(h), int(w))} is not divisible by {p}")


class Residual(nn.Module):
    """``fn(x) + x`` (key prefix ``fn``, as vit-pytorch's ``Residual``). Shape preserved."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class PatchEmbedding(nn.Module):
    """Patch merging: space-to-depth by ``patch_size``, then ChannelLayerNorm -> 1x1 Conv -> ChannelLayerNorm.

    As ``vit_pytorch.twins_svt.PatchEmbedding`` (keys ``proj.0..2``).
    (B, dim, H, W) -> (B, dim_out, H / patch_size, W / patch_size), float32.

    Raises (in ``forward``):
        ValueError: H or W not divisible by ``patch_size``.
    """

    def __init__(self, *, dim: int, dim_out: int, patch_size: int):
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.patch_size = patch_size
        self.proj = nn.Sequential(
            ChannelLayerNorm(patch_size ** 2 * dim),
            nn.Conv2d(patch_size ** 2 * dim, dim_out, 1),
            ChannelLayerNorm(dim_out),
        )

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        _check_divisible(fmap.shape[-2], fmap.shape[-1], p, f"patch embedding (patch_size {p})")
        return self.proj(space_to_depth(fmap, p))


class PEG(nn.Module):
    """Positional encoding generator: ``x + DepthwiseConv(kernel_size)(x)`` (key ``proj.fn``). Shape preserved."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.proj = Residual(nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim,
                                       stride=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class LocalAttention(nn.Module):
    """Locally-grouped self-attention (LSA): multi-head attention inside each ``patch_size`` square window.

    ChannelLayerNorm -> 1x1 Conv ``to_q`` and ``to_kv`` -> attention within each window (SDPA, windows
    folded into the batch) -> 1x1 Conv ``to_out`` + Dropout. No residual (see :class:`Residual`).

    Input and output: float32 (B, dim, H, W).

    Raises (in ``forward``):
        ValueError: H or W not divisible by ``patch_size``.
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0, patch_size: int = 7):
        super().__init__()
        inner_dim = dim_head * heads
        self.patch_size = patch_size
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.norm = ChannelLayerNorm(dim)
        self.to_q = nn.Conv2d(dim, inner_dim, 1, bias=False)
        self.to_kv = nn.Conv2d(dim, inner_dim * 2, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(inner_dim, dim, 1), nn.Dropout(dropout))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        h, w = fmap.shape[-2], fmap.shape[-1]
        _check_divisible(h, w, p, f"local attention (local_patch_size {p})")
        fmap = self.norm(fmap)
        qkv = torch.cat((self.to_q(fmap), self.to_kv(fmap)), dim=1)           # b, 3*heads*d, h, w
        q, k, v = window_partition(qkv, p, 3 * self.heads).chunk(3, dim=1)   # each b*nh*nw, heads, p*p, d
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.to_out(window_merge(out, p, h // p, w // p))


class GlobalAttention(nn.Module):
    """Global sub-sampled attention (GSA): every position attends to a ``k`` x ``k``-strided summary.

    ChannelLayerNorm -> q = 1x1 Conv, (k, v) = Conv(kernel ``k``, stride ``k``) -> attention over the
    floor(H/k)*floor(W/k) keys (SDPA) with attention dropout -> 1x1 Conv ``to_out`` + Dropout.

    Input and output: float32 (B, dim, H, W), H and W >= ``k``.
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0, k: int = 7):
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.inner_dim = inner_dim
        self.scale = dim_head ** -0.5
        self.attn_dropout = dropout
        self.norm = ChannelLayerNorm(dim)
        self.to_q = nn.Conv2d(dim, inner_dim, 1, bias=False)
        self.to_kv = nn.Conv2d(dim, inner_dim * 2, k, stride=k, bias=False)
        self.dropout = nn.Dropout(dropout)     # the reference's attention dropout (applied inside SDPA here)
        self.to_out = nn.Sequential(nn.Conv2d(inner_dim, dim, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        x = self.norm(x)
        q = self.to_q(x).unflatten(1, (self.heads, -1)).flatten(-2).transpose(-1, -2)      # b, heads, h*w, d
        kv = self.to_kv(x).unflatten(1, (2 * self.heads, -1)).flatten(-2).transpose(-1, -2)
        k, v = kv.chunk(2, dim=1)                                                          # b, heads, h'*w', d
        p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=self.scale)
        out = out.transpose(-1, -2).reshape(-1, self.inner_dim, h, w)
        return self.to_out(out)


class TwinsTransformer(nn.Module):
    """``depth`` Twins blocks: LSA + FF + GSA + FF, each residual (``vit_pytorch.twins_svt.Transformer``).

    With ``has_local=False`` (the last stage) the LSA and its FF are parameter-free identities.
    Shape (B, dim, H, W) -> (B, dim, H, W), float32.
    """

    def __init__(self, dim: int, depth: int, heads: int = 8, dim_head: int = 64, mlp_mult: int = 4,
                 local_patch_size: int = 7, global_k: int = 7, dropout: float = 0.0, has_local: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([
                Residual(LocalAttention(dim, heads, dim_head, dropout, local_patch_size)) if has_local
                else nn.Identity(),
                Residual(ConvFeedForward(dim, mlp_mult, dropout)) if has_local else nn.Identity(),
                Residual(GlobalAttention(dim, heads, dim_head, dropout, global_k)),
                Residual(ConvFeedForward(dim, mlp_mult, dropout)),
            ])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for local_attn, ff1, global_attn, ff2 in self.layers:
            x = ff2(global_attn(ff1(local_attn(x))))
        return x


class TwinsSVT(nn.Module):
    """Twins-SVT image classifier (Chu et al. 2021, arXiv 2104.13840), vit-pytorch's variant.

    Four stages, each: :class:`PatchEmbedding` (``sN_patch_size``) -> one Twins block -> :class:`PEG` ->
    ``sN_depth`` Twins blocks; a Twins block is LSA (windows of ``sN_local_patch_size``) + FF + GSA
    (sub-sampling ``sN_global_k``) + FF, with 8 heads of 64 and MLP ratio 4 everywhere (vit-pytorch
    fixes them); the last stage has no LSA. Then global average pooling and a Linear.

    Args (as ``vit_pytorch.twins_svt.TwinsSVT``, keyword-only): num_classes; for N in 1..4 ``sN_emb_dim``,
    ``sN_patch_size``, ``sN_local_patch_size``, ``sN_global_k``, ``sN_depth``; peg_kernel_size (odd);
    dropout.

    Input: float32 (B, 3, H, W); B is free. H and W must be divisible by the product of the patch sizes,
    and each stage's map by its ``local_patch_size`` (stages 1-3), e.g. 224 with the defaults.
    Output: float32 logits (B, num_classes).

    Raises:
        ValueError: at construction an even ``peg_kernel_size`` or a non-positive size; in ``forward`` an
            input that is not a (B, 3, H, W) batch (:func:`~vitedge.models.layers.check_image`), or whose
            feature maps are not divisible as above.
    """

    def __init__(self, *, num_classes, s1_emb_dim=64, s1_patch_size=4, s1_local_patch_size=7, s1_global_k=7,
                 s1_depth=1, s2_emb_dim=128, s2_patch_size=2, s2_local_patch_size=7, s2_global_k=7, s2_depth=1,
                 s3_emb_dim=256, s3_patch_size=2, s3_local_patch_size=7, s3_global_k=7, s3_depth=5,
                 s4_emb_dim=512, s4_patch_size=2, s4_local_patch_size=7, s4_global_k=7, s4_depth=4,
                 peg_kernel_size=3, dropout=0.):
        super().__init__()
        args = locals()
        if peg_kernel_size % 2 != 1:
            raise ValueError(f"peg_kernel_size must be odd, got {peg_kernel_size}")
        dim = 3
        layers: list[nn.Module] = []
        for prefix in _STAGES:
            c = {k: args[f"{prefix}_{k}"] for k in _STAGE_KEYS}
            for k in ("patch_size", "local_patch_size", "global_k"):
                if c[k] < 1:
                    raise ValueError(f"{prefix}_{k} must be a positive int, got {c[k]}")
            has_local = prefix != "s4"
            dim_next = c["emb_dim"]
            layers.append(nn.Sequential(
                PatchEmbedding(dim=dim, dim_out=dim_next, patch_size=c["patch_size"]),
                TwinsTransformer(dim_next, 1, local_patch_size=c["local_patch_size"], global_k=c["global_k"],
                                 dropout=dropout, has_local=has_local),
                PEG(dim_next, kernel_size=peg_kernel_size),
                TwinsTransformer(dim_next, c["depth"], local_patch_size=c["local_patch_size"],
                                 global_k=c["global_k"], dropout=dropout, has_local=has_local),
            ))
            dim = dim_next
        # items 4, 5 as the reference's AdaptiveAvgPool2d(1) + Rearrange, so the Linear keeps key "6"
        self.layers = nn.Sequential(*layers, GlobalAvgPool(), nn.Identity(), nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(self, x, 3)  # any H, W the stages divide (checked per stage), as vit-pytorch
        return self.layers(x)
