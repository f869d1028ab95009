"""ONNX target: ``torch.onnx.export(dynamo=True)`` with a symbolic batch dimension, run by ONNX Runtime.

The current (dynamo) exporter is used with a batch-2 example and ``Dim("batch")``: with a batch-1 example
it may specialise the batch to 1 (ENVIRONMENT.md). If it fails, the legacy TorchScript-based exporter
(opset 17, ``dynamic_axes``) is the documented fallback, and the manifest records which one ran and why.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError, RuntimeMissingError
from ..manifest import Artifact

FILENAME = "model.onnx"
DEFAULT_OPSET = 18
LEGACY_OPSET = 17
MAX_BATCH = 1024


PRECISIONS = {"fp32": None, "fp16": None, "int8": ("static", "dynamic")}


def write(model: nn.Module, example: torch.Tensor, directory: Path, options: dict) -> dict:
    """Export ``model`` to ``directory/model.onnx``.

    options: input_names, output_names, dynamic_batch, opset, precision (fp32 | fp16 | int8) and, for int8,
    quantization = {"mode": "static"|"dynamic", "method": "minmax"|"percentile"|"entropy",
    "calibration": float32 (N, C, H, W) array, ...} (see :func:`vitedge.quantize.onnx.quantize_int8`).
    """
    import onnx

    precision = options.get("precision", "fp32")
    final = directory / FILENAME
    path = final if precision == "fp32" else directory / "_fp32.onnx"
    in_names, out_names = options["input_names"], options["output_names"]
    dynamic = options.get("dynamic_batch", True)
    opset = options.get("opset") or DEFAULT_OPSET
    if dynamic and example.shape[0] < 2:
        example = example.expand(2, *example.shape[1:]).contiguous()
    info: dict = {}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed. Skipping ..."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},) if dynamic else None
            torch.onnx.export(model, (example,), str(path), input_names=in_names, output_names=out_names,
                              opset_version=opset, dynamo=True, dynamic_shapes=shapes, external_data=False,
                              optimize=True, verbose=False)
            info = {"method": "torch.onnx.export(dynamo=True)", "opset": opset}
        except Exception as e:  # noqa: BLE001 - fall back to the legacy exporter, recording why
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            path.unlink(missing_ok=True)
            axes = {n: {0: "batch"} for n in in_names + out_names} if dynamic else None
            torch.onnx.export(model, (example,), str(path), input_names=in_names, output_names=out_names,
                              opset_version=LEGACY_OPSET, dynamo=False, dynamic_axes=axes)
            info = {"method": "torch.onnx.export(dynamo=False) [legacy fallback]", "opset": LEGACY_OPSET,
                    "fallback_reason": reason[:500]}
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops: dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    info["ops"] = dict(sorted(ops.items()))
    quant = None
    if precision != "fp32":
        from ..quantize import onnx as oq
        if precision == "fp16":
            quant = oq.convert_fp16(path, final)
        else:
            q = dict(options.get("quantization") or {})
            calib = q.pop("calibration", None)
            q.pop("calibration_info", None)
            quant = oq.quantize_int8(path, final, calibration=None if calib is None else np.asarray(calib), **q)
        path.unlink()
    return {"artifact": FILENAME, "backend": "onnxruntime", "opset": info["opset"], "export": info,
            "quantization": quant}


class OnnxRuntimeRunner:
    """Runs an ONNX file with ONNX Runtime's CPU execution provider."""

    def __init__(self, path: Path, threads: int | None = None, session_config: dict | None = None,
                 external_data: list[str] | None = None):
        """``external_data``: the file's external-data locations if already checked by
        :func:`vitedge.safety.check_onnx_external_data`; None checks them here (ArtifactError if unsafe)."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeMissingError("onnxruntime is not installed (pip install onnxruntime)") from None
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = threads or torch.get_num_threads()  # default: follow torch's setting
        so.inter_op_num_threads = 1
        for key, value in (session_config or {}).items():  # stored with the artifact by its quantization recipe
            so.add_session_config_entry(str(key), str(value))
        if external_data is None:  # no location outside the folder: checked before ORT opens the file
            from ..safety import check_onnx_external_data
            external_data = check_onnx_external_data(path)
        self.external_data = external_data
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types with long messages
            raise ArtifactError(f"cannot load ONNX file {path}: {str(e).strip().splitlines()[0][:300]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.runtime = f"onnxruntime-{ort.__version__}"

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """float32 (B, C, H, W) -> list of float32 outputs (logits first)."""
        return self.session.run(None, {self.input_name: x})


def load(artifact: Artifact, threads: int | None = None) -> OnnxRuntimeRunner:
    """Open the artifact's ONNX file in ONNX Runtime with the session config its manifest records.
    Raises ArtifactError / RuntimeMissingError."""
    quant = artifact.manifest.get("quantization") or {}
    from ..safety import check_onnx_external_data
    locations = check_onnx_external_data(artifact.file)  # before ONNX Runtime opens anything
    files = artifact.manifest.get("files") or {}  # empty only for the export driver's own parity run
    base = Path(artifact.manifest["artifact"]).parent
    unlisted = [loc for loc in locations if files and (base / loc).as_posix() not in files]
    if unlisted:  # its bytes would reach the runtime without a SHA-256 check
        raise ArtifactError(f"ONNX file {artifact.file} reads external data {unlisted[0]!r}, which its manifest "
                            "does not list")
    return OnnxRuntimeRunner(artifact.file, threads, quant.get("session_config"), locations)
