"""CrossViT (Chen, Fan and Panda, "CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image
Classification", 2021, arXiv 2103.14899).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.cross_vit.CrossViT`` (vit-pytorch 1.x): the
same keyword arguments, the same parameter names, the same logits. Written for export:

* patch embedding of both branches with :class:`vitedge.models.vit.Patchify` (rank <= 5, symbolic batch);
* self- and cross-attention through :func:`torch.nn.functional.scaled_dot_product_attention` on rank-4
  (B, heads, N, d) tensors (the cross-attention query is the single CLS token, N_q = 1);
* no einops, lambdas, ``**kwargs`` or data-dependent control flow in ``forward``.

Extension over the reference: ``image_size`` (and the patch sizes) may be ``(H, W)`` tuples; the
reference takes one int for both sides.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FeedForward, check_image, merge_heads, pair, patch_grid, split_heads
from .vit import linear_patch_embedding

__all__ = ["CrossViT", "CrossAttention", "CrossViTTransformer", "ProjectInOut", "CrossTransformer",
           "MultiScaleEncoder", "ImageEmbedder"]


class CrossAttention(nn.Module):
    """Pre-norm multi-head attention with separate ``to_q`` / ``to_kv`` projections (both bias-free) and a
    ``to_out`` Linear + Dropout (always present), as ``vit_pytorch.cross_vit.Attention``.

    ``forward(x)``: self-attention on LayerNorm(x). ``forward(x, context, kv_include_self=True)``: queries from
    LayerNorm(x); keys/values from ``cat(LayerNorm(x), context)`` (``context`` is not normalised), as
    CrossViT's CLS-token cross-attention. Shapes: x (B, N, dim), context (B, M, dim) -> (B, N, dim), float32.
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.attn_dropout = dropout
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(dim, inner_dim * 2, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, kv_include_self: bool = False):
        x = self.norm(x)
        if context is None:
            context = x
        if kv_include_self:
            context = torch.cat((x, context), dim=1)
        q = split_heads(self.to_q(x), self.heads)
        k, v = (split_heads(t, self.heads) for t in self.to_kv(context).chunk(2, dim=-1))
        p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=self.scale)
        return self.to_out(merge_heads(out))


