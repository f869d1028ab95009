"""int8 and fp16 for TorchScript artifacts (PyTorch eager-mode APIs, run by libtorch from Python or C++).

int8: ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (int8 weights per tensor, activations
quantized at run time by fbgemm/x86). Conv layers stay float, so MobileViT's conv stem gains little from it, and a
model whose weights are mostly convolutions (LeViT, whose "linear" layers are 1x1 convolutions) is refused rather
than written as a float model called int8; the ONNX and OpenVINO recipes cover convolutions.
fp16: weights and compute in float16 behind float32 input/output casts.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..errors import UsageError

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


MIN_LINEAR_SHARE = 0.25  # least share of the Linear + Conv weights that int8 must cover, else it is refused


def dynamic_int8(model: nn.Module) -> tuple[nn.Module, dict]:
    """A copy of ``model`` with int8 dynamic quantization of its Linear layers, and the manifest's description.

    Raises:
        UsageError: the Linear layers hold under :data:`MIN_LINEAR_SHARE` of the model's Linear and Conv weights
            (LeViT, built of 1x1 convolutions: its "int8" artifact was the fp32 model, 25.18 MB against 25.19 MB
            and the same latency), so the artifact would be float in all but name; the message names the targets
            whose int8 covers convolutions.
    """
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd))
    if linear < MIN_LINEAR_SHARE * (linear + conv):
        raise UsageError(f"TorchScript int8 quantizes nn.Linear layers only (PyTorch dynamic quantization) and "
                         f"they hold {linear / max(linear + conv, 1):.0%} of this model's weights (the rest are "
                         "convolutions): the artifact would run in float. Use --target onnx or openvino for int8, "
                         "or --precision fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    return q, {"scheme": "torch.ao.quantization.quantize_dynamic", "mode": "dynamic", "per_channel": False,
               "weights": "int8 per tensor", "activations": "dynamic (per batch) uint8",
               "quantized_op_types": ["Linear"], "quantized_nodes": n_linear,
               "linear_weight_share": round(linear / max(linear + conv, 1), 4),
               "kept_float_op_types": ["Conv2d", "LayerNorm", "BatchNorm2d", "softmax", "activations"],
               "kept_float_conv_layers": n_conv}


def fp16(model: nn.Module) -> tuple[nn.Module, dict]:
    """A float16 copy of ``model`` behind float32 I/O casts, and the manifest's description."""
    return Float16Wrapper(copy.deepcopy(model).eval()).eval(), {"scheme": "model.half() with float32 I/O", "io": "float32"}
