"""RegionViT (Chen et al., "RegionViT: Regional-to-Local Attention for Vision Transformers", 2021,
arXiv 2106.02689).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.regionvit.RegionViT`` (vit-pytorch 1.x): the same
keyword arguments, the same parameter names and shapes, the same logits. Written for export:

* the region encoder's ``'b c (h p1) (w p2) -> b (c p1 p2) h w'`` + 1x1 conv is one strided convolution with
  the same weights viewed as (dim, c, p1, p2): no rank-6 rearrange;
* local tokens are grouped into their regions' windows once per stage (a rank-4 reshape/transpose chain,
  batch always ``-1``) and stay grouped across the stage's layers; each region token joins its window as a
  (B*regions, 1, dim) slice;
* attention is SDPA on 4-D q/k/v; the local relative-position bias is gathered from a static index buffer
  (sliced when a stage's window is smaller than ``window_size``) and zero-padded for the region token;
  no einops or lambdas.

The reference takes no ``image_size``: the spatial size is read from the input. Under ``torch.export`` /
the ONNX dynamo exporter it is static (only the batch is dynamic); ``torch.jit.trace`` records it as size
arithmetic. The input-size checks run in eager mode and under ``torch.export``, and are skipped while tracing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .crossformer import merge_heads, window_partition, window_reverse
from .layers import Attention, ChanLayerNorm, GlobalAvgPool, check_image, split_heads

__all__ = ["RegionViT", "R2LTransformer", "R2LAttention", "RegionEncoder", "PEG", "Downsample",
           "local_bias_indices"]


def _cast_tuple(val, length: int = 1) -> tuple:
    """``val`` if it is a tuple, else ``(val,) * length`` (vit-pytorch's ``cast_tuple``)."""
    return val if isinstance(val, tuple) else ((val,) * length)


def _down(n: int) -> int:
    """Output length of a 3x3, stride-2, padding-1 convolution: ceil(n / 2)."""
    return (n + 1) // 2


def local_bias_indices(window_size: int) -> torch.Tensor:
    """Relative-position index (ws, ws, ws, ws), int64, for query (i, j) and key (k, l) of a ws x ws window.

    ``(i - k + ws - 1) + (j - l + ws - 1) * (2 ws - 1)``, as vit-pytorch's R2LTransformer computes it. The
    table of a smaller wh x ww window is the ``[:wh, :ww, :wh, :ww]`` slice (the index only depends on the
    offsets).
    """
    ws = window_size
    r = torch.arange(ws)
    di = (r[:, None] - r[None, :] + ws - 1)[:, None, :, None]           # i, 1, k, 1
    dj = (r[:, None] - r[None, :] + ws - 1)[None, :, None, :]           # 1, j, 1, l
    return di + dj * (2 * ws - 1)


class Downsample(nn.Module):
    """3x3 stride-2 convolution, (B, dim_in, H, W) -> (B, dim_out, ceil(H/2), ceil(W/2)); key ``conv``."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PEG(nn.Module):
    """Positional encoding generator: depthwise k x k conv plus the input. (B, dim, H, W) -> same; key ``proj``."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + x


class RegionEncoder(nn.Sequential):
    """Region tokens: one token per ``patch x patch`` region, (B, C, H, W) -> (B, dim, H/patch, W/patch).

    Same ``state_dict`` as vit-pytorch's ``Sequential(Rearrange('b c (h p1) (w p2) -> b (c p1 p2) h w'),
    Conv2d(C*patch^2, dim, 1))`` (key ``1.weight`` of shape (dim, C*patch^2, 1, 1)); computed as a single
    stride-``patch`` convolution whose kernel is that weight viewed as (dim, C, patch, patch).
    """

    def __init__(self, channels: int, dim: int, patch: int):
        super().__init__(nn.Identity(), nn.Conv2d(patch * patch * channels, dim, 1))
        self.channels = channels
        self.patch = patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self[1]
        p = self.patch
        weight = conv.weight.reshape(conv.out_channels, self.channels, p, p)
        return F.conv2d(x, weight, conv.bias, stride=p)


class R2LAttention(Attention):
    """Pre-norm multi-head attention with an optional additive bias, as ``vit_pytorch.regionvit.Attention``.

    Parameters as :class:`~vitedge.models.layers.Attention` (``norm``, bias-free ``to_qkv``, ``to_out``
    Linear + Dropout, always projected). Input (..., N, dim) with one leading dimension (B or B*regions);
    ``attn_bias`` float broadcastable to (B, heads, N, N). Output (..., N, dim).
    """

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32, dropout: float = 0.0):
        super().__init__(dim, heads, dim_head, dropout, project_out=True)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x)
        q, k, v = (split_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=p, scale=self.scale)
        return self.to_out(merge_heads(out))


