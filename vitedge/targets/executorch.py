"""ExecuTorch target: ``torch.export`` -> XNNPACK-delegated ``.pte`` program, run by the ExecuTorch runtime.

Recipe (ExecuTorch docs, "Building and Running ExecuTorch with XNNPACK Backend" and "Quantization Overview"):

- fp32: ``torch.export.export`` with a batch-2 example and ``Dim("batch", min=1, max=max_batch)`` (a batch-1
  example specialises the batch for several families; MobileViT raises), parameter-only computations folded into
  constants (:func:`fold_constants`), then
  ``executorch.exir.to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`` and
  ``.to_executorch()``. Operators XNNPACK does not take stay on ExecuTorch's portable/optimized CPU kernels.
- int8: PT2E static post-training quantization with ``XNNPACKQuantizer`` and
  ``get_symmetric_quantization_config(is_per_channel=True)`` (int8 symmetric per-channel weights, int8 affine
  per-tensor activations): ``prepare_pt2e`` on the exported graph, calibration on real images (the CLI uses the
  digits train split), ``convert_pt2e``, re-export, lower to XNNPACK as above.

The ExecuTorch memory planner sizes every buffer for the largest batch, so the dynamic batch has an upper bound
(``target_options["max_batch"]``, default :data:`DEFAULT_MAX_BATCH`); the batch the program really holds
(``torch.export`` may tighten the bound, found by bisection at export) is recorded in the manifest under
``executorch.max_batch``; the runner splits a larger batch into chunks of that size.

The same ``.pte`` runs in the ExecuTorch runtime on Linux x86-64 (the Python bindings used here, and the C++
runner's ExecuTorch backend), Android and iOS.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError, RuntimeMissingError, UsageError, first_line
from ..manifest import Artifact
from . import Target, register_target
from ..errors import ExportError
from ..models.registry import family_recipe

FILENAME = "model.pte"
DEFAULT_MAX_BATCH = 32
DELEGATE = "XnnpackBackend"

PRECISIONS = {"fp32": None, "int8": ("static", "dynamic")}


def _quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")
    for name in ("torchao", "executorch", "torch._export", "torch.export"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return ctx


def _import_exir():
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    except ImportError as e:
        raise RuntimeMissingError(f"executorch is not installed (pip install 'vitedge[executorch]'): {e}") from None
    # The edge-dialect IR validity check re-traces with the example's concrete batch and so specialises the
    # symbolic batch for some families (MobileViT: the lowered program then refuses any other batch at run
    # time). It is a verifier only; the export driver's parity run at batches 1, 3 and 8 checks the result.
    return XnnpackPartitioner, to_edge_transform_and_lower, EdgeCompileConfig(_check_ir_validity=False)


def default_int8_mode(family: str) -> str:
    """The int8 mode ``vitedge export --target executorch --precision int8`` uses for a zoo family: its spec's
    ``"executorch_int8"`` recipe: "dynamic" for MobileViT (static int8 calibrated on digits gave cosine 0.975 vs
    fp32 on the photos, below the 0.99 gate; dynamic kept 0.9999 and 0.0 points of digits top-1), "static"
    otherwise (measured on LeViT and DeiT)."""
    return family_recipe(family, "executorch_int8")["mode"]


def quantize_int8(model: nn.Module, example: torch.Tensor, calibration: np.ndarray | None, dynamic_shapes,
                  batch: int = 16, mode: str = "static") -> tuple[nn.Module, dict]:
    """PT2E int8 for XNNPACK: returns (converted fx GraphModule, quantization info for the manifest).

    ``mode``: "static" (calibrated int8 activations, the default) or "dynamic" (int8 weights, activations
    quantized at run time; no calibration).

    Args:
        model: eager model, float32 (B, C, H, W) -> logits.
        example: float32 (B, C, H, W) example for ``torch.export`` (batch >= 2 when ``dynamic_shapes`` is set).
        calibration: float32 (N, C, H, W) preprocessed images the observers see (run in chunks of ``batch``).
    Recipe: ExecuTorch "Quantization Overview" / XNNPACK backend docs: ``XNNPACKQuantizer`` with
    ``get_symmetric_quantization_config(is_per_channel=True)``, torchao's ``prepare_pt2e``/``convert_pt2e``.
    Raises:
        UsageError: no calibration images, or images whose (C, H, W) differs from the example's.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.constant_fold import constant_fold
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    def exported(m):
        """The exported graph with parameter-only computations folded into constants (e.g. LeViT's eval-mode
        BatchNorm folding, ``w * gamma / sqrt(var + eps)``): XNNPACK's per-channel int8 weights must be constants
        ("ExportedProgram must be provided to extract per channel params" otherwise); in canonical layout, for the
        reasons given in :func:`fold_constants`."""
        gm = torch.export.export(m, (example,), dynamic_shapes=dynamic_shapes, strict=False).module()
        constant_fold(gm)
        for node in gm.graph.nodes:  # folded constants in canonical layout, as in fold_constants
            if node.op == "get_attr" and isinstance(t := getattr(gm, node.target, None), torch.Tensor):
                *path, leaf = node.target.split(".")
                copy = _canonical_copy(t)
                setattr(gm.get_submodule(".".join(path)), leaf,
                        nn.Parameter(copy, requires_grad=False) if isinstance(t, nn.Parameter) else copy)
        return gm

    if mode == "dynamic":  # int8 weights; activations quantized per run by XNNPACK (Linear layers only)
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True,
                                                                                     is_dynamic=True))
        graph = exported(model)
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            prepared(example)
        return convert_pt2e(prepared), {
            "mode": "dynamic", "scheme": "PT2E XNNPACKQuantizer, dynamic int8 activations (per run), symmetric "
            "per-channel int8 weights", "quantizer": "executorch XNNPACKQuantizer + "
            "get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)"}
    if calibration is None or len(calibration) == 0:
        raise UsageError("ExecuTorch static int8 (PT2E) needs calibration images")
    calib = torch.from_numpy(np.ascontiguousarray(calibration, dtype=np.float32))
    if tuple(calib.shape[1:]) != tuple(example.shape[1:]):
        raise UsageError(f"calibration images are {tuple(calib.shape[1:])}, the model takes {tuple(example.shape[1:])}")
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = exported(model)
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in range(0, len(calib), batch):
            chunk = calib[i:i + batch]
            if len(chunk) < 2 and dynamic_shapes is not None:  # keep the batch inside the exported range
                chunk = calib[max(0, len(calib) - 2):]
            prepared(chunk)
    converted = convert_pt2e(prepared)
    info = {"mode": "static", "method": "histogram (activations), per-channel minmax (weights)",
            "observers": {"activations": "HistogramObserver", "weights": "PerChannelMinMaxObserver"}, "scheme": "PT2E XNNPACKQuantizer, symmetric int8, per-channel "
            "weights, per-tensor activations", "quantizer": "executorch XNNPACKQuantizer + "
            "get_symmetric_quantization_config(is_per_channel=True)", "calibration_images": int(len(calib))}
    return converted, info


