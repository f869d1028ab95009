"""AOTInductor target: ``torch.export`` + ``torch._inductor.aoti_compile_and_package`` to a ``.pt2`` package.

The package holds a shared library compiled by Inductor (C++ for CPU) with the weights inside it; Python
loads it with ``torch._inductor.aoti_load_package`` and C++ with libtorch's
``torch::inductor::AOTIModelPackageLoader`` (the vitedge C++ runner's ``aotinductor`` backend).
Upstream recipe: https://pytorch.org/docs/stable/torch.compiler_aot_inductor.html

- The batch dimension is exported symbolic (``torch.export.Dim("batch")``) from a batch-2 example (with a
  batch-1 example ``torch.export`` specialises the batch to 1, as the ONNX target notes).
- Weights are frozen into the graph (``torch._inductor.config.freezing``: constant folding, weight
  prepacking) and packaged inside the compiled library (``aot_inductor.package_constants_in_so``), so
  ``model.pt2`` is self-contained.
- Inductor's compile cache goes to ``TORCHINDUCTOR_CACHE_DIR``; when it is unset, a temporary directory is
  used for the compile and removed afterwards (the default under /tmp may not be writable or may be shared).
- fp16: the model runs in float16 behind float32 input/output casts (as the TorchScript target's fp16).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError, first_line
from ..manifest import Artifact
from . import Target, register_target
from ..device import artifact_device, device_type
from ..quantize import pytorch as tq
from ..safety import safe_zip_members

FILENAME = "model.pt2"
CODE_BEARING = "AOTInductor package"  # a shared library: its constructors run on load (runtime.open_artifact)
MAX_BATCH = 1024
PRECISIONS = {"fp32": None, "fp16": None}
INDUCTOR_CONFIGS = {"freezing": True, "aot_inductor.package_constants_in_so": True}


@contextlib.contextmanager
def _cache_dir():
    """Point TORCHINDUCTOR_CACHE_DIR at a private temp dir unless the user set one."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="vitedge-inductor-") as d:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = d
        try:
            yield
        finally:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)


def write(model: nn.Module, example: torch.Tensor, directory: Path, options: dict) -> dict:
    """``torch.export`` ``model`` on ``example`` (B, C, H, W) float32 and AOT-compile it to ``directory/model.pt2``.

    options: dynamic_batch (symbolic dim 0, from a batch-2 example), precision (fp32 | fp16 with float32 I/O),
    device (cpu | cuda | cuda:N: a copy of the model is exported and compiled for that device; a CUDA package
    runs only on CUDA, a CPU one only on the CPU).
    Raises whatever torch.export / Inductor raise (the export driver turns it into one ExportError line).
    """
    precision = options.get("precision", "fp32")
    device = options.get("device") or "cpu"
    quant = None
    if precision == "fp16":
        model, quant = tq.fp16(model)
    if device != "cpu":
        model = (model if quant is not None else copy.deepcopy(model)).to(device)
        example = example.to(device)
    dynamic = options.get("dynamic_batch", True)
    if dynamic and example.shape[0] < 2:
        example = example.expand(2, *example.shape[1:]).contiguous()
    shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},) if dynamic else None
    with warnings.catch_warnings(), _cache_dir(), torch.no_grad():
        warnings.simplefilter("ignore")
        ep = torch.export.export(model, (example,), dynamic_shapes=shapes, strict=False)
        torch._inductor.aoti_compile_and_package(ep, package_path=str(directory / FILENAME),
                                                 inductor_configs=dict(INDUCTOR_CONFIGS))
    return {"artifact": FILENAME, "backend": "libtorch", "quantization": quant,
            "export": {"method": "torch.export.export + torch._inductor.aoti_compile_and_package",
                       "example_batch": int(example.shape[0]), "inductor_configs": dict(INDUCTOR_CONFIGS),
                       "device": device_type(device), "torch": torch.__version__}}


_TMPDIR_LOCK = threading.Lock()  # TMPDIR is process-wide: one package load at a time changes it


