"""DeepViT (Zhou et al., "DeepViT: Towards Deeper Vision Transformer", 2021, arXiv 2103.11886).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.deepvit.DeepViT`` (vit-pytorch 1.x): the same
keyword arguments, the same parameter names, the same logits. Each attention layer uses *re-attention*: the
softmax attention maps of the heads are mixed by a learned (heads, heads) matrix, normalised by a LayerNorm
across the heads, and only then applied to the values.

Written for export: because the heads are mixed *after* the softmax, fused SDPA does not apply, so the
attention is explicit static matmul / softmax code on rank-4 tensors; the head mixing is one broadcast
matmul over the flattened (rank-3) attention maps; the patch embedding is
:class:`~vitedge.models.vit.Patchify`; no einops, lambdas or data-dependent control flow, and the batch
dimension stays symbolic.

Extension: ``image_size`` and ``patch_size`` may also be (H, W) / (ph, pw) tuples (the reference takes
ints only); with ints the model is exactly the reference's.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import FeedForward, check_image, merge_heads, patch_grid, split_heads
from .vit import linear_patch_embedding

__all__ = ["DeepViT", "ReAttention", "DeepViTTransformer", "Permute", "mix_heads"]


def mix_heads(attn: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mix attention maps across heads: out[b, g, i, j] = sum_h attn[b, h, i, j] * weights[h, g].

    ``attn`` float (B, h, N, M), ``weights`` (h, g) -> (B, g, N, M) (here g == h). One broadcast matmul of
    (g, h) @ (B, h, N*M), i.e. einsum ``'b h i j, h g -> b g i j'`` without einsum.
    """
    return torch.matmul(weights.t(), attn.flatten(2)).reshape_as(attn)


class Permute(nn.Module):
    """Parameter-free ``x.permute(*dims)`` as a module (stands where the reference has einops ``Rearrange``)."""

    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class ReAttention(nn.Module):
    """Pre-norm multi-head self-attention with re-attention (Zhou et al. 2021, arXiv 2103.11886, Eq. 4).

    softmax(QK^T / sqrt(dim_head)) -> Dropout -> mix heads with ``reattn_weights`` (h, h) -> LayerNorm over
    the heads -> times V -> ``to_out`` (Linear + Dropout). Keys as ``vit_pytorch.deepvit.Attention``:
    ``reattn_weights``, ``norm``, ``to_qkv``, ``reattn_norm.1``, ``to_out.0``.

    Shape: float (B, N, dim) -> (B, N, dim).
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.reattn_weights = nn.Parameter(torch.randn(heads, heads))
        # LayerNorm across heads: (B, h, N, N) -> (B, N, N, h) -> LN -> back.
        self.reattn_norm = nn.Sequential(Permute(0, 2, 3, 1), nn.LayerNorm(heads), Permute(0, 3, 1, 2))
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout))

    def _reattend(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        attn = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)
        attn = self.dropout(attn)
        return self.reattn_norm(mix_heads(attn, self.reattn_weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        q, k, v = (split_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        out = torch.matmul(self._reattend(q, k), v)
        return self.to_out(merge_heads(out))


class DeepViTTransformer(nn.Module):
    """``depth`` residual (ReAttention, FeedForward) pairs, no final norm (``vit_pytorch.deepvit.Transformer``).

    Shape (B, N, dim) -> (B, N, dim).
    """

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([ReAttention(dim, heads, dim_head, dropout), FeedForward(dim, mlp_dim, dropout)])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x


class DeepViT(nn.Module):
    """DeepViT classifier (Zhou et al. 2021, arXiv 2103.11886): a ViT whose attention layers re-attend.

    Args (as ``vit_pytorch.deepvit.DeepViT``, keyword-only): image_size; patch_size dividing it; num_classes;
    dim; depth; heads; mlp_dim; pool 'cls' | 'mean'; channels=3; dim_head=64; dropout=0.; emb_dropout=0.
    ``image_size`` / ``patch_size`` may be ints (the reference) or (H, W) / (ph, pw) tuples (an extension).

    Input: float32 (B, channels, H, W) at exactly the constructor's H, W. Output: float32 logits
    (B, num_classes), from the class token or the mean token, through LayerNorm + Linear.

    Raises:
        ValueError: image size not divisible by the patch size, or an unknown pool type; in ``forward``, an
            input that is not (B, channels, H, W) at the constructor's size
            (:func:`~vitedge.models.layers.check_image`).
    """

    def __init__(self, *, image_size, patch_size, num_classes, dim, depth, heads, mlp_dim, pool='cls', channels=3,
                 dim_head=64, dropout=0., emb_dropout=0.):
        super().__init__()
        self.image_size, self.patch_size, (nh, nw) = patch_grid(image_size, patch_size)
        if pool not in ('cls', 'mean'):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        num_patches = nh * nw
        self.in_channels = channels

        self.to_patch_embedding = linear_patch_embedding(channels, self.image_size, self.patch_size, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(emb_dropout)
        self.transformer = DeepViTTransformer(dim, depth, heads, dim_head, mlp_dim, dropout)
        self.pool = pool
        self.to_latent = nn.Identity()
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        check_image(self, img, self.in_channels, self.image_size)
        x = self.to_patch_embedding(img)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.dropout(x + self.pos_embedding)
        x = self.transformer(x)
        x = x.mean(dim=1) if self.pool == 'mean' else x[:, 0]
        return self.mlp_head(self.to_latent(x))