def fold_constants(program: "torch.export.ExportedProgram") -> tuple["torch.export.ExportedProgram", int]:
    """Fold the program's parameter-only computations into constants (ExecuTorch's ``constant_prop_pass``); returns
    the program and the number of constants it made.

    XNNPACK takes a Linear or Conv only when its weight is a constant: a weight computed in the graph stays on the
    portable kernels (LeViT's eval-mode BatchNorm folding ``w * gamma / sqrt(var + eps)`` and its stacked q/k/v
    weight: 212 ms per LeViT-128S image at 224x224 unfolded, 11 ms folded, on 2 Xeon cores). Each new constant is
    stored as a copy in the canonical contiguous layout, working around two ways ExecuTorch 1.5.1 mis-serializes a
    folded view: from the start of its storage (ViT's last block reads ``to_qkv.weight[inner:]``: the wrong rows,
    max_abs 0.17 on a tiny ViT), and with the dim order of its strides (LeViT's permuted attention bias of a 1x1
    stage, shape (heads, 1, 1): "The expanded size of the tensor (1) must match the existing size (8)" at any batch).
    """
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    before = set(program.constants)
    program = constant_prop_pass(program)
    made = [name for name in program.constants if name not in before]
    for name in made:
        if isinstance(program.constants[name], torch.Tensor):
            program.constants[name] = _canonical_copy(program.constants[name])
    return program, len(made)


def _canonical_copy(t: torch.Tensor) -> torch.Tensor:
    """A detached copy of ``t`` with its own storage and row-major strides (``Tensor.contiguous`` keeps a view's
    storage offset, and the strides of size-1 dimensions, both of which ExecuTorch 1.5.1 serializes wrongly)."""
    with torch.no_grad():
        return t.detach().clone(memory_format=torch.contiguous_format)


