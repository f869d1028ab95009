"""LeViT (Graham et al., "LeViT: a Vision Transformer in ConvNet's Clothing for Faster Inference",
arXiv 2104.01136).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.levit.LeViT`` (vit-pytorch 1.x): the same
keyword arguments, the same parameter and buffer names (including each attention's ``pos_indices``
buffer), the same outputs. Written for export:

* attention is :func:`torch.nn.functional.scaled_dot_product_attention` with the learned relative-position
  bias passed as the additive ``attn_mask`` (gathered from a static index buffer, nothing data-dependent);
* after the convolutional patch embedding, every stage runs on channel-last tokens (B, N, C): the reference's
  1x1 convolutions are per-token matrix products (no NCHW layout reorders or transposes around them), each
  BatchNorm is folded into its product in eval mode, and q, k, v share one product. (Tokens stay 3-D: with the
  tokens of all images flattened into one (B*N, C) matrix, OpenVINO's int8 pipeline fails to compile the
  quantized graph, a ReshapeTransformation shape-inference error in 2026.4);
* heads are split with unflatten/transpose on the trailing dimensions, the batch dimension stays symbolic;
* no einops, lambdas or ``always(None)``: whether ``forward`` returns a distillation output is decided
  at construction.
"""
from __future__ import annotations

from math import ceil

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GlobalAvgPool, check_image, merge_heads, split_heads

__all__ = ["LeViT", "LeViTAttention", "LeViTFeedForward", "LeViTTransformer", "GlobalAvgPool"]


def _cast_tuple(val, length: int) -> tuple:
    """``val`` as a tuple padded to ``length`` by repeating its last element (vit-pytorch's ``cast_tuple``)."""
    val = val if isinstance(val, tuple) else (val,)
    return (*val, *((val[-1],) * max(length - len(val), 0)))


def _down(n: int) -> int:
    """Output length of a 3x3, stride-2, padding-1 convolution (or a stride-2 1x1 one): ceil(n / 2)."""
    return (n + 1) // 2