@contextlib.contextmanager
def _private_tmpdir():
    """A new 0700 directory (``tempfile.mkdtemp``) that is also ``TMPDIR`` while the block runs, removed with all it
    holds afterwards, on success and on failure.

    libtorch's package loader (``AOTIModelPackageLoader``) extracts a ``.pt2`` into ``$TMPDIR/aotinductor_XXXXXX`` and
    leaves that folder behind when loading fails (and ``aoti_load_package`` tries twice, so two folders per failed
    load were seen in /tmp); pointing TMPDIR here keeps every extraction inside a folder we remove.
    """
    with _TMPDIR_LOCK:
        d = tempfile.mkdtemp(prefix="vitedge-aoti-")  # mode 0700, owned by us
        old = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = d
        try:
            yield Path(d)
        finally:
            if old is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = old
            shutil.rmtree(d, ignore_errors=True)


class AOTInductorRunner:
    """Runs a ``.pt2`` package with ``torch._inductor.aoti_load_package`` on the device it was compiled for."""

    runtime = "aotinductor"

    def __init__(self, path: Path, threads: int | None = None, data: bytes | None = None, device: str = "cpu"):
        """Load the package ``path``, or the package bytes ``data`` already read (and hashed) by
        :meth:`Artifact.read_file` (``path`` then only names it in messages).

        libtorch only loads a package from a path, so the bytes are zip-checked
        (:func:`vitedge.safety.safe_zip_members`), written to a private 0700 temp folder and loaded from there; that
        folder, with libtorch's extraction inside it, is removed once the load returns or fails (the loaded library
        stays mapped). ``device``: cpu, cuda or cuda:N, which must be the kind the package was compiled for (the
        caller checks it against the manifest); the input is copied there. Raises ArtifactError.
        """
        self.device = device
        if threads:
            torch.set_num_threads(threads)
        if data is None:
            if not Path(path).is_file():
                raise ArtifactError(f"AOTInductor package {path} is missing")
            try:
                data = Path(path).read_bytes()
            except OSError as e:
                raise ArtifactError(f"cannot read AOTInductor package {path}: {e.strerror or e}") from None
        try:  # a .pt2 is a zip that the loader extracts: no escaping member names, no zip bomb
            safe_zip_members(path, data=data)
        except ArtifactError as e:
            raise ArtifactError(f"cannot load AOTInductor package {path}: {e}") from None
        try:
            with _private_tmpdir() as tmp, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pkg = tmp / FILENAME
                fd = os.open(pkg, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
                with open(fd, "wb") as f:
                    f.write(data)
                logging.getLogger("torch._inductor.package.package").setLevel(logging.ERROR)  # "outdated pt2" retry
                index = int(device.partition(":")[2] or -1) if device != "cpu" else -1
                self.model = torch._inductor.aoti_load_package(str(pkg), device_index=index)
        except Exception as e:  # noqa: BLE001 - libtorch raises RuntimeError with a long C++ trace
            raise ArtifactError(f"cannot load AOTInductor package {path}: {first_line(e)}") from None

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """float32 (B, C, H, W) -> list of float32 outputs (logits (B, classes) first)."""
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            out = self.model(t if self.device == "cpu" else t.to(self.device))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().cpu().numpy() for o in outs]


def load(artifact: Artifact, threads: int | None = None, device: str = "cpu") -> AOTInductorRunner:
    """Load the artifact's ``.pt2`` package from the bytes :meth:`Artifact.read_file` read once (hashed when
    verified), through a private temp folder removed afterwards, to run on ``device``. Raises ArtifactError if it
    is missing, differs from the manifest, was compiled for another kind of device than ``device`` (manifest
    ``export.device``), or libtorch cannot read it."""
    compiled = artifact_device(artifact.manifest)
    if compiled != device_type(device):
        raise ArtifactError(f"AOTInductor package {artifact.file} was compiled for {compiled}, not {device}; run it "
                            f"with --device {compiled} or re-export it with --device {device}")
    return AOTInductorRunner(artifact.file, threads, data=artifact.read_file(), device=device)


@register_target
class AOTInductorTarget(Target):
    """``--target aotinductor``: the functions above (``write``, ``load``)."""

    name = "aotinductor"
    title = "AOTInductor"
    precisions = PRECISIONS
    code_bearing = CODE_BEARING
