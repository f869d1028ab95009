"""CaiT (Touvron, Cord, Sablayrolles, Synnaeve, Jégou, "Going deeper with Image Transformers", 2021,
arXiv 2103.17239).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.cait.CaiT`` (vit-pytorch 1.x): the same keyword
arguments, the same parameter names, the same logits. The architecture: a patch transformer (self-attention
between patch tokens only, no class token) of ``depth`` layers, then ``cls_depth`` class-attention layers in
which only a class token is updated, attending to itself and the frozen patch tokens; every residual branch
is scaled by a learned per-channel LayerScale, and attention uses talking heads (the (heads, heads) mixing
of the attention logits before the softmax and of the weights after it).

Written for export: talking-heads mixing happens on both sides of the softmax, so fused SDPA does not apply;
attention is explicit static matmul / softmax code on rank-4 tensors, each head mixing one broadcast matmul
over the flattened (rank-3) maps; the patch embedding is :class:`~vitedge.models.vit.Patchify`; no einops,
lambdas or data-dependent control flow in ``forward``, and the batch dimension stays symbolic.

Deviations, both outside the reference's eval-mode behaviour at the default ``layer_dropout=0``:

* ``layer_dropout`` (random layer dropping) applies in training mode only; the reference also drops layers
  in eval mode, which makes its inference random.
* ``image_size`` / ``patch_size`` may also be (H, W) / (ph, pw) tuples (the reference takes ints only).
"""
from __future__ import annotations

import random

import torch
from torch import nn

from .deepvit import mix_heads
from .layers import FeedForward, check_image, merge_heads, patch_grid, split_heads
from .vit import linear_patch_embedding

__all__ = ["CaiT", "LayerScale", "TalkingHeadsAttention", "CaiTTransformer", "layer_scale_init"]


def layer_scale_init(depth: int) -> float:
    """LayerScale initial value for the layer at 1-based ``depth`` (the reference's rule, paper Sec. 2):
    0.1 up to 18, 1e-5 up to 24, 1e-6 beyond."""
    if depth <= 18:
        return 0.1
    if depth <= 24:
        return 1e-5
    return 1e-6


class LayerScale(nn.Module):
    """``fn(x, context) * scale`` with a learned per-channel ``scale`` of shape (1, 1, dim) (paper Sec. 2).

    Input/output float (B, N, dim); ``context`` (B, M, dim) or None is passed through to ``fn``.
    """

    def __init__(self, dim: int, fn: nn.Module, depth: int):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, 1, dim), layer_scale_init(depth)))
        self.fn = fn

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.fn(x, context) * self.scale


class _FeedForward(FeedForward):
    """:class:`~vitedge.models.layers.FeedForward` (GELU, keys ``net.0/1/4``) taking and ignoring a context."""

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


