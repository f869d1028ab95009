"""Distillable ViT, the DeiT student (Touvron et al., "Training data-efficient image transformers &
distillation through attention", 2021, arXiv 2012.12877).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.distill.DistillableViT`` (vit-pytorch 1.x):
a :class:`~vitedge.models.vit.ViT` whose ``forward`` can append an external distillation token (owned by
the training wrapper, not by the model) after the position embedding, and return that token's final
embedding beside the logits. The model itself has no extra parameters, so its ``state_dict`` is a ViT's.

For export only the plain ``forward(img)`` (logits) is traced; ``distill_token`` is a Python-level option
(``None`` or a tensor), never a data-dependent branch inside the graph.
"""
from __future__ import annotations

import torch

from .layers import check_image
from .upstream import compat_base
from .vit import ViT

__all__ = ["DistillableViT"]


class DistillableViT(ViT, compat_base("distill", "DistillableViT")):
    """ViT student for DeiT-style distillation (Touvron et al. 2021, arXiv 2012.12877).

    Where vit-pytorch is installed it also derives from ``vit_pytorch.distill.DistillableViT``
    (:func:`~vitedge.models.upstream.compat_base`; no parameter or method comes from it), so vit-pytorch's own
    ``DistillWrapper(teacher=..., student=DistillableViT(...))`` accepts it and trains it as its own student.

    Args: exactly :class:`~vitedge.models.vit.ViT`'s (keyword-only: image_size, patch_size, num_classes, dim,
    depth, heads, mlp_dim, pool='cls', channels=3, dim_head=64, dropout=0., emb_dropout=0.). They are kept in
    ``self.kwargs`` so :meth:`to_vit` can rebuild the plain model; ``self.dim`` and ``self.num_classes`` are
    exposed as in the reference (a distillation wrapper reads them).

    ``forward(img, distill_token=None)``:
        img: float32 (B, channels, H, W) at the constructor's H, W.
        distill_token: optional float (1, dim) learned token; it is appended after the class and patch tokens
            (it gets no position embedding), runs through the transformer, and is removed before pooling.
        Returns logits (B, num_classes); with a distill token, ``(logits, distill_tokens)`` where
        ``distill_tokens`` is (B, dim). With ``num_classes == 0`` the final tokens (B, N, dim) stand in for the
        logits, as in :class:`ViT` (the reference crashes there).

    Raises:
        ValueError: as :class:`ViT` (indivisible patch size, unknown pool; an input that is not (B, channels,
            H, W) at the constructor's size), or a distill token that is not (1, dim).
    """

    def __init__(self, *, image_size, patch_size, num_classes, dim, depth, heads, mlp_dim, pool='cls',
                 channels=3, dim_head=64, dropout=0., emb_dropout=0.):
        kwargs = dict(image_size=image_size, patch_size=patch_size, num_classes=num_classes, dim=dim, depth=depth,
                      heads=heads, mlp_dim=mlp_dim, pool=pool, channels=channels, dim_head=dim_head,
                      dropout=dropout, emb_dropout=emb_dropout)
        super().__init__(**kwargs)
        self.args = ()
        self.kwargs = kwargs
        self.dim = dim
        self.num_classes = num_classes

    def to_vit(self) -> ViT:
        """A plain :class:`~vitedge.models.vit.ViT` with the same arguments and a copy of these weights.

        Its logits equal this model's ``forward(img)`` (without a distill token). Like the reference, the new
        model is built fresh (training mode, default device) and the weights are copied into it.
        """
        v = ViT(**self.kwargs)
        v.load_state_dict(self.state_dict())
        return v

    def forward(self, img: torch.Tensor, distill_token: torch.Tensor | None = None):
        check_image(self, img, self.in_channels, self.image_size)
        x = self.to_patch_embedding(img)
        if self.pool == 'cls':
            x = torch.cat((self.cls_token.unsqueeze(0).expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embedding
        distilling = distill_token is not None
        if distilling:
            if distill_token.dim() != 2 or distill_token.shape[0] != 1 or distill_token.shape[1] != self.dim:
                raise ValueError(f"distill_token must be (1, {self.dim}), got {tuple(distill_token.shape)}")
            x = torch.cat((x, distill_token.unsqueeze(0).expand(x.shape[0], -1, -1)), dim=1)
        if not distilling and self.class_token_only():  # as ViT: the last block for the class token only
            return self.class_token_logits(self.dropout(x))
        x = self.transformer(self.dropout(x))
        if not distilling:
            return x if self.mlp_head is None else self.head(x)
        x, distill_tokens = x[:, :-1], x[:, -1]
        return (x if self.mlp_head is None else self.head(x)), distill_tokens
