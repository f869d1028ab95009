"""The compute device of an export or a run: ``cpu`` (default), ``cuda`` or ``cuda:N``.

Only the libtorch targets (TorchScript, AOTInductor) export and run on CUDA; every other target refuses a CUDA
device with one line (:func:`check_target_device`). The device an artifact was exported for is recorded in its
manifest as ``export.device`` ("cpu" or "cuda"; any other value is refused when read, see
:func:`artifact_device`). The C++ runner takes the same strings (``Options::device``, ``vitedge-bench --device``).
"""
from __future__ import annotations

import re

from .errors import ArtifactError, RuntimeMissingError, UsageError

__all__ = ["CUDA_TARGETS", "artifact_device", "check_target_device", "device_type", "parse_device", "require_device"]

CUDA_TARGETS = ("torchscript", "aotinductor")
_DEVICE = re.compile(r"cpu|cuda(:[0-9]{1,3})?")


def parse_device(device: str | None) -> str:
    """``None`` -> "cpu"; "cpu", "cuda" or "cuda:N" (N of at most 3 digits) unchanged.

    Raises:
        UsageError: any other string (one line naming the accepted forms).
    """
    if device is None:
        return "cpu"
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise UsageError(f"device must be cpu, cuda or cuda:N, got {str(device)[:40]!r}")
    return device


def device_type(device: str) -> str:
    """"cuda:1" -> "cuda"; "cpu" -> "cpu"."""
    return device.partition(":")[0]


def check_target_device(target: str, device: str, precision: str = "fp32") -> None:
    """Raise UsageError unless ``target`` can export/run on ``device`` (CUDA: torchscript and aotinductor only,
    and not TorchScript's int8, whose dynamic-quantized Linear layers run on the CPU alone)."""
    if device_type(device) == "cpu":
        return
    if target not in CUDA_TARGETS:
        raise UsageError(f"--device {device}: target {target} runs on the CPU in vitedge; only "
                         f"{' and '.join(CUDA_TARGETS)} export and run on CUDA")
    if precision == "int8":
        raise UsageError(f"--device {device}: {target} int8 (dynamic-quantized Linear layers) runs on the CPU only; "
                         "use fp32 or fp16 on CUDA")


def require_device(device: str) -> None:
    """Raise RuntimeMissingError when ``device`` is a CUDA device that this PyTorch cannot use (CPU-only build, no
    GPU visible, or index out of range)."""
    if device_type(device) != "cuda":
        return
    import torch
    if not torch.cuda.is_available():
        why = "was built without CUDA (CPU-only torch)" if torch.version.cuda is None else "sees no CUDA GPU"
        raise RuntimeMissingError(f"device {device} requested, but this PyTorch {why}; use --device cpu")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise RuntimeMissingError(f"device {device} requested, but only {torch.cuda.device_count()} CUDA device(s) "
                                  "are visible")


def artifact_device(manifest: dict) -> str:
    """The device an artifact was exported for: its manifest's ``export.device``, "cpu" when absent.

    Raises:
        ArtifactError: a value other than "cpu" or "cuda" (the field reaches the runtime: allow-listed).
    """
    exp = manifest.get("export")
    dev = exp.get("device", "cpu") if isinstance(exp, dict) else "cpu"
    if dev not in ("cpu", "cuda"):
        raise ArtifactError(f"manifest export.device {str(dev)[:40]!r} is not cpu or cuda; refusing the artifact")
    return dev