class R2LTransformer(nn.Module):
    """Regional-to-local transformer: ``depth`` x (region self-attention; each region token with its window of
    local tokens in one attention, biased by a learned relative position for local pairs; MLP).

    The attention module is shared by both steps (as in the reference); MLP keys ``0, 1, 4``
    (LayerNorm, Linear(dim, 4 dim), GELU, Dropout, Linear(4 dim, dim)).

    Input and output: local tokens float (B, dim, lh, lw) and region tokens (B, dim, rh, rw), with
    lh = rh * wh, lw = rw * ww and window wh x ww no larger than ``window_size``.
    """

    def __init__(self, dim: int, *, window_size: int, depth: int = 4, heads: int = 4, dim_head: int = 32,
                 attn_dropout: float = 0.0, ff_dropout: float = 0.0):
        super().__init__()
        self.window_size = window_size
        self.dim = dim
        # registration and initialisation order as the reference (same keys order, same seeded weights)
        self.layers = nn.ModuleList()
        self.local_rel_pos_bias = nn.Embedding((2 * window_size - 1) ** 2, heads)
        for _ in range(depth):
            self.layers.append(nn.ModuleList([
                R2LAttention(dim, heads=heads, dim_head=dim_head, dropout=attn_dropout),
                nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * 4), nn.GELU(), nn.Dropout(ff_dropout),
                              nn.Linear(dim * 4, dim)),
            ]))
        self.register_buffer('bias_indices', local_bias_indices(window_size), persistent=False)

    def position_bias(self, wh: int, ww: int) -> torch.Tensor:
        """Additive mask (heads, 1 + wh*ww, 1 + wh*ww), float: the learned bias between local tokens, zero in
        the region token's row and column."""
        n = wh * ww
        idx = self.bias_indices[:wh, :ww, :wh, :ww].reshape(n * n)
        bias = self.local_rel_pos_bias(idx).transpose(0, 1).reshape(-1, n, n)     # heads, n, n
        return F.pad(bias, (1, 0, 1, 0), value=0.0)

    def forward(self, local_tokens: torch.Tensor, region_tokens: torch.Tensor):
        lh, lw = local_tokens.shape[-2], local_tokens.shape[-1]
        rh, rw = region_tokens.shape[-2], region_tokens.shape[-1]
        wh, ww = lh // rh, lw // rw
        d = self.dim
        bias = self.position_bias(wh, ww)

        local = window_partition(local_tokens.permute(0, 2, 3, 1), wh, ww)          # b*rh*rw, wh*ww, d
        region = region_tokens.flatten(2).transpose(1, 2)                            # b, rh*rw, d
        for attn, ff in self.layers:
            region = attn(region) + region
            tokens = torch.cat((region.reshape(-1, 1, d), local), dim=1)             # b*rh*rw, 1+wh*ww, d
            tokens = attn(tokens, bias) + tokens
            tokens = ff(tokens) + tokens
            region = tokens[:, :1].reshape(-1, rh * rw, d)
            local = tokens[:, 1:]

        local_tokens = window_reverse(local, wh, ww, lh, lw).permute(0, 3, 1, 2)
        region_tokens = region.transpose(1, 2).reshape(-1, d, rh, rw)
        return local_tokens, region_tokens