def write(model: nn.Module, example: torch.Tensor, directory: Path, options: dict) -> dict:
    """Export ``model`` to ``directory/model.pte`` (XNNPACK-delegated ExecuTorch program).

    options: dynamic_batch, precision (fp32 | int8), quantization (int8: {"calibration": float32 (N, C, H, W)
    array, ...}) and target_options = {"max_batch": int (upper bound of the dynamic batch, default 32)}.
    Raises UsageError (bad max_batch / no calibration), RuntimeMissingError (executorch not installed);
    exporter failures propagate (the export driver reports them in one line).
    """
    XnnpackPartitioner, to_edge_transform_and_lower, edge_config = _import_exir()
    precision = options.get("precision", "fp32")
    dynamic = options.get("dynamic_batch", True)
    max_batch = int((options.get("target_options") or {}).get("max_batch", DEFAULT_MAX_BATCH))
    if dynamic and max_batch < 2:
        raise UsageError(f"executorch max_batch must be >= 2 for a dynamic batch, got {max_batch}")
    if dynamic and example.shape[0] < 2:
        example = example.expand(2, *example.shape[1:]).contiguous()
    shapes = ({0: torch.export.Dim("batch", min=1, max=max_batch)},) if dynamic else None
    ctx = _quiet()
    folded = None  # fp32: constants made by fold_constants (int8 folds before quantizing, in quantize_int8)
    try:
        quant = None
        with torch.no_grad():
            if precision == "int8":
                q = dict(options.get("quantization") or {})
                model, quant = quantize_int8(model, example, q.get("calibration"), shapes,
                                             mode=q.get("mode") or "static")
            program = torch.export.export(model, (example,), dynamic_shapes=shapes, strict=False)
            if precision == "fp32":
                program, folded = fold_constants(program)
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                                  compile_config=edge_config if dynamic else None)
            et = lowered.to_executorch()
    finally:
        ctx.__exit__(None, None, None)
    (directory / FILENAME).write_bytes(et.buffer)
    if dynamic:  # the batch the planned buffers really hold (torch.export may tighten the Dim's bound)
        max_batch = _largest_runnable_batch(directory / FILENAME, tuple(example.shape[1:]), max_batch)
    graph = lowered.exported_program().graph_module.graph
    delegated = sum(1 for n in graph.nodes if n.op == "call_function" and "executorch_call_delegate" in str(n.target))
    others: dict[str, int] = {}
    for n in graph.nodes:
        if n.op == "call_function" and "executorch_call_delegate" not in str(n.target) and \
                "getitem" not in str(n.target):
            name = str(getattr(n.target, "__name__", n.target))
            others[name] = others.get(name, 0) + 1
    info = {"method": "torch.export + to_edge_transform_and_lower(XnnpackPartitioner) + to_executorch",
            "example_batch": int(example.shape[0]), "edge_ir_validity_check": not dynamic, "delegate": DELEGATE, "delegated_subgraphs": delegated,
            "non_delegated_ops": dict(sorted(others.items())), "constants_folded": folded}
    return {"artifact": FILENAME, "backend": "executorch", "export": info, "quantization": quant,
            "manifest": {"executorch": {"max_batch": max_batch if dynamic else int(example.shape[0]),
                                        "delegate": DELEGATE}}}


def _largest_runnable_batch(path: Path, chw: tuple[int, ...], upper: int) -> int:
    """The largest batch B <= ``upper`` at which the program at ``path`` runs a zero (B, C, H, W) input, found by
    bisection between 2 and ``upper`` (the memory planner sizes each buffer from the exported upper bound of the
    batch, which ``torch.export`` may tighten below the requested one, e.g. 15 instead of 32 for MobileViT-XS at
    64x64; the runner splits larger batches into chunks of the recorded size). Raises ExportError if even batch 2
    does not run."""
    runner = ExecuTorchRunner(path)

    def runs(b: int) -> bool:
        try:
            runner.run(np.zeros((b, *chw), np.float32))
            return True
        except ArtifactError:
            return False
    if runs(upper):
        return upper
    lo, hi = 2, upper  # runs(lo) must hold; runs(hi) does not
    if not runs(lo):
        raise ExportError("the ExecuTorch program does not run at batch 2 (its dynamic batch was specialised)")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if runs(mid) else (lo, mid)
    return lo


def _bindings():
    try:
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime, Verification
    except ImportError as e:
        raise RuntimeMissingError(f"the ExecuTorch runtime is not installed (pip install 'vitedge[executorch]'): "
                                  f"{e}") from None
    return Runtime, Verification, portable_lib


