"""vitedge: export Vision Transformers (the vit-pytorch families) to TorchScript, ONNX, AOTInductor, ExecuTorch,
OpenVINO, Core ML and TensorRT, validate them against eager PyTorch on real images, and benchmark them."""
__version__ = "0.1.0"

from .errors import VitedgeError  # noqa: E402,F401
