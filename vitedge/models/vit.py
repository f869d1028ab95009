"""Vision Transformer (Dosovitskiy et al., arXiv 2010.11929) and DeiT presets (Touvron et al., arXiv 2012.12877).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.vit.ViT`` (vit-pytorch 1.x): the same
keyword arguments, the same parameter names, the same logits. Written for export: the patch embedding is a
reshape/permute chain of rank <= 5 (Core ML's limit) instead of an einops pattern, the batch dimension
is never read into a Python int, and attention runs through SDPA.

vit-pytorch's wrappers work on it: ``Recorder`` (attention maps; ``ViT`` and its ``Attention`` derive from
vit-pytorch's classes where it is installed, see :func:`~vitedge.models.upstream.compat_base`) and
``Extractor`` (the transformer's output), with the same outputs as on ``vit_pytorch.vit.ViT``.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import Transformer, check_image, hooked, pair, patch_grid  # noqa: F401 - pair: re-exported
from .upstream import compat_base

__all__ = ["ViT", "Patchify", "linear_patch_embedding", "pair"]


class Patchify(nn.Module):
    """(B, C, H, W) -> (B, (H/ph)*(W/pw), ph*pw*C): non-overlapping patches, flattened in (ph, pw, C) order.

    Equivalent to einops ``'b c (h p1) (w p2) -> b (h w) (p1 p2 c)'`` (vit-pytorch's patch embedding),
    done with tensors of rank <= 5 and a symbolic batch dimension. Parameter-free.
    """

    def __init__(self, channels: int, image_size: tuple[int, int], patch_size: tuple[int, int]):
        super().__init__()
        self.c = channels
        self.ih, self.iw = image_size
        self.ph, self.pw = patch_size
        self.nh, self.nw = self.ih // self.ph, self.iw // self.pw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, ph, pw, nh, nw = self.c, self.ph, self.pw, self.nh, self.nw
        x = x.reshape(-1, c, nh, ph, self.iw).permute(0, 2, 3, 4, 1)      # b, nh, ph, W, c
        x = x.reshape(-1, nh, ph, nw, pw * c).permute(0, 1, 3, 2, 4)      # b, nh, nw, ph, pw*c
        return x.reshape(-1, nh * nw, ph * pw * c)


def linear_patch_embedding(channels: int, image_size: tuple[int, int], patch_size: tuple[int, int],
                           dim: int) -> nn.Sequential:
    """vit-pytorch's ``to_patch_embedding``: Patchify -> LayerNorm(patch_dim) -> Linear(patch_dim, dim) ->
    LayerNorm(dim), with its state_dict keys ``1.*``, ``2.*``, ``3.*``. (B, C, H, W) -> (B, N, dim)."""
    patch_dim = channels * patch_size[0] * patch_size[1]
    return nn.Sequential(
        Patchify(channels, image_size, patch_size),
        nn.LayerNorm(patch_dim),
        nn.Linear(patch_dim, dim),
        nn.LayerNorm(dim),
    )


class ViT(compat_base("vit", "ViT")):
    """Vision Transformer classifier.

    Args (as ``vit_pytorch.vit.ViT``): image_size int or (H, W); patch_size int or (ph, pw) dividing it;
    num_classes (0 returns the final tokens); dim, depth, heads, mlp_dim, dim_head; pool 'cls' | 'mean';
    channels; dropout; emb_dropout.

    Input: float32 (B, channels, H, W) with exactly the constructor's H, W. Output: logits (B, num_classes),
    or tokens (B, N, dim) when num_classes == 0.

    With ``pool='cls'`` the last block runs for the class token only (:meth:`class_token_logits`), unless a hook
    is registered in ``transformer`` (vit-pytorch's ``Recorder`` / ``Extractor``): then every block runs on
    every token, as in vit-pytorch, and the hooks see the same tensors.

    Raises:
        ValueError: image size not divisible by the patch size, or an unknown pool type; in ``forward``, an
            input that is not (B, channels, H, W) at the constructor's size (vit-pytorch would run a smaller
            or transposed grid against the first position embeddings; vitedge refuses it).
    """

    def __init__(self, *, image_size, patch_size, num_classes, dim, depth, heads, mlp_dim, pool='cls',
                 channels=3, dim_head=64, dropout=0., emb_dropout=0.):
        nn.Module.__init__(self)  # not super(): a vit-pytorch base (compat_base) must build nothing
        self.image_size, self.patch_size, (nh, nw) = patch_grid(image_size, patch_size)
        if pool not in ('cls', 'mean'):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        num_patches = nh * nw
        num_cls_tokens = 1 if pool == 'cls' else 0
        self.in_channels = channels

        self.to_patch_embedding = linear_patch_embedding(channels, self.image_size, self.patch_size, dim)
        self.cls_token = nn.Parameter(torch.randn(num_cls_tokens, dim))
        self.pos_embedding = nn.Parameter(torch.randn(num_patches + num_cls_tokens, dim))
        self.dropout = nn.Dropout(emb_dropout)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, dropout)
        self.pool = pool
        self.to_latent = nn.Identity()
        self.mlp_head = nn.Linear(dim, num_classes) if num_classes > 0 else None

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        """Patch embedding + class token + position embedding: (B, C, H, W) -> (B, N, dim).

        Raises:
            ValueError: ``img`` is not (B, channels, H, W) at the constructor's size (:func:`check_image`).
        """
        check_image(self, img, self.in_channels, self.image_size)
        x = self.to_patch_embedding(img)
        if self.pool == 'cls':
            cls = self.cls_token.unsqueeze(0).expand(x.shape[0], -1, -1)
            x = torch.cat((cls, x), dim=1)
        return self.dropout(x + self.pos_embedding)

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pool the final tokens (B, N, dim) and classify -> (B, num_classes)."""
        x = tokens.mean(dim=1) if self.pool == 'mean' else tokens[:, 0]
        return self.mlp_head(self.to_latent(x))

    def class_token_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits from embedded tokens (B, N, dim) -> (B, num_classes), float32, for ``pool='cls'`` with a head: the
        transformer's last block runs for the class token only (:meth:`Transformer.forward_first`), the one token
        the head reads; the same logits as ``head(transformer(tokens))``."""
        return self.mlp_head(self.to_latent(self.transformer.forward_first(tokens, 1)[:, 0]))

    def class_token_only(self) -> bool:
        """Whether ``forward`` may run the last block for the class token only: a class-token head and no hook
        anywhere in ``transformer`` (:func:`~vitedge.models.layers.hooked`)."""
        return self.mlp_head is not None and self.pool == 'cls' and not hooked(self.transformer)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if self.class_token_only():
            return self.class_token_logits(self.embed(img))
        x = self.transformer(self.embed(img))
        if self.mlp_head is None:
            return x
        return self.head(x)