def conv1x1_tokens(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> torch.Tensor:
    """A 1x1 ``conv`` (stride 1), then ``bn``, applied to tokens: (..., C_in) -> (..., C_out), float32.

    The same function as ``bn(conv(x))`` on the (B, C, H, W) map the tokens come from, computed as one matrix
    product on the channel-last tokens. In eval mode the BatchNorm is folded into the product's weight and bias
    (``w * gamma / sqrt(var + eps)``, ``(b - mean) * gamma / sqrt(var + eps) + beta``), a computation on
    parameters only that exporters and runtimes constant-fold; in training mode ``bn`` runs as a module (batch
    statistics, running-stat updates).
    """
    w = conv.weight.flatten(1)
    if bn is None:
        return F.linear(x, w, conv.bias)
    if bn.training:
        y = F.linear(x, w, conv.bias)
        c = y.shape[-1]
        z = bn(y.reshape(1, -1, c).transpose(1, 2).unsqueeze(-1))             # (1, C, tokens, 1): BatchNorm2d's input
        return z.squeeze(-1).transpose(1, 2).reshape(y.shape)
    w, b = _fold_bn(w, conv.bias, bn)
    return F.linear(x, w, b)


def _fold_bn(w: torch.Tensor, b: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(C_out, C_in) weight and optional bias of a linear map followed by eval-mode ``bn`` -> one linear map."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    return w * scale[:, None], shift if b is None else b * scale + shift


class LeViTFeedForward(nn.Module):
    """Conv MLP: 1x1 Conv2d(dim, dim*mult) -> Hardswish -> Dropout -> 1x1 Conv2d(dim*mult, dim) -> Dropout.

    Keys ``net.0``, ``net.3`` as vit-pytorch. Runs on tokens: (B, N, dim) -> (B, N, dim), float32, the channel-last
    form of the reference's (B, dim, H, W) map (1x1 convolutions are per-token linear maps).
    """

    def __init__(self, dim: int, mult: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(dim, dim * mult, 1), nn.Hardswish(), nn.Dropout(dropout),
            nn.Conv2d(dim * mult, dim, 1), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net[2](net[1](conv1x1_tokens(x, net[0])))
        return net[4](conv1x1_tokens(x, net[3]))


class LeViTAttention(nn.Module):
    """LeViT attention on a square feature map, with a learned relative-position bias per head.

    q, k, v are 1x1 Conv2d + BatchNorm projections (q strided by 2 when ``downsample``); the logits are
    ``q.k * dim_key**-0.5 + pos_bias[|dx| * fmap_size + |dy|] * dim_key**0.5`` (the reference adds
    ``bias / scale``), softmax, times v, then GELU -> 1x1 Conv2d -> BatchNorm (weight initialised to 0,
    as in the reference) -> Dropout.

    Runs on tokens, the channel-last, row-major flattening of the reference's feature map: input float32
    (B, fmap_size**2, dim), output float32 (B, S**2, dim_out) with S = fmap_size, or ceil(fmap_size / 2) when
    ``downsample`` (the stride-2 1x1 query convolution is a [::2, ::2] subsampling of the token grid). In eval
    mode each BatchNorm is folded into its projection and, without downsampling, q, k and v are one product with
    the three weights stacked (fewer, larger matrix products).
    """

    def __init__(self, dim: int, fmap_size: int, heads: int = 8, dim_key: int = 32, dim_value: int = 64,
                 dropout: float = 0.0, dim_out: int | None = None, downsample: bool = False):
        super().__init__()
        inner_dim_key = dim_key * heads
        inner_dim_value = dim_value * heads
        dim_out = dim if dim_out is None else dim_out
        stride = 2 if downsample else 1

        self.heads = heads
        self.scale = dim_key ** -0.5
        self.attn_dropout = dropout
        self.downsample = downsample
        self.fmap_size = fmap_size
        self.q_size = _down(fmap_size) if downsample else fmap_size
        self.inner_dim_key = inner_dim_key
        self.inner_dim_value = inner_dim_value

        self.to_q = nn.Sequential(nn.Conv2d(dim, inner_dim_key, 1, stride=stride, bias=False),
                                  nn.BatchNorm2d(inner_dim_key))
        self.to_k = nn.Sequential(nn.Conv2d(dim, inner_dim_key, 1, bias=False), nn.BatchNorm2d(inner_dim_key))
        self.to_v = nn.Sequential(nn.Conv2d(dim, inner_dim_value, 1, bias=False), nn.BatchNorm2d(inner_dim_value))

        out_batch_norm = nn.BatchNorm2d(dim_out)
        nn.init.zeros_(out_batch_norm.weight)
        self.to_out = nn.Sequential(nn.GELU(), nn.Conv2d(inner_dim_value, dim_out, 1), out_batch_norm,
                                    nn.Dropout(dropout))

        # Relative-position bias: one learned scalar per head and |offset| (dx, dy) pair.
        self.pos_bias = nn.Embedding(fmap_size * fmap_size, heads)
        q_range = torch.arange(0, fmap_size, step=stride)
        k_range = torch.arange(fmap_size)
        q_pos = torch.stack(torch.meshgrid(q_range, q_range, indexing='ij'), dim=-1).reshape(-1, 2)
        k_pos = torch.stack(torch.meshgrid(k_range, k_range, indexing='ij'), dim=-1).reshape(-1, 2)
        rel_pos = (q_pos[:, None, :] - k_pos[None, :, :]).abs()
        pos_indices = rel_pos[..., 0] * fmap_size + rel_pos[..., 1]          # (Nq, Nk), int64
        self.register_buffer('pos_indices', pos_indices)

    def attention_bias(self) -> torch.Tensor:
        """Additive attention mask (heads, Nq, Nk), float32, in units of the already-scaled logits."""
        return self.pos_bias(self.pos_indices).permute(2, 0, 1) / self.scale

    def _projections(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, Nq, heads*dim_key), k (B, N, heads*dim_key), v (B, N, heads*dim_value) from tokens (B, N, dim)."""
        if self.downsample:
            s = self.fmap_size
            xq = x.unflatten(1, (s, s))[:, ::2, ::2].flatten(1, 2)
            return conv1x1_tokens(xq, *self.to_q), conv1x1_tokens(x, *self.to_k), conv1x1_tokens(x, *self.to_v)
        if self.training:
            return tuple(conv1x1_tokens(x, *m) for m in (self.to_q, self.to_k, self.to_v))
        folded = [_fold_bn(conv.weight.flatten(1), None, bn) for conv, bn in (self.to_q, self.to_k, self.to_v)]
        qkv = F.linear(x, torch.cat([w for w, _ in folded]), torch.cat([b for _, b in folded]))
        return qkv.split([self.inner_dim_key, self.inner_dim_key, self.inner_dim_value], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self._projections(x))        # b, h, n, d
        p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.attention_bias(), dropout_p=p,
                                             scale=self.scale)                    # b, h, Nq, dv
        gelu, conv, bn, drop = self.to_out
        return drop(conv1x1_tokens(gelu(merge_heads(out)), conv, bn))


class LeViTTransformer(nn.Module):
    """``depth`` x (attention [+ residual] -> conv MLP + residual) at one resolution.

    The attention residual is used only when neither downsampling nor changing the width. Shape on tokens
    (B, S*S, dim) -> (B, S'*S', dim_out) with S' = ceil(S / 2) when ``downsample`` else S.
    """

    def __init__(self, dim: int, fmap_size: int, depth: int, heads: int, dim_key: int, dim_value: int,
                 mlp_mult: int = 2, dropout: float = 0.0, dim_out: int | None = None, downsample: bool = False):
        super().__init__()
        dim_out = dim if dim_out is None else dim_out
        self.attn_residual = (not downsample) and dim == dim_out
        self.layers = nn.ModuleList(
            nn.ModuleList([
                LeViTAttention(dim, fmap_size=fmap_size, heads=heads, dim_key=dim_key, dim_value=dim_value,
                               dropout=dropout, downsample=downsample, dim_out=dim_out),
                LeViTFeedForward(dim_out, mlp_mult, dropout=dropout),
            ])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x if self.attn_residual else attn(x)
            x = ff(x) + x
        return x


class LeViT(nn.Module):
    """LeViT image classifier (Graham et al., arXiv 2104.01136), vit-pytorch's variant.

    Args (as ``vit_pytorch.levit.LeViT``, keyword-only):
        image_size: int side of the square input. The reference sizes the position biases for
            ``image_size // 16`` while its four stride-2 convolutions give ceil-halvings, so it only runs when
            ``image_size`` is a multiple of 16; that is required here too.
        num_classes: logits size. dim, depth, heads: int or tuple per stage (padded to ``stages`` by
            repeating the last). mlp_mult: conv-MLP expansion. stages: number of resolutions.
        dim_key, dim_value: per-head query/key and value widths. dropout: attention/MLP dropout.
        num_distill_classes: when not None, adds ``distill_head`` and ``forward`` returns a tuple.

    Between stages a one-layer downsampling transformer (2x heads, stride-2 queries, MLP mult 2) changes
    the width to the next stage's.

    Input: float32 (B, 3, image_size, image_size); B is free. Output: float32 logits (B, num_classes), or
    ``(logits, distill_logits)`` with distill_logits (B, num_distill_classes) when ``num_distill_classes``
    is set.

    Raises:
        ValueError: ``dim``/``depth``/``heads`` longer than ``stages``, or ``image_size`` not a positive
            multiple of 16; in ``forward``, an input that is not (B, 3, image_size, image_size)
            (:func:`~vitedge.models.layers.check_image`).
    """

    def __init__(self, *, image_size, num_classes, dim, depth, heads, mlp_mult, stages=3, dim_key=32,
                 dim_value=64, dropout=0., num_distill_classes=None):
        super().__init__()
        dims = _cast_tuple(dim, stages)
        depths = _cast_tuple(depth, stages)
        layer_heads = _cast_tuple(heads, stages)
        if not all(len(t) == stages for t in (dims, depths, layer_heads)):
            raise ValueError(f"dim, depth and heads must be ints or tuples of at most stages={stages} entries, "
                             f"got dim={dim!r}, depth={depth!r}, heads={heads!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0 or image_size % 16:
            raise ValueError(f"image_size must be a positive int multiple of 16, got {image_size!r}")
        self.image_size = image_size

        self.conv_embedding = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.Conv2d(64, 128, 3, stride=2, padding=1),
            nn.Conv2d(128, dims[0], 3, stride=2, padding=1),
        )

        fmap_size = image_size // 16
        layers: list[nn.Module] = []
        for ind, (d, dep, h) in enumerate(zip(dims, depths, layer_heads)):
            layers.append(LeViTTransformer(d, fmap_size, dep, h, dim_key, dim_value, mlp_mult, dropout))
            if ind != stages - 1:
                layers.append(LeViTTransformer(d, fmap_size, 1, h * 2, dim_key, dim_value,
                                               dim_out=dims[ind + 1], downsample=True))
                fmap_size = ceil(fmap_size / 2)
        self.backbone = nn.Sequential(*layers)

        self.has_distill = num_distill_classes is not None
        if self.has_distill:
            self.distill_head = nn.Linear(dims[-1], num_distill_classes)
        self.mlp_head = nn.Linear(dims[-1], num_classes)
        # names of forward's outputs, used for the exported graph's output names
        self.output_names = ("logits", "distill_logits") if self.has_distill else ("logits",)

    def features(self, img: torch.Tensor) -> torch.Tensor:
        """Pooled features: (B, 3, S, S) -> (B, dim[-1]) float32. After the convolutional patch embedding the
        transformer stages run on channel-last tokens (B, N, C); the pool is the mean over the tokens.

        Raises:
            ValueError: ``img`` is not (B, 3, S, S) with S = ``image_size``
                (:func:`~vitedge.models.layers.check_image`).
        """
        check_image(self, img, 3, (self.image_size, self.image_size))
        tokens = self.conv_embedding(img).flatten(2).transpose(1, 2)                    # (B, N, C)
        return self.backbone(tokens).mean(dim=1)

    def forward(self, img: torch.Tensor):
        x = self.features(img)
        out = self.mlp_head(x)
        if self.has_distill:
            return out, self.distill_head(x)
        return out