class RegionViT(nn.Module):
    """RegionViT image classifier (Chen et al. 2021, arXiv 2106.02689), vit-pytorch's variant.

    Args (as ``vit_pytorch.regionvit.RegionViT``, keyword-only):
        dim, depth: int or 4-tuple, per-stage width and number of R2L layers (attention: 4 heads of 32).
        window_size: local tokens per region side. num_classes. tokenize_local_3_conv: encode local tokens
        with three 3x3 convs (stride 2, 2, 1) and channel LayerNorms instead of one 8x8 stride-4 conv.
        local_patch_size: pixels per local token side (the local encoders always stride 4, so keep 4).
        use_peg: depthwise-conv position encoding on the local tokens of stages 2-4. attn_dropout,
        ff_dropout. channels: must be 3 (the reference's local encoder is hard-wired to RGB).

    Input: float32 (B, 3, H, W) with H, W multiples of ``local_patch_size * window_size`` (e.g. 224 with the
    defaults; non-square is fine) for which every stage's local map is a whole number of windows of at most
    ``window_size`` (the stride-2 downsampling rounds up). B is free. Output: logits (B, num_classes) from
    the mean region token.

    Raises:
        ValueError: ``dim``/``depth`` not of length 4, ``channels != 3``, and (from ``forward``) an input that
            is not a (B, 3, H, W) batch (:func:`~vitedge.models.layers.check_image`), or a size the region or
            local patch size does not divide, or whose stages do not tile into windows.
    """

    def __init__(self, *, dim=(64, 128, 256, 512), depth=(2, 2, 8, 2), window_size=7, num_classes=1000,
                 tokenize_local_3_conv=False, local_patch_size=4, use_peg=False, attn_dropout=0., ff_dropout=0.,
                 channels=3):
        super().__init__()
        dim = _cast_tuple(dim, 4)
        depth = _cast_tuple(depth, 4)
        if len(dim) != 4:
            raise ValueError(f"dim needs to be a single value or a tuple of length 4, got {dim!r}")
        if len(depth) != 4:
            raise ValueError(f"depth needs to be a single value or a tuple of length 4, got {depth!r}")
        if channels != 3:
            raise ValueError(f"RegionViT's local encoder takes 3 input channels, got channels={channels}")
        self.local_patch_size = local_patch_size
        self.tokenize_local_3_conv = tokenize_local_3_conv
        self.window_size = window_size
        self.region_patch_size = local_patch_size * window_size
        init_dim, last_dim = dim[0], dim[-1]

        if tokenize_local_3_conv:
            self.local_encoder = nn.Sequential(
                nn.Conv2d(3, init_dim, 3, 2, 1), ChanLayerNorm(init_dim), nn.GELU(),
                nn.Conv2d(init_dim, init_dim, 3, 2, 1), ChanLayerNorm(init_dim), nn.GELU(),
                nn.Conv2d(init_dim, init_dim, 3, 1, 1),
            )
        else:
            self.local_encoder = nn.Conv2d(3, init_dim, 8, 4, 3)
        self.region_encoder = RegionEncoder(channels, init_dim, self.region_patch_size)

        self.layers = nn.ModuleList()
        current_dim = init_dim
        for ind, (d, n) in enumerate(zip(dim, depth)):
            self.layers.append(nn.ModuleList([
                Downsample(current_dim, d) if ind else nn.Identity(),
                PEG(d) if ind and use_peg else nn.Identity(),
                R2LTransformer(d, depth=n, window_size=window_size, attn_dropout=attn_dropout,
                               ff_dropout=ff_dropout),
            ]))
            current_dim = d
        self.to_logits = nn.Sequential(GlobalAvgPool(), nn.LayerNorm(last_dim), nn.Linear(last_dim, num_classes))

    def stage_windows(self, height: int, width: int) -> list[tuple[int, int]]:
        """Local window (wh, ww) of each stage for an (height, width) input.

        Raises:
            ValueError: the input is not divisible by the region/local patch size, or a stage's local map is
                not a whole number of its region grid's windows, or a window exceeds ``window_size``.
        """
        height, width = int(height), int(width)
        for name, p in (("region", self.region_patch_size), ("local", self.local_patch_size)):
            if height % p or width % p:
                raise ValueError(f"height and width must be divisible by the {name} patch size {p}, "
                                 f"got {height}x{width}")
        if self.tokenize_local_3_conv:
            lh, lw = _down(_down(height)), _down(_down(width))
        else:
            lh, lw = (height - 2) // 4 + 1, (width - 2) // 4 + 1        # 8x8 conv, stride 4, padding 3
        rh, rw = height // self.region_patch_size, width // self.region_patch_size
        windows = []
        for ind in range(4):
            if ind:
                lh, lw, rh, rw = _down(lh), _down(lw), _down(rh), _down(rw)
            if lh % rh or lw % rw or lh // rh > self.window_size or lw // rw > self.window_size:
                raise ValueError(f"input {height}x{width}: stage {ind + 1} local map {lh}x{lw} does not tile into "
                                 f"the {rh}x{rw} regions with windows of at most {self.window_size}")
            windows.append((lh // rh, lw // rw))
        return windows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(self, x, 3)                 # any H, W (as vit-pytorch) that stage_windows accepts
        if not torch.jit.is_tracing():          # static shapes: checked in eager mode and by torch.export
            self.stage_windows(x.shape[-2], x.shape[-1])
        local_tokens = self.local_encoder(x)
        region_tokens = self.region_encoder(x)
        for down, peg, transformer in self.layers:
            local_tokens, region_tokens = down(local_tokens), down(region_tokens)
            local_tokens = peg(local_tokens)
            local_tokens, region_tokens = transformer(local_tokens, region_tokens)
        return self.to_logits(region_tokens)