class CrossViTTransformer(nn.Module):
    """One branch's encoder: ``depth`` residual (CrossAttention as self-attention, FeedForward) pairs, then
    LayerNorm. Shape (B, N, dim) -> (B, N, dim)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([CrossAttention(dim, heads, dim_head, dropout), FeedForward(dim, mlp_dim, dropout)])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


class ProjectInOut(nn.Module):
    """``project_out(fn(project_in(x), context))``; the projections are Linear layers between ``dim_in`` and
    ``dim_out``, Identity when the two are equal. x (B, 1, dim_in), context (B, M, dim_out) -> (B, 1, dim_in)."""

    def __init__(self, dim_in: int, dim_out: int, fn: CrossAttention):
        super().__init__()
        self.fn = fn
        need_projection = dim_in != dim_out
        self.project_in = nn.Linear(dim_in, dim_out) if need_projection else nn.Identity()
        self.project_out = nn.Linear(dim_out, dim_in) if need_projection else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.fn(self.project_in(x), context, kv_include_self=True))


class CrossTransformer(nn.Module):
    """``depth`` rounds of CLS-token cross-attention between the branches: each branch's CLS token (projected
    to the other branch's width) attends to itself and the other branch's patch tokens, residually.

    Shapes: sm_tokens (B, 1+Ns, sm_dim), lg_tokens (B, 1+Nl, lg_dim) -> the same shapes.
    """

    def __init__(self, sm_dim: int, lg_dim: int, depth: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([
                ProjectInOut(sm_dim, lg_dim, CrossAttention(lg_dim, heads, dim_head, dropout)),
                ProjectInOut(lg_dim, sm_dim, CrossAttention(sm_dim, heads, dim_head, dropout)),
            ])
            for _ in range(depth)
        )

    def forward(self, sm_tokens: torch.Tensor, lg_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sm_cls, sm_patches = sm_tokens[:, :1], sm_tokens[:, 1:]
        lg_cls, lg_patches = lg_tokens[:, :1], lg_tokens[:, 1:]
        for sm_attend_lg, lg_attend_sm in self.layers:
            sm_cls = sm_attend_lg(sm_cls, lg_patches) + sm_cls
            lg_cls = lg_attend_sm(lg_cls, sm_patches) + lg_cls
        return torch.cat((sm_cls, sm_patches), dim=1), torch.cat((lg_cls, lg_patches), dim=1)


class MultiScaleEncoder(nn.Module):
    """``depth`` x [small-branch encoder, large-branch encoder, cross-attention fusion].

    ``sm_enc_params`` / ``lg_enc_params``: dicts with depth, heads, mlp_dim, dim_head.
    """

    def __init__(self, *, depth, sm_dim, lg_dim, sm_enc_params, lg_enc_params, cross_attn_heads, cross_attn_depth,
                 cross_attn_dim_head=64, dropout=0.):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([
                CrossViTTransformer(sm_dim, sm_enc_params["depth"], sm_enc_params["heads"],
                                    sm_enc_params["dim_head"], sm_enc_params["mlp_dim"], dropout),
                CrossViTTransformer(lg_dim, lg_enc_params["depth"], lg_enc_params["heads"],
                                    lg_enc_params["dim_head"], lg_enc_params["mlp_dim"], dropout),
                CrossTransformer(sm_dim, lg_dim, cross_attn_depth, cross_attn_heads, cross_attn_dim_head, dropout),
            ])
            for _ in range(depth)
        )

    def forward(self, sm_tokens: torch.Tensor, lg_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for sm_enc, lg_enc, cross_attend in self.layers:
            sm_tokens, lg_tokens = cross_attend(sm_enc(sm_tokens), lg_enc(lg_tokens))
        return sm_tokens, lg_tokens


class ImageEmbedder(nn.Module):
    """Patch embedding (Patchify -> LayerNorm -> Linear -> LayerNorm) + CLS token + position embedding.

    (B, channels, H, W) -> (B, 1 + (H/ph)*(W/pw), dim), float32.

    Raises:
        ValueError: image size not divisible by the patch size.
    """

    def __init__(self, *, dim, image_size, patch_size, dropout=0., channels=3):
        super().__init__()
        image, patch, (nh, nw) = patch_grid(image_size, patch_size)
        num_patches = nh * nw
        self.to_patch_embedding = linear_patch_embedding(channels, image, patch, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.to_patch_embedding(img)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return self.dropout(torch.cat((cls, x), dim=1) + self.pos_embedding)


class CrossViT(nn.Module):
    """CrossViT classifier: a small-patch and a large-patch ViT branch fused by CLS-token cross-attention;
    the logits are the sum of the two branches' heads (LayerNorm -> Linear on each CLS token).

    Args (as ``vit_pytorch.cross_vit.CrossViT``, keyword-only): image_size (int, or (H, W) as an extension)
    shared by both branches and divisible by both patch sizes; num_classes; sm_dim, lg_dim (branch widths);
    sm_/lg_ patch_size, enc_depth, enc_heads, enc_mlp_dim, enc_dim_head; cross_attn_depth, cross_attn_heads,
    cross_attn_dim_head; depth (number of multi-scale encoder blocks); dropout; emb_dropout; channels.

    Input: float32 (B, channels, H, W) at the constructor's size. Output: float32 logits (B, num_classes).

    Raises:
        ValueError: image size not divisible by one of the patch sizes; in ``forward``, an input that is not
            (B, channels, H, W) at the constructor's size (:func:`~vitedge.models.layers.check_image`).
    """

    def __init__(self, *, image_size, num_classes, sm_dim, lg_dim, sm_patch_size=12, sm_enc_depth=1, sm_enc_heads=8,
                 sm_enc_mlp_dim=2048, sm_enc_dim_head=64, lg_patch_size=16, lg_enc_depth=4, lg_enc_heads=8,
                 lg_enc_mlp_dim=2048, lg_enc_dim_head=64, cross_attn_depth=2, cross_attn_heads=8,
                 cross_attn_dim_head=64, depth=3, dropout=0.1, emb_dropout=0.1, channels=3):
        super().__init__()
        self.image_size = pair(image_size)
        self.in_channels = channels
        self.sm_image_embedder = ImageEmbedder(dim=sm_dim, channels=channels, image_size=image_size,
                                               patch_size=sm_patch_size, dropout=emb_dropout)
        self.lg_image_embedder = ImageEmbedder(dim=lg_dim, channels=channels, image_size=image_size,
                                               patch_size=lg_patch_size, dropout=emb_dropout)
        self.multi_scale_encoder = MultiScaleEncoder(
            depth=depth, sm_dim=sm_dim, lg_dim=lg_dim, cross_attn_heads=cross_attn_heads,
            cross_attn_dim_head=cross_attn_dim_head, cross_attn_depth=cross_attn_depth,
            sm_enc_params=dict(depth=sm_enc_depth, heads=sm_enc_heads, mlp_dim=sm_enc_mlp_dim,
                               dim_head=sm_enc_dim_head),
            lg_enc_params=dict(depth=lg_enc_depth, heads=lg_enc_heads, mlp_dim=lg_enc_mlp_dim,
                               dim_head=lg_enc_dim_head),
            dropout=dropout,
        )
        self.sm_mlp_head = nn.Sequential(nn.LayerNorm(sm_dim), nn.Linear(sm_dim, num_classes))
        self.lg_mlp_head = nn.Sequential(nn.LayerNorm(lg_dim), nn.Linear(lg_dim, num_classes))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        check_image(self, img, self.in_channels, self.image_size)
        sm_tokens, lg_tokens = self.multi_scale_encoder(self.sm_image_embedder(img), self.lg_image_embedder(img))
        return self.sm_mlp_head(sm_tokens[:, 0]) + self.lg_mlp_head(lg_tokens[:, 0])