def set_threads(threads: int) -> int:
    """Size ExecuTorch's shared CPU threadpool (used by XNNPACK) to ``threads``; returns the size it reports.

    Uses the runtime bindings' ``_unsafe_reset_threadpool`` (marked experimental upstream): the pool is
    process-wide, so it applies to every ExecuTorch program in the process.
    """
    _, _, lib = _bindings()
    if threads and threads != lib._threadpool_get_thread_count():
        lib._unsafe_reset_threadpool(int(threads))
    return int(lib._threadpool_get_thread_count())


class ExecuTorchRunner:
    """Runs a ``.pte`` program's ``forward`` method with the ExecuTorch runtime's Python bindings (CPU, XNNPACK)."""

    def __init__(self, path: Path, threads: int | None = None, input_shape: list[int] | None = None,
                 max_batch: int | None = None, data: bytes | None = None):
        """Load the program file ``path``, or the program bytes ``data`` already read (and hashed) by
        :meth:`Artifact.read_file` (``path`` then only names it in messages). Raises ArtifactError,
        RuntimeMissingError."""
        Runtime, Verification, _ = _bindings()
        self.threads = set_threads(threads or torch.get_num_threads())
        self.input_shape = input_shape
        self.max_batch = max_batch
        rt = Runtime.get()
        if not rt.backend_registry.is_available(DELEGATE):
            raise RuntimeMissingError(f"this ExecuTorch runtime has no {DELEGATE} registered")
        try:
            data = Path(path).read_bytes() if data is None else data
            self.program = rt.load_program(data, verification=Verification.InternalConsistency)
            self.method = self.program.load_method("forward")
        except OSError as e:
            raise ArtifactError(f"cannot read ExecuTorch program {path}: {e.strerror or e}") from None
        except Exception as e:  # noqa: BLE001 - the bindings raise RuntimeError with ExecuTorch error codes
            raise ArtifactError(f"cannot load ExecuTorch program {path}: {first_line(e, 300)}") from None
        try:
            from executorch.version import __version__ as version
        except ImportError:
            version = None
        self.runtime = f"executorch-{version}" if version else "executorch"

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """float32 (B, C, H, W) -> list of float32 outputs (logits (B, classes) first).

        B above the exported maximum batch (the program's buffers are planned for it) runs in chunks of it.
        Raises UsageError for a non-float32 input or a (C, H, W) other than the program's.
        """
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
            raise UsageError(f"ExecuTorch program takes float32 (B, C, H, W), got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
        want = self.input_shape
        if want and any(w not in (-1, g) for w, g in zip(want[1:], x.shape[1:])):
            raise UsageError(f"input shape {tuple(x.shape)} does not fit the program's input "
                             f"(B, {', '.join(str(w) for w in want[1:])})")
        if want and want[0] > 0 and x.shape[0] != want[0]:
            raise UsageError(f"this ExecuTorch program has a fixed batch of {want[0]}, got {x.shape[0]}")
        if self.max_batch and x.shape[0] > self.max_batch:  # buffers are planned for max_batch: run in chunks
            parts = [self.run(x[i:i + self.max_batch]) for i in range(0, x.shape[0], self.max_batch)]
            return [np.concatenate(o, axis=0) for o in zip(*parts)]
        try:
            outs = self.method.execute([torch.from_numpy(np.ascontiguousarray(x))])
        except Exception as e:  # noqa: BLE001 - runtime errors come back as RuntimeError with an error code
            raise ArtifactError(f"ExecuTorch execution failed: {first_line(e, 300)}") from None
        return [o.detach().numpy().copy() for o in outs]


def load(artifact: Artifact, threads: int | None = None) -> ExecuTorchRunner:
    """Load the artifact's ``.pte`` into the ExecuTorch runtime from the bytes :meth:`Artifact.read_file` read once
    (hashed when verified), with XNNPACK's threadpool at ``threads``.
    Raises ArtifactError (unreadable/corrupt program), RuntimeMissingError (executorch not installed)."""
    m = artifact.manifest
    shape = (m.get("inputs") or [{}])[0].get("shape")
    return ExecuTorchRunner(artifact.file, threads, shape, (m.get("executorch") or {}).get("max_batch"),
                            data=artifact.read_file())


@register_target
class ExecuTorchTarget(Target):
    """``--target executorch``: the functions above (``write``, ``load``, ``default_int8_mode``)."""

    name = "executorch"
    title = "ExecuTorch"
    precisions = PRECISIONS

    def default_int8_mode(self, family: str | None) -> str:
        return default_int8_mode(family)
