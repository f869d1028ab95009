"""TorchScript target: ``torch.jit.trace`` + ``torch.jit.freeze``, loadable by libtorch from C++.

Tracing (not scripting) because it is the path libtorch deployment takes and it works on every
export-friendly model here; the models never read the batch size into a Python int, so the traced graph
keeps the batch dimension symbolic (checked at export by running batches 1 and 3 against eager).
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError
from ..manifest import Artifact
from . import Target, register_target
from ..device import device_type
from ..quantize import pytorch as tq
from ..safety import safe_zip_members

FILENAME = "model.pt"
CODE_BEARING = "TorchScript file"  # loading runs its code (a scripted __setstate__): runtime.open_artifact gates it


def _quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")  # TracerWarning and the TorchScript deprecation notice
    return ctx


PRECISIONS = {"fp32": None, "fp16": None, "int8": ("dynamic",)}


def write(model: nn.Module, example: torch.Tensor, directory: Path, options: dict) -> dict:
    """Trace ``model`` on ``example`` (B, C, H, W), freeze, save ``directory/model.pt``.

    ``options["precision"]``: fp32 | fp16 (float16 compute, float32 I/O) | int8 (dynamic int8 Linear layers).
    ``options["device"]``: cpu (default) | cuda | cuda:N: trace a copy of the model on that device (the graph's
    weights and any device the trace records are that device's; checked by :func:`vitedge.device.check_target_device`
    before). float32 input and output stay the interface; the runner moves them.
    """
    precision = options.get("precision", "fp32")
    device = options.get("device") or "cpu"
    quant = None
    if precision == "int8":
        model, quant = tq.dynamic_int8(model)
    elif precision == "fp16":
        model, quant = tq.fp16(model)
    if device != "cpu":
        model = (model if quant is not None else copy.deepcopy(model)).to(device)
        example = example.to(device)
    ctx = _quiet()
    try:
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
            frozen = torch.jit.freeze(traced)
        # Serialise in memory, then write with Python: on a full disk libtorch's zip writer throws again from its
        # destructor and aborts the process (std::terminate); a Python write raises a clean OSError(ENOSPC).
        buf = io.BytesIO()
        torch.jit.save(frozen, buf)
        with open(directory / FILENAME, "wb") as f:
            f.write(buf.getbuffer())
    finally:
        ctx.__exit__(None, None, None)
    return {"artifact": FILENAME, "backend": "libtorch", "quantization": quant,
            "export": {"method": "torch.jit.trace + torch.jit.freeze", "example_batch": int(example.shape[0]),
                       "device": device_type(device)}}


class TorchScriptRunner:
    """Runs a TorchScript file with ``torch.jit.load`` on ``device`` (cpu, cuda, cuda:N)."""

    runtime = "libtorch"

    def __init__(self, path: Path, threads: int | None = None, data: bytes | None = None, device: str = "cpu"):
        """Load the TorchScript file ``path``, or, given ``data``, those bytes (``path`` then only names it in
        messages): the bytes are zip-checked (:func:`vitedge.safety.safe_zip_members`) and handed to libtorch from
        memory, so what runs is exactly what was checked and hashed. ``device``: where the module's tensors are
        mapped (``map_location``) and the input is copied to. Raises ArtifactError."""
        self.device = device
        if threads:
            torch.set_num_threads(threads)
        if data is None:
            try:
                data = Path(path).read_bytes()
            except OSError as e:
                raise ArtifactError(f"cannot read TorchScript file {path}: {e.strerror or e}") from None
        safe_zip_members(path, data=data)  # a TorchScript file is a zip: no escaping names or bomb before libtorch
        ctx = _quiet()
        try:
            self.module = torch.jit.load(io.BytesIO(data), map_location=device).eval()
        except Exception as e:  # noqa: BLE001 - libtorch raises RuntimeError with a long C++ trace
            raise ArtifactError(f"cannot load TorchScript file {path}: {str(e).strip().splitlines()[0]}") from None
        finally:
            ctx.__exit__(None, None, None)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """float32 (B, C, H, W) -> list of float32 outputs (logits (B, classes) first), as CPU numpy arrays (on
        CUDA: input copied to the device, outputs copied back, which waits for the GPU)."""
        with torch.inference_mode():
            t = torch.from_numpy(x)
            out = self.module(t if self.device == "cpu" else t.to(self.device))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.cpu().numpy() for o in outs]


def load(artifact: Artifact, threads: int | None = None, device: str = "cpu") -> TorchScriptRunner:
    """Load the artifact's TorchScript file from the bytes :meth:`Artifact.read_file` read once (and, for a
    verified artifact, hashed against the manifest). Raises ArtifactError if they differ or libtorch cannot read
    them."""
    return TorchScriptRunner(artifact.file, threads, data=artifact.read_file(), device=device)


@register_target
class TorchScriptTarget(Target):
    """``--target torchscript``: the functions above (``write``, ``load``)."""

    name = "torchscript"
    title = "TorchScript"
    precisions = PRECISIONS
    code_bearing = CODE_BEARING
