"""The export driver: prepare a model, write an artifact with any target, check it against eager, write the manifest.

Usable with a zoo preset (:func:`prepare_preset`) or any ``nn.Module`` and example input (:func:`export`).
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import progress, signing  # signing.sign_artifact looked up at call time (tests spy on it)
from .checkpoint import apply_checkpoint, load_state_dict, read_sidecar
from .data import make_preprocessing
from .device import check_target_device, parse_device, require_device
from .errors import ExportError, UsageError, VitedgeError, first_line
from .manifest import SCHEMA_VERSION, Artifact, atomic_directory, check_destination, read_manifest, sha256_file, \
    utc_now, versions, write_manifest
from .models.outputs import WithOutputs
from .models.zoo import create_model, family_class, get_preset, size_arg
from .parity import CUDA_FP32_TOLERANCE  # noqa: F401 - vitedge.export.CUDA_FP32_TOLERANCE, as documented
from .parity import PARITY_BATCHES, check_batches, check_tolerance, compare, eager_outputs, export_tolerance, \
    parity_photos, run_pairs
from .targets import get_target, runs_here

__all__ = ["build_model", "export", "prepare_preset"]

INPUT_NAME = "pixel_values"
MAX_PARAMS = 10**9         # largest model a manifest's model.kwargs may rebuild (counted on the meta device first)
MAX_META_OPS = 100_000     # torch calls allowed while building it on the meta device (presets: under 3,000)
MAX_META_SECONDS = 10.0    # and wall time (a huge depth of cheap layers)


class _OpBudget(torch.overrides.TorchFunctionMode):
    """Counts torch calls made while a model is built (on the meta device) and stops the build past a budget."""

    def __init__(self, limit: int, seconds: float = MAX_META_SECONDS):
        super().__init__()
        self.limit, self.calls, self.tripped = limit, 0, False
        self.deadline = time.monotonic() + seconds

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        if not self.tripped:  # stop the build once; the clean-up it unwinds through (e.g. no_grad's __exit__
            # restoring autograd, itself a torch call) must still run, or autograd stays off for the process
            if self.calls > self.limit:
                self.tripped = True
                raise _TooBig(f"more than {self.limit} tensor operations to build")
            if self.calls % 256 == 0 and time.monotonic() > self.deadline:
                self.tripped = True
                raise _TooBig(f"more than {MAX_META_SECONDS:g} s to build on the meta device")
        return func(*args, **(kwargs or {}))


class _TooBig(Exception):
    pass


def check_model_size(cls, kwargs: dict, family: str = "", max_params: int = MAX_PARAMS) -> int:
    """Build ``cls(**kwargs)`` on PyTorch's meta device (shapes only: nothing is allocated or initialised), count its
    parameters and buffers, and return that count.

    Raises:
        VitedgeError: more than ``max_params`` elements, a build that needs more than :data:`MAX_META_OPS` torch
            calls (e.g. a depth of millions), or kwargs the class does not take; one line naming the family.
    """
    what = f"manifest model.kwargs ({family or cls.__name__})"
    try:
        with torch.device("meta"), _OpBudget(MAX_META_OPS):
            model = cls(**kwargs)
        n = sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())
    except _TooBig as e:
        raise VitedgeError(f"{what} describe a model too large to rebuild ({e}); refusing it") from None
    except RecursionError:
        raise VitedgeError(f"{what} describe a model too deep to rebuild; refusing it") from None
    except Exception as e:  # noqa: BLE001 - TypeError/ValueError/AssertionError of a constructor: one line
        raise VitedgeError(f"{what} do not build a model: {first_line(e, 200)}") from None
    if n > max_params:
        raise VitedgeError(f"{what} describe a model of {n:.3g} parameters, above the limit of {max_params:.3g}; "
                           "refusing to build it")
    return n


def _tuples(v):
    """JSON lists back to tuples, recursively (vit-pytorch constructors test ``isinstance(x, tuple)``)."""
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    return v


def prepare_preset(preset: str, *, checkpoint: str | os.PathLike | None = None, num_classes: int | None = None,
                   image_size: tuple[int, int] | None = None, seed: int = 0,
                   outputs: tuple[str, ...] | None = None) -> tuple[nn.Module, dict, dict]:
    """Build a zoo preset for export.

    Args:
        preset: zoo name (``vitedge zoo``).
        checkpoint: safetensors / torch state_dict file to load (never unpickled); without one the weights are
            the preset's seeded random initialisation (reproducible, so ``validate`` can rebuild them).
        num_classes: override the classifier size (e.g. 10 for a digits checkpoint).
        image_size: (H, W) override of the input size.
        outputs: graph outputs beyond logits, e.g. ``("logits", "attentions", "embeddings")`` (ViT-style models,
            see :class:`vitedge.models.outputs.WithOutputs`); None for the model's own outputs.
    Returns:
        (model in eval mode, model spec for the manifest, preprocessing dict).
    Raises:
        UsageError: unknown preset or an image size the family cannot take.
        CheckpointError: unreadable checkpoint or one that does not fit.
    """
    p = get_preset(preset)
    overrides: dict = {}
    sidecar = None
    if checkpoint is not None:
        sidecar = read_sidecar(checkpoint)
        if sidecar and sidecar.get("preset") == preset:  # defaults recorded by `vitedge train`
            num_classes = sidecar["num_classes"] if num_classes is None else num_classes
            image_size = tuple(sidecar["image_size"]) if image_size is None else image_size
    if num_classes is not None:
        overrides["num_classes"] = int(num_classes)
    size = tuple(p.input_size)
    if image_size is not None:
        size = (int(image_size[0]), int(image_size[1]))
        key, kind = size_arg(p.family)
        if kind == "square":
            if size[0] != size[1]:
                raise UsageError(f"{preset}: {p.family} takes square images only, got {size[0]}x{size[1]}")
            overrides[key] = size[0]
        elif kind == "tuple":
            overrides[key] = size
    spec = {"preset": preset, "family": p.family, "kwargs": {**p.kwargs, **overrides}}
    try:
        model = create_model(preset, seed=seed, **overrides)
        if size_arg(p.family)[1] == "none":  # size-free family: check the size by running it once
            with torch.no_grad():
                model(torch.zeros(1, 3, *size))
    except (ValueError, AssertionError, RuntimeError) as e:
        raise UsageError(f"{preset} cannot take image size {size[0]}x{size[1]}: {first_line(e, 200)}") from None
    if checkpoint is not None:
        apply_checkpoint(model, checkpoint)
        spec["weights"] = {"source": "checkpoint", "path": str(Path(checkpoint).absolute()),
                           "sha256": sha256_file(Path(checkpoint))}
        if sidecar and sidecar.get("preset") == preset:
            spec["training"] = {k: sidecar[k] for k in ("dataset", "split_seed", "test_top1", "labels")
                                if k in sidecar}
    else:
        spec["weights"] = {"source": "seed", "seed": seed}
    if outputs:
        model = WithOutputs(model, outputs)
        spec["outputs"] = list(outputs)
    return model.eval(), spec, make_preprocessing(size, p.mean, p.std)


def build_model(spec: dict) -> nn.Module:
    """Rebuild the eager model a manifest describes (family class + kwargs + weights source).

    Only classes registered in :data:`vitedge.models.zoo.FAMILIES` are built; nothing named in a manifest is
    imported otherwise. Before anything is allocated the model is built on the meta device and its size checked
    (:func:`check_model_size`: at most :data:`MAX_PARAMS` parameters), so hostile kwargs fail in a moment.

    Raises:
        VitedgeError: the manifest names no family, its kwargs are not a mapping, describe a model above the
            parameter cap or one the class cannot build, or its weights cannot be reproduced (module-only
            export, checkpoint missing or changed since export).
    """
    family = spec.get("family")
    if not family:
        raise VitedgeError("the manifest does not describe a vitedge model family; validate it from Python with "
                           "vitedge.validate.validate(path, model=your_module)")
    if not isinstance(family, str):
        raise VitedgeError(f"manifest model.family {str(family)[:60]!r} is not a family name")
    cls = family_class(family)
    if not isinstance(spec.get("kwargs"), dict):
        raise VitedgeError("manifest model.kwargs is not a mapping of constructor arguments")
    kwargs = _tuples(spec["kwargs"])
    weights = spec.get("weights", {})
    if not isinstance(weights, dict):
        raise VitedgeError("manifest model.weights is not a mapping")
    if weights.get("source") in ("seed", "checkpoint"):
        check_model_size(cls, kwargs, family)  # before anything allocates
    try:
        if weights.get("source") == "seed":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(weights.get("seed", 0)))
                model = cls(**kwargs)
        elif weights.get("source") == "checkpoint":
            path = Path(weights["path"])
            if not path.is_file():
                raise VitedgeError(f"the checkpoint this artifact was exported from is gone: {path}")
            if sha256_file(path) != weights.get("sha256"):
                raise VitedgeError(f"the checkpoint {path} changed since export (SHA-256 differs)")
            model = cls(**kwargs)
            model.load_state_dict(load_state_dict(path), strict=True)
        else:
            raise VitedgeError("the manifest's weights cannot be rebuilt (exported from a Python module); "
                               "validate it from Python with vitedge.validate.validate(path, model=your_module)")
    except (TypeError, ValueError, OverflowError) as e:  # e.g. a non-integer seed
        raise VitedgeError(f"manifest model spec cannot be rebuilt: {first_line(e, 200)}") from None
    if spec.get("outputs"):
        model = WithOutputs(model, spec["outputs"])
    return model.eval()


def _label_indices(class_names: list[str] | None, labels: list[str] | None, n_classes: int) -> list[int] | str:
    """The model's output index of each class name (by name in the model's ``labels``; without labels, in order
    when there are at most ``n_classes`` names), or why there is none."""
    if not class_names:
        return "the held-out images have no labels"
    if labels:
        index = {str(l): i for i, l in enumerate(labels)}
        missing = [n for n in class_names if n not in index]
        if missing:
            return f"class {missing[0]!r} is not one of the model's labels"
        return [index[n] for n in class_names]
    if len(class_names) > n_classes:
        return f"{len(class_names)} classes for a model of {n_classes} outputs"
    return list(range(len(class_names)))


def _held_out_parity(model: nn.Module, run, held: dict, labels: list[str] | None, tol: dict, fixed: int, what: str,
                     where: str) -> dict:
    """Eager vs artifact over every held-out image: :func:`vitedge.parity.compare` metrics, checked against
    ``tol``, and with labels ``top1``, ``eager_top1`` (fractions) and ``drop_points``. Raises ExportError outside
    ``tol``."""
    ref, out = run_pairs(model, run, held["images"], fixed)
    m = compare(ref, out)
    fails = check_tolerance(m, tol)
    if fails:
        raise ExportError(f"{what} differs from eager {where} ({'; '.join(fails)}); not written")
    if held.get("labels") is None:
        return m
    idx = _label_indices(held.get("class_names"), labels, ref.shape[1])
    if isinstance(idx, str):
        return {**m, "top1_skipped": idx}
    y = np.asarray(idx)[np.asarray(held["labels"])]
    top1, eager = float((out.argmax(1) == y).mean()), float((ref.argmax(1) == y).mean())
    return {**m, "top1": top1, "eager_top1": eager, "drop_points": round((eager - top1) * 100, 4)}


def check_precision(target: str, precision: str, int8_mode: str | None = None) -> None:
    """Raise UsageError unless ``target`` can produce ``precision`` (and, for int8, ``int8_mode``)."""
    caps = get_target(target).precisions
    if precision not in caps:
        raise UsageError(f"target {target} cannot produce {precision} (it does: {', '.join(caps)})")
    modes = caps[precision]
    if precision == "int8" and int8_mode and int8_mode not in modes:
        raise UsageError(f"target {target} cannot do {int8_mode} int8 (it does: {', '.join(modes)}); "
                         f"use --int8-mode {modes[0]}" + (" or --target onnx" if target != "onnx" else ""))


def export(model: nn.Module, example: torch.Tensor, target: str, out_dir: str | os.PathLike, *,
           spec: dict | None = None, preprocessing: dict | None = None, labels: list[str] | None = None,
           dynamic_batch: bool = True, opset: int | None = None, tol_abs: float = 1e-4,
           precision: str = "fp32", quantization: dict | None = None,
           target_options: dict | None = None, sign_key: str | os.PathLike | None = None,
           force: bool = False, device: str = "cpu", parity_images: dict | None = None) -> Artifact:
    """Export ``model`` to ``target`` in ``out_dir`` (a directory: artifact file + manifest.json), atomically.

    Args:
        model: any ``nn.Module`` mapping float32 (B, C, H, W) to logits (B, K) or a tuple of outputs.
        example: float32 (B, C, H, W) example input; B is the fixed batch when ``dynamic_batch`` is False.
        target: a registered target name (``vitedge.targets.target_names()``: torchscript, onnx, aotinductor,
            executorch, openvino, coreml, trt).
        spec: model description for the manifest (from :func:`prepare_preset`); None for a plain module.
        preprocessing: manifest preprocessing dict; defaults to ImageNet mean/std at the example's size.
        dynamic_batch: keep dimension 0 symbolic (verified at batches 1, 3 and 8 against eager).
        tol_abs: max abs difference vs eager (fp32) on the bundled photos before the export is refused.
        precision: fp32 | fp16 | int8 (what each target supports: its ``PRECISIONS``); fp16 and int8 artifacts
            are checked against the fp32 eager model by cosine (>= 0.999 / 0.99, the project tolerances in vitedge.parity).
        quantization: int8 options for the target (ONNX: mode, method, calibration images (N, C, H, W), ...).
        target_options: options only one target understands (see the target module's ``write``).
        sign_key: elliptic-curve private key PEM (``vitedge keygen``): the artifact is signed
            (``model.sig``, :func:`vitedge.signing.sign_artifact`) in its temporary folder before it is swapped
            into place, so it is never visible unsigned.
        device: cpu (default), cuda or cuda:N: export for that device (TorchScript and AOTInductor only; not
            TorchScript int8). The parity check then runs the artifact on that device against fp32 eager on the CPU;
            for fp32 on CUDA the tolerance is cosine >= 0.9999 (:data:`CUDA_FP32_TOLERANCE`) instead of ``tol_abs``:
            GPU kernels sum in another order and cuDNN convolutions may use TF32.
        parity_images: images to check parity on instead of the bundled photos, e.g. the held-out part of the
            calibration source (:func:`vitedge.quantize.calibration_split`): ``{"images": float32 (M, C, H, W)
            preprocessed like the input, "labels": int64 (M,) or None, "class_names": names of those labels or
            None, "info": {"source", "count", ...}}``. The batches are checked on its first images and every image
            is compared (``parity.held_out``: the same tolerance over all M, and with labels the top-1 of the
            artifact and of fp32 eager and the drop in points, recorded, not enforced). The manifest's
            ``parity.images`` names them and ``parity.image_source`` copies ``info``.
        force: replace ``out_dir`` if it holds a previous vitedge artifact. Without it only a missing path or an
            empty folder is written; a folder holding anything else, a file or a symlink is never replaced.
    Returns:
        The written :class:`Artifact`.
    Raises:
        UsageError: unknown target, a precision or int8 mode the target cannot do, an example that is not
            float32 NCHW, or a ``sign_key`` that is not a readable P-256/P-384/P-521 private key (checked first),
            or a malformed ``device`` or one the target cannot use.
        RuntimeMissingError: CUDA asked for and this PyTorch cannot use it.
        ArtifactError: ``out_dir`` exists and is not a vitedge artifact, or is one and ``force`` is False (checked
            before any export work and again just before the swap; ``out_dir`` is left untouched).
        ExportError: the exporter failed, or the artifact is outside its precision's tolerance against fp32
            eager on the bundled photos (``tol_abs`` for fp32, cosine for fp16/int8); nothing is written then.
    """
    mod = get_target(target)  # a vitedge.targets.Target: write, load, unavailable (runs_here)
    device = parse_device(device)
    check_target_device(target, device, precision)
    require_device(device)
    if sign_key is not None:
        signing.check_private_key(sign_key)  # before the export's minutes of work
    check_precision(target, precision, (quantization or {}).get("mode"))
    check_destination(out_dir, force)  # before any work: never spend an export on a folder we may not replace
    if example.dtype != torch.float32 or example.dim() != 4:
        raise UsageError(f"example input must be float32 (B, C, H, W), got {example.dtype} {tuple(example.shape)}")
    model = model.eval()
    size = tuple(example.shape[2:])
    pre = preprocessing or make_preprocessing(size)
    if tuple(pre["size"]) != size:
        raise UsageError(f"preprocessing size {pre['size']} differs from the example's {list(size)}")
    ref_example = eager_outputs(model, example)
    n_out = len(ref_example)
    out_names = list(getattr(model, "output_names", None) or ["logits"])[:n_out]
    out_names += [f"output_{i}" for i in range(len(out_names), n_out)]
    options = {"input_names": [INPUT_NAME], "output_names": out_names, "dynamic_batch": dynamic_batch, "opset": opset,
               "precision": precision, "quantization": quantization, "target_options": dict(target_options or {}),
               "preprocessing": pre, "labels": labels, "spec": spec,
               "target": target,  # e.g. the ONNX writer adds ONNX Runtime-only fusions for target "onnx" alone
               "device": device}
    tol = export_tolerance(precision, tol_abs, device)

    # Real images for the parity check, at the model's input size and channel count: the held-out images given
    # (e.g. from the calibration source), else the bundled photos.
    if parity_images is not None:
        photos = parity_images["images"]
        if tuple(photos.shape[1:]) != tuple(example.shape[1:]) or photos.dtype != torch.float32 or len(photos) < 1:
            raise UsageError(f"parity images must be float32 (M, {', '.join(map(str, example.shape[1:]))}), got "
                             f"{photos.dtype} {tuple(photos.shape)}")
        held_info = dict(parity_images.get("info") or {})
        src = held_info.get("source", "the calibration set")
        images_name = f"{len(photos)} held-out " + ("digits (test split)" if src == "digits" else f"images of {src}")
        where = f"on {images_name}"
    else:
        photos = parity_photos(example, pre)
        images_name, where = "bundled scikit-image photos", "on the bundled photos"
    fixed_b = int(example.shape[0])
    batches = list(PARITY_BATCHES) if dynamic_batch else [fixed_b]
    try:
        with atomic_directory(out_dir, force=force) as tmp:
            progress.stage(f"exporting to {target} ({precision})")
            try:
                info = mod.write(model, example, tmp, options)
            except (VitedgeError, KeyboardInterrupt):
                raise
            except Exception as e:  # noqa: BLE001 - exporter internals: one line, the rest is noise to a user
                raise ExportError(f"{target} export failed: {first_line(e, 400)}") from None
            batches = list(info.get("parity_batches") or batches)  # e.g. inside a TensorRT optimization profile
            art = Artifact(tmp, {"artifact": info["artifact"], "files": {}, "quantization": info.get("quantization"),
                                 "export": info["export"],  # export.device: what an AOTInductor loader checks
                                 **(info.get("manifest") or {})})
            cannot = runs_here(mod)
            parity = {} if cannot is None else {"skipped": f"not run on this machine: {cannot}"}
            if cannot is None:
                progress.stage(f"checking parity vs fp32 eager {where} at batch {', '.join(map(str, batches))}")
            runner = None if cannot is not None else mod.load(art) if device == "cpu" else mod.load(art, device=device)
            if runner is not None:
                parity.update(check_batches(model, runner.run, photos, batches, tol, output_names=out_names,
                                            what=f"{target} {precision} artifact", shape_what=f"{target} artifact",
                                            where=where))
                if parity_images is not None:
                    parity["held_out"] = _held_out_parity(model, runner.run, parity_images, labels, tol,
                                                          0 if dynamic_batch else fixed_b,
                                                          f"{target} {precision} artifact", where)
            c = int(example.shape[1])
            manifest = {
                "schema_version": SCHEMA_VERSION,
                "artifact": info["artifact"],
                "target": target,
                "backend": info["backend"],
                "precision": precision,
                "quantization": {**(info.get("quantization") or {}),
                                 **({"calibration": quantization["calibration_info"]}
                                    if quantization and quantization.get("calibration_info") else {})} or None,
                "model": {**(spec or {"preset": None, "family": None, "class": type(model).__qualname__,
                                      "weights": {"source": "module"}}),
                          "params": sum(p.numel() for p in model.parameters())},
                "inputs": [{"name": INPUT_NAME, "shape": [-1 if dynamic_batch else fixed_b, c, *size],
                            "dtype": "float32", "dynamic_axes": {"0": "batch"} if dynamic_batch else {}}],
                "outputs": [{"name": n, "shape": [-1 if dynamic_batch else fixed_b, *r.shape[1:]],
                             "dtype": "float32", "dynamic_axes": {"0": "batch"} if dynamic_batch else {}}
                            for n, r in zip(out_names, ref_example)],
                "preprocessing": pre,
                "labels": labels,
                "versions": versions(),
                "created": utc_now(),
                "export": info["export"],
                "parity": {"reference": "eager PyTorch fp32", "images": images_name,
                           **({"image_source": held_info} if parity_images is not None else {}),
                           "tolerance": tol, **parity},
            }
            if "opset" in info:
                manifest["opset"] = info["opset"]
            manifest.update(info.get("manifest") or {})
            write_manifest(tmp, manifest)
            if sign_key is not None:
                progress.stage("signing")
                signing.sign_artifact(tmp, sign_key)
            # read back (every file's size and SHA-256) before the swap, from the folder no one else writes: read
            # from out_dir after it, a concurrent export into the same out_dir could swap its own artifact in
            # between reading manifest.json and the model file, and this export would fail with a mixed pair
            written = read_manifest(tmp)
    except OSError as e:
        raise ExportError(f"cannot write artifact to {out_dir}: {e.strerror or e}") from None
    # what this call wrote, at out_dir; it is verified, so a load of a file swapped in since is refused
    return dataclasses.replace(written, path=Path(out_dir))
