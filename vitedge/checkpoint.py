"""Checkpoint loading that never unpickles code: safetensors, or ``torch.load(weights_only=True)``; the JSON
sidecar ``vitedge train`` writes next to a checkpoint (:func:`read_sidecar`)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import CheckpointError
from .safety import is_zip, safe_zip_members

__all__ = ["apply_checkpoint", "load_state_dict", "read_sidecar", "save_state_dict"]


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``.safetensors`` or a torch file (``.pt``/``.pth``/``.bin``).

    Torch files are read with ``weights_only=True``, which refuses pickled code (PyTorch's restricted
    unpickler: only tensors, primitive containers and allow-listed types; no ``__reduce__`` call runs). A torch
    zip checkpoint passes :func:`vitedge.safety.safe_zip_members` first (no escaping member names, no zip bomb).
    A checkpoint that wraps its weights in ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped.

    Raises:
        CheckpointError: missing, unreadable, truncated, not a tensor mapping, containing pickled objects, or an
            unsafe archive.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix != ".safetensors" and is_zip(path):
        safe_zip_members(path, error=CheckpointError)
    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every loader failure becomes one readable line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: {msg}") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError(f"checkpoint {path} is not a mapping of parameter names to tensors")
    return sd


def apply_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the checkpoint at ``path`` into ``model`` (strict: same keys, same shapes).

    Raises:
        CheckpointError: unreadable checkpoint, or one made for a different model (names the first mismatches).
    """
    sd = load_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise CheckpointError(f"checkpoint {path} does not fit this model ({'; '.join(parts)}); "
                              "was it trained for another preset or --num-classes?")
    model.load_state_dict(sd, strict=True)
    return model


def save_state_dict(model: nn.Module, path: str | os.PathLike) -> Path:
    """Save ``model.state_dict()`` as safetensors, atomically (temp file + rename).

    Raises:
        CheckpointError: the file cannot be written (e.g. no space left on device); no partial file remains.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        os.replace(tmp, path)
    except Exception as e:  # noqa: BLE001 - OSError or safetensors' own IO error: one line, no partial file
        tmp.unlink(missing_ok=True)
        msg = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"cannot write checkpoint {path}: {msg[:300]}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_sidecar(checkpoint: str | os.PathLike) -> dict | None:
    """The JSON written next to a checkpoint by :func:`vitedge.train.train_digits`, or None if absent/unreadable."""
    p = Path(f"{checkpoint}.json")
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None
