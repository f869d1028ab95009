"""CrossFormer (Wang et al., "CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention",
2021, arXiv 2108.00154).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.crossformer.CrossFormer`` (vit-pytorch 1.x): the
same keyword arguments, the same parameter names and shapes, the same logits. Written for export:

* the short-distance (window) and long-distance (dilated grid) token groupings are reshape/transpose chains
  on channel-last tensors of rank <= 4 (Core ML allows 5) with the batch always ``-1``;
* the dynamic position bias MLP runs in the graph on a static grid of relative positions (a buffer built
  once at construction), and its output is gathered with a static index buffer: nothing is rebuilt per call;
* attention is :func:`torch.nn.functional.scaled_dot_product_attention` on 4-D q/k/v with the position bias
  as the additive mask; the 1x1 convolutions of the reference become ``linear`` on channel-last tokens
  (same weights, read through ``weight.flatten(1)``); no einops or lambdas.

The reference takes no ``image_size``: the spatial size is read from the input. Under ``torch.export`` /
the ONNX dynamo exporter it is static (only the batch is dynamic); ``torch.jit.trace`` records it as size
arithmetic. The input-size checks run in eager mode and under ``torch.export``, and are skipped while tracing.

This module also holds the pieces the other conv-layout families share: :class:`ChannelLastSequential`,
:func:`pointwise` and the window/grid partitions (:class:`~vitedge.models.layers.ChanLayerNorm` and
:class:`~vitedge.models.layers.GlobalAvgPool` live in :mod:`vitedge.models.layers`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ChanLayerNorm, GlobalAvgPool, check_image, split_heads

__all__ = ["CrossFormer", "CrossEmbedLayer", "CrossFormerAttention", "CrossFormerTransformer", "ChanLayerNorm",
           "ChannelLastSequential", "GlobalAvgPool", "DynamicPositionBias", "merge_heads", "pointwise",
           "window_partition", "window_reverse", "grid_partition", "grid_reverse"]


def _cast_tuple(val, length: int = 1) -> tuple:
    """``val`` if it is a tuple, else ``(val,) * length`` (vit-pytorch's ``cast_tuple``)."""
    return val if isinstance(val, tuple) else ((val,) * length)


def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Apply a 1x1 ``Conv2d`` to channel-last ``x`` (..., C_in) -> (..., C_out) as a ``linear`` (same weights)."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(..., heads, N, D) -> (..., N, heads*D), copied to a contiguous layout before flattening.

    Unlike :func:`vitedge.models.layers.merge_heads` this never relies on the input's strides:
    ``torch.export`` sees the fused CPU SDPA kernel's output layout ((..., N, heads, D) in memory) and records
    the flatten as a ``view``, which the ONNX exporter's decomposition (math SDPA, (..., heads, N, D) in memory)
    then cannot apply. The copy is an Identity in ONNX.
    """
    return x.transpose(-2, -3).clone(memory_format=torch.contiguous_format).flatten(-2)


def window_partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/wh * W/ww, wh*ww, C): non-overlapping wh x ww windows, tokens row-major.

    The same grouping as einops ``'b (h p1) (w p2) c -> (b h w) (p1 p2) c'``; tensors stay at rank 4 and the
    batch dimension is never read. H, W must be divisible by wh, ww.
    """
    w, c = x.shape[2], x.shape[3]
    x = x.reshape(-1, wh, w // ww, ww * c).transpose(1, 2)            # b*h, w, p1, p2*c
    return x.reshape(-1, wh * ww, c)


def window_reverse(x: torch.Tensor, wh: int, ww: int, h: int, w: int) -> torch.Tensor:
    """(B * h/wh * w/ww, wh*ww, C) -> (B, h, w, C), the inverse of :func:`window_partition` (rank 4)."""
    c = x.shape[-1]
    x = x.reshape(-1, w // ww, wh, ww * c).transpose(1, 2)            # b*h, p1, w, p2*c
    return x.reshape(-1, h, w, c)


def grid_partition(x: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/gh * W/gw, gh*gw, C): dilated groups of gh x gw tokens spaced H/gh, W/gw apart.

    The same grouping as einops ``'b (l1 h) (l2 w) c -> (b h w) (l1 l2) c'`` with l1 = gh, l2 = gw
    (CrossFormer's long-distance attention); rank 4, batch never read.
    """
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    nw = w // gw
    x = x.reshape(-1, gh, h // gh, w * c).transpose(1, 2)             # b, h, l1, (l2 w c)
    x = x.reshape(-1, gh * gw, nw, c).transpose(1, 2)                 # b*h, w, (l1 l2), c
    return x.reshape(-1, gh * gw, c)


def grid_reverse(x: torch.Tensor, gh: int, gw: int, h: int, w: int) -> torch.Tensor:
    """(B * h/gh * w/gw, gh*gw, C) -> (B, h, w, C), the inverse of :func:`grid_partition` (rank 4)."""
    c = x.shape[-1]
    x = x.reshape(-1, w // gw, gh * gw, c).transpose(1, 2)            # b*h, (l1 l2), w, c
    x = x.reshape(-1, h // gh, gh, w * c).transpose(1, 2)             # b, l1, h, (l2 w c)
    return x.reshape(-1, h, w, c)


class ChannelLastSequential(nn.Sequential):
    """A vit-pytorch conv ``nn.Sequential`` (same indices, same ``state_dict``) run on channel-last tokens.

    :class:`ChanLayerNorm` members normalise the last dimension, 1x1 ``Conv2d`` members become ``linear``
    (:func:`pointwise`), anything else (activations, dropout) is applied as is. Shape (..., C) -> (..., C').
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self:
            if isinstance(m, ChanLayerNorm):
                x = m.forward_last(x)
            elif isinstance(m, nn.Conv2d):
                x = pointwise(m, x)
            else:
                x = m(x)
        return x


class DynamicPositionBias(nn.Sequential):
    """CrossFormer's dynamic position bias: an MLP from a relative offset (dy, dx) to one scalar bias.

    Linear(2, dim) -> [LayerNorm -> ReLU -> Linear] x 3 ending in Linear(dim, 1); keys ``0, 1, 3, 4, 6, 7, 9``
    as vit-pytorch's ``DynamicPositionBias``. Input float (N, 2), output float (N,).
    """

    def __init__(self, dim: int):
        super().__init__(
            nn.Linear(2, dim), nn.LayerNorm(dim), nn.ReLU(),
            nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU(),
            nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU(),
            nn.Linear(dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).squeeze(-1)


class CrossEmbedLayer(nn.Module):
    """Cross-scale embedding: parallel strided convolutions with different kernels, concatenated on channels.

    Kernels are sorted ascending; the i-th of n scales gets ``dim_out / 2**(i+1)`` channels and the last the
    remainder; padding ``(kernel - stride) // 2`` as the reference. Shape (B, dim_in, H, W) ->
    (B, dim_out, H', W') with every branch's output size equal (see :meth:`output_size`).
    """

    def __init__(self, dim_in: int, dim_out: int, kernel_sizes, stride: int = 2):
        super().__init__()
        kernel_sizes = sorted(kernel_sizes)
        num_scales = len(kernel_sizes)
        dim_scales = [int(dim_out / (2 ** i)) for i in range(1, num_scales)]
        dim_scales = [*dim_scales, dim_out - sum(dim_scales)]
        self.kernel_sizes = tuple(kernel_sizes)
        self.stride = stride
        self.convs = nn.ModuleList(
            nn.Conv2d(dim_in, dim_scale, kernel, stride=stride, padding=(kernel - stride) // 2)
            for kernel, dim_scale in zip(kernel_sizes, dim_scales)
        )

    def output_size(self, n: int) -> int:
        """Output length for an input length ``n``.

        Raises:
            ValueError: the branches would give different lengths (so they cannot be concatenated).
        """
        s = self.stride
        sizes = {(n + 2 * ((k - s) // 2) - k) // s + 1 for k in self.kernel_sizes}
        if len(sizes) != 1 or min(sizes) < 1:
            raise ValueError(f"cross-scale embedding (kernels {self.kernel_sizes}, stride {s}) gives unequal or "
                             f"empty outputs {sorted(sizes)} for an input of {n} pixels")
        return sizes.pop()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([conv(x) for conv in self.convs], dim=1)


class CrossFormerAttention(nn.Module):
    """Short- or long-distance attention (SDA / LDA) with the dynamic position bias.

    ``attn_type='short'`` attends inside non-overlapping ``window_size`` x ``window_size`` windows;
    ``'long'`` inside dilated groups of ``window_size`` x ``window_size`` tokens spaced H/window_size apart.
    Pre-norm (:class:`ChanLayerNorm`), ``heads = dim // dim_head``, bias-free 1x1 ``to_qkv``, 1x1 ``to_out``.
    The bias added to every head's logits is ``dpb(grid)[rel_pos_indices]``: ``grid`` holds the
    (2w+1)^2 offsets in [-w, w]^2 and ``rel_pos_indices`` (w^2, w^2) indexes it exactly as the reference does
    (which strides the offset table by 2w-1; kept for parity).

    Input and output: float (B, H, W, dim) channel-last (H, W divisible by ``window_size``).

    Raises:
        ValueError: ``attn_type`` not 'short' or 'long', or ``dim < dim_head``.
    """

    def __init__(self, dim: int, attn_type: str, window_size: int, dim_head: int = 32, dropout: float = 0.0):
        super().__init__()
        if attn_type not in ('short', 'long'):
            raise ValueError(f"attention type must be 'short' or 'long', got {attn_type!r}")
        if dim < dim_head:
            raise ValueError(f"dim {dim} is smaller than the head width {dim_head}: no attention heads")
        heads = dim // dim_head
        inner_dim = dim_head * heads
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.attn_type = attn_type
        self.window_size = window_size
        self.attn_dropout = dropout

        self.norm = ChanLayerNorm(dim)
        self.to_qkv = nn.Conv2d(dim, inner_dim * 3, 1, bias=False)
        self.to_out = nn.Conv2d(inner_dim, dim, 1)
        self.dpb = DynamicPositionBias(dim // 4)

        wsz = window_size
        pos = torch.arange(wsz)
        grid = torch.stack(torch.meshgrid(pos, pos, indexing='ij'), dim=-1).reshape(-1, 2)   # (w^2, 2)
        rel_pos = grid[:, None] - grid[None, :] + (wsz - 1)
        rel_pos_indices = rel_pos[..., 0] * (2 * wsz - 1) + rel_pos[..., 1]                 # (w^2, w^2)
        offsets = torch.arange(-wsz, wsz + 1)
        bias_grid = torch.stack(torch.meshgrid(offsets, offsets, indexing='ij'), dim=-1).reshape(-1, 2)
        self.register_buffer('rel_pos_indices', rel_pos_indices, persistent=False)
        self.register_buffer('rel_pos_grid', bias_grid.float(), persistent=False)           # ((2w+1)^2, 2)

    def position_bias(self) -> torch.Tensor:
        """The additive attention bias (w^2, w^2), float32, shared by all heads and groups."""
        n = self.window_size ** 2
        biases = self.dpb(self.rel_pos_grid)
        return biases.index_select(0, self.rel_pos_indices.reshape(-1)).reshape(n, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1], x.shape[2]
        wsz = self.window_size
        x = self.norm.forward_last(x)
        if self.attn_type == 'short':
            t = window_partition(x, wsz, wsz)
        else:
            t = grid_partition(x, wsz, wsz)
        # (groups*B, w^2, dim): q/k/v are 4-D (groups*B, heads, w^2, dim_head), as ONNX's SDPA lowering wants
        q, k, v = (split_heads(u, self.heads) for u in pointwise(self.to_qkv, t).chunk(3, dim=-1))
        p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.position_bias(), dropout_p=p,
                                             scale=self.scale)
        out = pointwise(self.to_out, merge_heads(out))
        if self.attn_type == 'short':
            return window_reverse(out, wsz, wsz, h, w)
        return grid_reverse(out, wsz, wsz, h, w)


class CrossFormerTransformer(nn.Module):
    """``depth`` x (short attention, MLP, long attention, MLP), each residual.

    MLP: :class:`ChanLayerNorm` -> 1x1 Conv(dim, 4 dim) -> GELU -> Dropout -> 1x1 Conv(4 dim, dim) (keys
    ``0, 1, 4``), run channel-last. Shape (B, dim, H, W) -> (B, dim, H, W), float; H and W divisible by both
    window sizes.
    """

    def __init__(self, dim: int, *, local_window_size: int, global_window_size: int, depth: int = 4,
                 dim_head: int = 32, attn_dropout: float = 0.0, ff_dropout: float = 0.0):
        super().__init__()

        def ff():
            return ChannelLastSequential(ChanLayerNorm(dim), nn.Conv2d(dim, dim * 4, 1), nn.GELU(),
                                         nn.Dropout(ff_dropout), nn.Conv2d(dim * 4, dim, 1))

        self.layers = nn.ModuleList(
            nn.ModuleList([
                CrossFormerAttention(dim, 'short', local_window_size, dim_head, attn_dropout), ff(),
                CrossFormerAttention(dim, 'long', global_window_size, dim_head, attn_dropout), ff(),
            ])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)                                          # b, h, w, d
        for short_attn, short_ff, long_attn, long_ff in self.layers:
            x = short_attn(x) + x
            x = short_ff(x) + x
            x = long_attn(x) + x
            x = long_ff(x) + x
        return x.permute(0, 3, 1, 2)


class CrossFormer(nn.Module):
    """CrossFormer image classifier (Wang et al. 2021, arXiv 2108.00154), vit-pytorch's variant.

    Args (as ``vit_pytorch.crossformer.CrossFormer``, keyword-only; ints are repeated to 4 stages):
        dim: widths of the 4 stages (each a multiple of 32: heads of 32). depth: transformer depth per stage
            (each layer = short + long attention). global_window_size: long-distance group size per stage.
        local_window_size: short-distance window per stage. cross_embed_kernel_sizes: kernels of each stage's
            cross-scale embedding. cross_embed_strides: their strides. num_classes, attn_dropout,
            ff_dropout, channels.

    Input: float32 (B, channels, H, W), any H, W for which every stage's feature map (after its cross-scale
    embedding) is divisible by that stage's local and global window sizes, e.g. multiples of 224 with the
    defaults; non-square is fine. B is free (symbolic under tracing and export). Output: logits
    (B, num_classes).

    Raises:
        ValueError: an argument tuple not of length 4, and (from ``forward``) an input that is not a
            (B, channels, H, W) batch (:func:`~vitedge.models.layers.check_image`), or a size the windows do
            not divide or for which the cross-scale branches disagree.
    """

    def __init__(self, *, dim=(64, 128, 256, 512), depth=(2, 2, 8, 2), global_window_size=(8, 4, 2, 1),
                 local_window_size=7, cross_embed_kernel_sizes=((4, 8, 16, 32), (2, 4), (2, 4), (2, 4)),
                 cross_embed_strides=(4, 2, 2, 2), num_classes=1000, attn_dropout=0., ff_dropout=0., channels=3):
        super().__init__()
        args = dict(dim=_cast_tuple(dim, 4), depth=_cast_tuple(depth, 4),
                    global_window_size=_cast_tuple(global_window_size, 4),
                    local_window_size=_cast_tuple(local_window_size, 4),
                    cross_embed_kernel_sizes=_cast_tuple(cross_embed_kernel_sizes, 4),
                    cross_embed_strides=_cast_tuple(cross_embed_strides, 4))
        for name, val in args.items():
            if len(val) != 4:
                raise ValueError(f"{name} must be a single value or a tuple of 4, got {val!r}")
        dims = [channels, *args['dim']]
        self.in_channels = channels
        self.local_window_size = args['local_window_size']
        self.global_window_size = args['global_window_size']

        self.layers = nn.ModuleList(
            nn.ModuleList([
                CrossEmbedLayer(dim_in, dim_out, kernels, stride=stride),
                CrossFormerTransformer(dim_out, local_window_size=lw, global_window_size=gw, depth=n,
                                       attn_dropout=attn_dropout, ff_dropout=ff_dropout),
            ])
            for dim_in, dim_out, n, gw, lw, kernels, stride in zip(
                dims[:-1], dims[1:], args['depth'], args['global_window_size'], args['local_window_size'],
                args['cross_embed_kernel_sizes'], args['cross_embed_strides'])
        )
        self.to_logits = nn.Sequential(GlobalAvgPool(), nn.Linear(dims[-1], num_classes))

    def stage_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Feature-map size (h, w) of each stage for an (height, width) input.

        Raises:
            ValueError: a cross-scale embedding's branches disagree, or a stage's map is not divisible by its
                local or global window size.
        """
        sizes = []
        h, w = int(height), int(width)
        for i, ((cel, _), lw, gw) in enumerate(zip(self.layers, self.local_window_size, self.global_window_size)):
            h, w = cel.output_size(h), cel.output_size(w)
            for name, wsz in (("local", lw), ("global", gw)):
                if h % wsz or w % wsz:
                    raise ValueError(f"input {height}x{width}: stage {i + 1} feature map {h}x{w} is not divisible "
                                     f"by its {name} window size {wsz}")
            sizes.append((h, w))
        return sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(self, x, self.in_channels)  # any H, W (as vit-pytorch) that stage_sizes accepts
        if not torch.jit.is_tracing():          # static shapes: checked in eager mode and by torch.export
            self.stage_sizes(x.shape[-2], x.shape[-1])
        for cel, transformer in self.layers:
            x = transformer(cel(x))
        return self.to_logits(x)
