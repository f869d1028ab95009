"""Convolutional vision Transformer, CvT (Wu, Xiao, Codella, Liu, Dai, Yuan & Zhang, "CvT: Introducing
Convolutions to Vision Transformers", 2021, arXiv 2103.15808).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.cvt.CvT`` (vit-pytorch 1.x): the same
keyword arguments, the same parameter and buffer names (including the BatchNorm statistics of the
depthwise q/k/v projections), the same logits. Written for export:

* attention is :func:`torch.nn.functional.scaled_dot_product_attention` on rank-4 (B, heads, N, d)
  tensors, the batch folded nowhere and never read into a Python int (reshapes use ``-1``);
* heads are split from the channel dimension of the (B, heads*d, H, W) projections with
  flatten/unflatten/transpose only (rank <= 5);
* the channel LayerNorm and the classifier's global pooling are plain reductions; no einops, lambdas,
  ``**kwargs`` or data-dependent control flow in ``forward``.

The model is fully convolutional, as the reference: any input size works (square or not); the spatial
sizes are read from the input's shape (static under export, where only the batch is dynamic).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ChannelLayerNorm, GlobalAvgPool, check_image

__all__ = ["CvT", "ChannelLayerNorm", "ConvFeedForward", "DepthWiseConv2d", "ConvAttention", "ConvTransformer",
           "GlobalAvgPool"]

_STAGES = ("s1", "s2", "s3")
_STAGE_KEYS = ("emb_dim", "emb_kernel", "emb_stride", "proj_kernel", "kv_proj_stride", "heads", "depth", "mlp_mult")


class ConvFeedForward(nn.Module):
    """Pre-norm conv MLP: ChannelLayerNorm -> 1x1 Conv(dim, dim*mult) -> GELU -> Dropout -> 1x1 Conv -> Dropout.

    Keys ``net.0`` (norm), ``net.1``, ``net.4`` as vit-pytorch's CvT / Twins-SVT ``FeedForward``.
    Shape (B, dim, H, W) -> (B, dim, H, W), float32.
    """

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            ChannelLayerNorm(dim), nn.Conv2d(dim, dim * mult, 1), nn.GELU(), nn.Dropout(dropout),
            nn.Conv2d(dim * mult, dim, 1), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DepthWiseConv2d(nn.Module):
    """Depthwise conv -> BatchNorm2d -> pointwise conv (CvT's convolutional projection; keys ``net.0..2``).

    (B, dim_in, H, W) -> (B, dim_out, (H + 2 * padding - kernel_size) // stride + 1, ...), float32.
    """

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int, padding: int, stride: int, bias: bool = True):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(dim_in, dim_in, kernel_size=kernel_size, padding=padding, groups=dim_in, stride=stride,
                      bias=bias),
            nn.BatchNorm2d(dim_in),
            nn.Conv2d(dim_in, dim_out, kernel_size=1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _tokens(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, heads*d, H, W) -> (B, heads, H*W, d): channel-split heads, row-major spatial tokens (rank <= 5)."""
    return t.unflatten(1, (heads, -1)).flatten(-2).transpose(-1, -2)


class ConvAttention(nn.Module):
    """CvT multi-head attention with convolutional q/k/v projections (``vit_pytorch.cvt.Attention``).

    ChannelLayerNorm, then q = DepthWiseConv2d(stride 1) and k, v = one DepthWiseConv2d(stride
    ``kv_proj_stride``) split in two; softmax(q k^T / sqrt(dim_head)) v over the H*W queries and
    H'*W' keys (SDPA), heads merged back onto channels, 1x1 Conv ``to_out`` + Dropout.

    Input and output: float32 (B, dim, H, W).

    Raises:
        ValueError: an even ``proj_kernel`` (its 'same' padding would change the query grid).
    """

    def __init__(self, dim: int, proj_kernel: int, kv_proj_stride: int, heads: int = 8, dim_head: int = 64,
                 dropout: float = 0.0):
        super().__init__()
        if proj_kernel % 2 != 1:
            raise ValueError(f"proj_kernel must be odd, got {proj_kernel}")
        inner_dim = dim_head * heads
        padding = proj_kernel // 2
        self.heads = heads
        self.inner_dim = inner_dim
        self.scale = dim_head ** -0.5
        self.attn_dropout = dropout

        self.norm = ChannelLayerNorm(dim)
        self.to_q = DepthWiseConv2d(dim, inner_dim, proj_kernel, padding=padding, stride=1, bias=False)
        self.to_kv = DepthWiseConv2d(dim, inner_dim * 2, proj_kernel, padding=padding, stride=kv_proj_stride,
                                     bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(inner_dim, dim, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        x = self.norm(x)
        q = _tokens(self.to_q(x), self.heads)
        k, v = (_tokens(t, self.heads) for t in self.to_kv(x).chunk(2, dim=1))
        p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=self.scale)   # b, heads, h*w, d
        out = out.transpose(-1, -2).reshape(-1, self.inner_dim, h, w)
        return self.to_out(out)


class ConvTransformer(nn.Module):
    """``depth`` residual (ConvAttention, ConvFeedForward) pairs on a feature map (``vit_pytorch.cvt.Transformer``).

    Shape (B, dim, H, W) -> (B, dim, H, W), float32.
    """

    def __init__(self, dim: int, proj_kernel: int, kv_proj_stride: int, depth: int, heads: int, dim_head: int = 64,
                 mlp_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([
                ConvAttention(dim, proj_kernel, kv_proj_stride, heads=heads, dim_head=dim_head, dropout=dropout),
                ConvFeedForward(dim, mlp_mult, dropout=dropout),
            ])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x


class CvT(nn.Module):
    """CvT image classifier (Wu et al. 2021, arXiv 2103.15808), vit-pytorch's variant.

    Three stages, each: convolutional token embedding (Conv2d with kernel ``sN_emb_kernel``, stride
    ``sN_emb_stride``, padding ``kernel // 2``) -> ChannelLayerNorm -> ``sN_depth`` conv-attention blocks with
    ``sN_heads`` heads of 64 and an MLP of ratio ``sN_mlp_mult``. Then global average pooling and a Linear
    (vit-pytorch uses no class token, unlike the paper's stage 3).

    Args (as ``vit_pytorch.cvt.CvT``, keyword-only): num_classes; for N in 1..3 ``sN_emb_dim``,
    ``sN_emb_kernel``, ``sN_emb_stride``, ``sN_proj_kernel`` (odd), ``sN_kv_proj_stride``, ``sN_heads``,
    ``sN_depth``, ``sN_mlp_mult``; dropout; channels. The defaults are CvT-13's shape.

    Input: float32 (B, channels, H, W), any H, W large enough for the strided convolutions (fully
    convolutional; B is free). Output: float32 logits (B, num_classes).

    Raises:
        ValueError: an even ``sN_proj_kernel``; in ``forward``, an input that is not a (B, channels, H, W)
            batch (:func:`~vitedge.models.layers.check_image`).
    """

    def __init__(self, *, num_classes, s1_emb_dim=64, s1_emb_kernel=7, s1_emb_stride=4, s1_proj_kernel=3,
                 s1_kv_proj_stride=2, s1_heads=1, s1_depth=1, s1_mlp_mult=4, s2_emb_dim=192, s2_emb_kernel=3,
                 s2_emb_stride=2, s2_proj_kernel=3, s2_kv_proj_stride=2, s2_heads=3, s2_depth=2, s2_mlp_mult=4,
                 s3_emb_dim=384, s3_emb_kernel=3, s3_emb_stride=2, s3_proj_kernel=3, s3_kv_proj_stride=2,
                 s3_heads=6, s3_depth=10, s3_mlp_mult=4, dropout=0., channels=3):
        super().__init__()
        args = locals()
        dim = channels
        self.in_channels = channels
        layers: list[nn.Module] = []
        for prefix in _STAGES:
            c = {k: args[f"{prefix}_{k}"] for k in _STAGE_KEYS}
            if c["proj_kernel"] % 2 != 1:
                raise ValueError(f"{prefix}_proj_kernel must be odd, got {c['proj_kernel']}")
            layers.append(nn.Sequential(
                nn.Conv2d(dim, c["emb_dim"], kernel_size=c["emb_kernel"], padding=c["emb_kernel"] // 2,
                          stride=c["emb_stride"]),
                ChannelLayerNorm(c["emb_dim"]),
                ConvTransformer(c["emb_dim"], c["proj_kernel"], c["kv_proj_stride"], c["depth"], c["heads"],
                                mlp_mult=c["mlp_mult"], dropout=dropout),
            ))
            dim = c["emb_dim"]
        self.layers = nn.Sequential(*layers)
        # items 0, 1 as the reference's AdaptiveAvgPool2d(1) + Rearrange, so the Linear keeps key "2"
        self.to_logits = nn.Sequential(GlobalAvgPool(), nn.Identity(), nn.Linear(dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last stage's feature map: (B, channels, H, W) -> (B, s3_emb_dim, H', W') float32, for any H, W (as
        vit-pytorch). Raises ValueError when ``x`` is not a (B, channels, H, W) batch
        (:func:`~vitedge.models.layers.check_image`)."""
        check_image(self, x, self.in_channels)
        return self.layers(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_logits(self.features(x))
