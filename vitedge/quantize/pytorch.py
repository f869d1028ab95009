"""int8 and fp16 for TorchScript artifacts (PyTorch eager-mode APIs, run by libtorch from Python or C++).

int8: ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (int8 weights per tensor, activations
quantized at run time by fbgemm/x86). Conv layers stay float: that is why LeViT (whose "linear" layers are 1x1
convolutions) and MobileViT's conv stem gain little from it; the ONNX static recipe covers them.
fp16: weights and compute in float16 behind float32 input/output casts.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

__all__ = ["Float16Wrapper", "dynamic_int8", "fp16"]


class Float16Wrapper(nn.Module):
    """float32 (B, C, H, W) -> float32 outputs, with the wrapped model computing in float16."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor):
        out = self.model(x.half())
        if isinstance(out, (tuple, list)):
            return tuple(o.float() for o in out)
        return out.float()


def dynamic_int8(model: nn.Module) -> tuple[nn.Module, dict]:
    """A copy of ``model`` with int8 dynamic quantization of its Linear layers, and the manifest's description."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    return q, {"scheme": "torch.ao.quantization.quantize_dynamic", "mode": "dynamic", "per_channel": False,
               "weights": "int8 per tensor", "activations": "dynamic (per batch) uint8",
               "quantized_op_types": ["Linear"], "quantized_nodes": n_linear,
               "kept_float_op_types": ["Conv2d", "LayerNorm", "BatchNorm2d", "softmax", "activations"],
               "kept_float_conv_layers": n_conv}


def fp16(model: nn.Module) -> tuple[nn.Module, dict]:
    """A float16 copy of ``model`` behind float32 I/O casts, and the manifest's description."""
    return Float16Wrapper(copy.deepcopy(model).eval()).eval(), {"scheme": "model.half() with float32 I/O", "io": "float32"}
