"""vitedge: export Vision Transformers to TorchScript and ONNX, validate them on real images, benchmark them."""
__version__ = "0.1.0"

from .errors import VitedgeError  # noqa: E402,F401