class TalkingHeadsAttention(nn.Module):
    """Pre-norm multi-head attention with talking heads (Shazeer et al. 2020, arXiv 2003.02436), as CaiT uses.

    Queries come from LayerNorm(x); keys and values from LayerNorm(x), or from the concatenation
    ``[LayerNorm(x), context]`` when a context is given (class attention: x is the class token, the context
    the patch tokens; as in the reference the context itself is not normalised). The logits
    QK^T / sqrt(dim_head) are mixed across heads by ``mix_heads_pre_attn`` (h, h), softmaxed, dropped out,
    mixed by ``mix_heads_post_attn`` (h, h), then applied to V and projected by ``to_out`` (Linear + Dropout).
    Keys as ``vit_pytorch.cait.Attention``.

    Shapes: x float (B, N, dim), context (B, M, dim) or None -> (B, N, dim).
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(dim, inner_dim * 2, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.mix_heads_pre_attn = nn.Parameter(torch.randn(heads, heads))
        self.mix_heads_post_attn = nn.Parameter(torch.randn(heads, heads))
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout))

    def _qkv(self, x: torch.Tensor, context: torch.Tensor | None):
        x = self.norm(x)
        kv_in = x if context is None else torch.cat((x, context), dim=1)
        k, v = self.to_kv(kv_in).chunk(2, dim=-1)
        return split_heads(self.to_q(x), self.heads), split_heads(k, self.heads), split_heads(v, self.heads)

    def _attend(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        dots = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        dots = mix_heads(dots, self.mix_heads_pre_attn)            # talking heads, pre-softmax
        attn = self.dropout(torch.softmax(dots, dim=-1))
        return mix_heads(attn, self.mix_heads_post_attn)           # talking heads, post-softmax

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self._qkv(x, context)
        out = torch.matmul(self._attend(q, k), v)
        return self.to_out(merge_heads(out))


class CaiTTransformer(nn.Module):
    """``depth`` residual pairs (LayerScale(TalkingHeadsAttention), LayerScale(FeedForward)), no final norm.

    Keys as ``vit_pytorch.cait.Transformer`` (``layers.i.0.scale``, ``layers.i.0.fn.to_q`` ...). In training
    mode with ``layer_dropout > 0`` each layer pair is dropped with that probability (at least one is kept);
    in eval mode every layer runs.

    Shapes: x float (B, N, dim), context (B, M, dim) or None -> (B, N, dim).
    """

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0,
                 layer_dropout: float = 0.0):
        super().__init__()
        self.layer_dropout = layer_dropout
        self.layers = nn.ModuleList(
            nn.ModuleList([LayerScale(dim, TalkingHeadsAttention(dim, heads, dim_head, dropout), depth=i + 1),
                           LayerScale(dim, _FeedForward(dim, mlp_dim, dropout), depth=i + 1)])
            for i in range(depth)
        )

    def _active_layers(self) -> list:
        layers = list(self.layers)
        if not (self.training and self.layer_dropout > 0 and layers):
            return layers
        drop = (torch.rand(len(layers)) < self.layer_dropout).tolist()
        if all(drop):
            drop[random.randrange(len(layers))] = False
        return [layer for layer, d in zip(layers, drop) if not d]

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        for attn, ff in self._active_layers():
            x = attn(x, context) + x
            x = ff(x) + x
        return x


class CaiT(nn.Module):
    """CaiT classifier (Touvron et al. 2021, arXiv 2103.17239).

    Args (as ``vit_pytorch.cait.CaiT``, keyword-only): image_size; patch_size dividing it; num_classes; dim;
    depth (patch self-attention layers); cls_depth (class-attention layers); heads; mlp_dim; dim_head=64;
    dropout=0.; emb_dropout=0.; layer_dropout=0. (training only, see the module docstring). Inputs always
    have 3 channels (the reference has no ``channels`` argument). ``image_size`` / ``patch_size`` may be ints
    (the reference) or (H, W) / (ph, pw) tuples (an extension).

    Input: float32 (B, 3, H, W) at exactly the constructor's H, W. Output: float32 logits (B, num_classes)
    from the class token through LayerNorm + Linear.

    Raises:
        ValueError: image size not divisible by the patch size; in ``forward``, an input that is not
            (B, 3, H, W) at the constructor's size (:func:`~vitedge.models.layers.check_image`).
    """

    def __init__(self, *, image_size, patch_size, num_classes, dim, depth, cls_depth, heads, mlp_dim, dim_head=64,
                 dropout=0., emb_dropout=0., layer_dropout=0.):
        super().__init__()
        self.image_size, self.patch_size, (nh, nw) = patch_grid(image_size, patch_size)
        num_patches = nh * nw

        self.to_patch_embedding = linear_patch_embedding(3, self.image_size, self.patch_size, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(emb_dropout)
        self.patch_transformer = CaiTTransformer(dim, depth, heads, dim_head, mlp_dim, dropout, layer_dropout)
        self.cls_transformer = CaiTTransformer(dim, cls_depth, heads, dim_head, mlp_dim, dropout, layer_dropout)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        check_image(self, img, 3, self.image_size)
        x = self.to_patch_embedding(img)
        x = self.dropout(x + self.pos_embedding)
        x = self.patch_transformer(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        cls = self.cls_transformer(cls, x)
        return self.mlp_head(cls[:, 0])
