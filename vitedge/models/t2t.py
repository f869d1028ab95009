"""Tokens-to-Token ViT (Yuan et al., "Tokens-to-Token ViT: Training Vision Transformers from Scratch on
ImageNet", 2021, arXiv 2101.11986).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.t2t.T2TViT`` (vit-pytorch 1.x): the same
keyword arguments, the same parameter names (``to_patch_embedding.<i>`` indices included), the same logits.
Written for export:

* the soft split (``nn.Unfold`` in the reference) is :class:`SoftSplit`: padding + two static-index gathers +
  reshape/permute, tensors of rank <= 5 (``F.unfold`` exports through a rank-6 intermediate);
* every intermediate token-grid size is computed at construction, so re-structuring tokens into an image
  between T2T stages is a static ``reshape`` instead of vit-pytorch's ``sqrt(n)`` einops pattern;
* the T2T and backbone transformers are :class:`vitedge.models.layers.Transformer` (SDPA attention);
* the batch dimension is never read into a Python int.

Extension over the reference: ``image_size`` may be a ``(H, W)`` tuple with ``H != W`` (the reference
assumes a square token grid); a square tuple builds exactly the same model as the int.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Transformer, check_image, pair
from .upstream import compat_base

__all__ = ["T2TViT", "SoftSplit", "TokensToImage", "TokensLast", "soft_split_size"]


def soft_split_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Number of sliding-window positions along one axis: floor((size + 2*padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel_size) // stride + 1


class SoftSplit(nn.Module):
    """Overlapping patches: (B, C, H, W) -> (B, C*k*k, L) for the constructor's C = ``channels`` and
    (H, W) = ``in_size``; exactly :func:`torch.nn.functional.unfold` / :class:`torch.nn.Unfold` (channel
    order (C, ki, kj); the L = oh*ow windows in row-major order).

    Done as zero padding + two ``index_select`` gathers with static indices (rows ``ki + stride*a``, then
    columns ``kj + stride*b``) + reshape/permute on tensors of rank <= 5: the ONNX exporter lowers
    ``F.unfold`` through a rank-6 intermediate, over Core ML's rank limit. The index tensors are
    non-persistent buffers (no ``state_dict`` entries). Parameter-free.
    """

    def __init__(self, kernel_size: int, stride: int, padding: int, in_size: tuple[int, int], channels: int):
        super().__init__()
        self.channels = channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        k, s = kernel_size, stride
        self.out_size = tuple(soft_split_size(n, k, s, padding) for n in in_size)
        oh, ow = self.out_size
        self.register_buffer("rows", (torch.arange(k)[:, None] + s * torch.arange(oh)[None, :]).flatten(),
                             persistent=False)
        self.register_buffer("cols", (torch.arange(k)[:, None] + s * torch.arange(ow)[None, :]).flatten(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, p = self.kernel_size, self.padding
        oh, ow = self.out_size
        if p > 0:
            x = F.pad(x, (p, p, p, p))
        x = x.index_select(2, self.rows).index_select(3, self.cols)     # B, C, k*oh, k*ow
        x = x.reshape(-1, k, oh, k, ow).permute(0, 1, 3, 2, 4)          # B*C, ki, kj, oh, ow
        return x.reshape(-1, self.channels * k * k, oh * ow)


class TokensLast(nn.Module):
    """(B, C, N) -> (B, N, C). Parameter-free."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class TokensToImage(nn.Module):
    """Re-structurisation: tokens (B, h*w, C) in row-major order -> image (B, C, h, w), with static h, w."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).unflatten(2, (self.height, self.width))


class T2TViT(compat_base("t2t", "T2TViT")):
    """T2T-ViT classifier: progressive soft-split tokenisation (T2T module) followed by a ViT backbone.

    Args (as ``vit_pytorch.t2t.T2TViT``, all keyword-only):
        image_size: int, or (H, W) (extension: non-square allowed).
        num_classes: classes of the linear head.
        dim: backbone token width.
        depth, heads, mlp_dim: backbone transformer shape; required unless ``transformer`` is given.
        pool: ``'cls'`` (class token) or ``'mean'`` (mean over all tokens, class token included).
        channels: input channels.
        dim_head: backbone head width.
        dropout, emb_dropout: dropout rates (inactive in eval mode).
        transformer: optional ``nn.Module`` mapping (B, N, dim) -> (B, N, dim) used as the backbone.
        t2t_layers: tuple of (kernel_size, stride) pairs; each stage unfolds with padding ``stride // 2``,
            the token width grows by ``kernel_size**2``, and every stage but the last is followed by a
            one-layer, single-head transformer of that width.

    Input: float32 (B, channels, H, W) at exactly the constructor's size. Output: float32 logits
    (B, num_classes).

    Where vit-pytorch is installed the class also derives from ``vit_pytorch.t2t.T2TViT``
    (:func:`~vitedge.models.upstream.compat_base`; nothing is built by it). vit-pytorch's ``Recorder`` and
    ``Extractor`` give the same outputs on it as on that class.

    Raises:
        ValueError: unknown pool type; depth/heads/mlp_dim missing without ``transformer``; empty
            ``t2t_layers``; an image too small for a soft-split stage; in ``forward``, an input that is not
            (B, channels, H, W) at the constructor's size (:func:`check_image`).
    """

    def __init__(self, *, image_size, num_classes, dim, depth=None, heads=None, mlp_dim=None, pool='cls',
                 channels=3, dim_head=64, dropout=0., emb_dropout=0., transformer=None,
                 t2t_layers=((7, 4), (3, 2), (3, 2))):
        nn.Module.__init__(self)  # not super(): a vit-pytorch base (compat_base) must build nothing
        if pool not in ('cls', 'mean'):
            raise ValueError(f"pool must be 'cls' (cls token) or 'mean' (mean pooling), got {pool!r}")
        if len(t2t_layers) == 0:
            raise ValueError("t2t_layers must hold at least one (kernel_size, stride) pair")
        height, width = pair(image_size)
        self.image_size = (height, width)
        self.in_channels = channels

        layers: list[nn.Module] = []
        layer_dim = channels
        h, w = height, width
        for i, (kernel_size, stride) in enumerate(t2t_layers):
            is_first, is_last = i == 0, i == len(t2t_layers) - 1
            padding = stride // 2
            layers.append(nn.Identity() if is_first else TokensToImage(h, w))
            split = SoftSplit(kernel_size, stride, padding, (h, w), layer_dim)
            h, w = split.out_size
            if h < 1 or w < 1:
                raise ValueError(f"image size {self.image_size} is too small for T2T stage {i} "
                                 f"(kernel {kernel_size}, stride {stride}, padding {padding})")
            layer_dim *= kernel_size ** 2
            layers += [
                split,
                TokensLast(),
                nn.Identity() if is_last else Transformer(dim=layer_dim, depth=1, heads=1, dim_head=layer_dim,
                                                          mlp_dim=layer_dim, dropout=dropout),
            ]
        layers.append(nn.Linear(layer_dim, dim))
        self.to_patch_embedding = nn.Sequential(*layers)
        self.grid_size = (h, w)

        self.pos_embedding = nn.Parameter(torch.randn(1, h * w + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(emb_dropout)

        if transformer is None:
            if depth is None or heads is None or mlp_dim is None:
                raise ValueError("depth, heads, and mlp_dim must be supplied when no transformer is given")
            self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, dropout)
        else:
            self.transformer = transformer

        self.pool = pool
        self.to_latent = nn.Identity()
        self.mlp_head = nn.Linear(dim, num_classes)

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        """T2T tokens + class token + position embedding: (B, C, H, W) -> (B, h*w + 1, dim).

        Raises:
            ValueError: ``img`` is not (B, channels, H, W) at the constructor's size (:func:`check_image`).
        """
        check_image(self, img, self.in_channels, self.image_size)
        x = self.to_patch_embedding(img)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        return self.dropout(x + self.pos_embedding)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.transformer(self.embed(img))
        x = x.mean(dim=1) if self.pool == 'mean' else x[:, 0]
        return self.mlp_head(self.to_latent(x))
