"""Outputs beyond logits as extra named graph outputs: attention maps (vit-pytorch's ``Recorder``) and token
embeddings (vit-pytorch's ``Extractor``), for ViT-style models built on :class:`vitedge.models.layers.Transformer`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from .layers import Transformer

__all__ = ["OUTPUTS", "WithOutputs"]

OUTPUTS = ("logits", "attentions", "embeddings")


class WithOutputs(nn.Module):
    """Wrap a ViT-style model so ``forward`` returns the requested outputs, in the order given.

    - ``logits``: (B, num_classes), the model's own output;
    - ``attentions``: (B, depth, heads, N, N) softmax attention of every layer, N including the class token,
      as ``vit_pytorch.recorder.Recorder`` returns;
    - ``embeddings``: (B, N, dim) tokens after the transformer's final LayerNorm, as
      ``vit_pytorch.extractor.Extractor`` returns.

    The model must have ``embed(img)``, ``transformer`` (a :class:`~vitedge.models.layers.Transformer`) and
    ``head(tokens)``, as :class:`vitedge.models.vit.ViT` and its subclasses do.

    Raises:
        UsageError: unknown output name, no outputs, or a model without that structure.
    """

    def __init__(self, model: nn.Module, outputs=OUTPUTS):
        super().__init__()
        outputs = tuple(outputs)
        bad = [o for o in outputs if o not in OUTPUTS]
        if bad or not outputs:
            raise UsageError(f"unknown output(s) {bad or outputs} (known: {', '.join(OUTPUTS)})")
        if not (hasattr(model, "embed") and hasattr(model, "head") and isinstance(getattr(model, "transformer", None),
                                                                                   Transformer)):
            raise UsageError(f"{type(model).__name__} has no ViT-style transformer: attention/embedding outputs are "
                             "supported for ViT-style models (vit, distillable_vit)")
        if "logits" in outputs and getattr(model, "mlp_head", True) is None:
            raise UsageError("the model has no classifier head (num_classes=0): ask for embeddings only")
        self.model = model
        self.output_names = outputs
        self._attn = "attentions" in outputs

    def forward(self, img: torch.Tensor):
        m = self.model
        x = m.embed(img)
        maps = []
        for attn, ff in m.transformer.layers:
            if self._attn:
                y, a = attn.forward_with_map(x)
                maps.append(a)
            else:
                y = attn(x)
            x = y + x
            x = ff(x) + x
        x = m.transformer.norm(x)
        values = {"embeddings": x}
        if self._attn:
            values["attentions"] = torch.stack(maps, dim=1)
        if "logits" in self.output_names:
            values["logits"] = m.head(x)
        return tuple(values[n] for n in self.output_names)
