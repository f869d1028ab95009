"""Train a small model of any zoo family on real labelled images (scikit-learn's digits) in a minute or two.

The checkpoint is safetensors (never a pickle) with a JSON sidecar (``<ckpt>.json``) recording the preset,
classes, input size, split and measured test accuracy, which ``vitedge export --checkpoint`` reads for defaults.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import progress
from .checkpoint import read_sidecar, save_state_dict  # read_sidecar: also vitedge.train.read_sidecar, as before
from .data import DIGITS_LABELS, digits_batch, digits_split
from .errors import UsageError
from .export import prepare_preset  # handles family-specific image_size overrides
from .files import write_json_atomic
from .models.zoo import get_preset

__all__ = ["DEFAULT_DIGITS_SIZE", "evaluate", "read_sidecar", "train_digits"]

DEFAULT_DIGITS_SIZE = (64, 64)


def evaluate(model, x: torch.Tensor, y: torch.Tensor, batch: int = 128) -> float:
    """Top-1 accuracy (0..1) of ``model`` on float32 (N, 3, H, W) images with int64 labels (N,)."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out = model(x[i:i + batch])
            out = out[0] if isinstance(out, (tuple, list)) else out
            correct += int((out.argmax(1) == y[i:i + batch]).sum())
    return correct / len(x)


def train_digits(preset: str, out: str | os.PathLike, *, image_size: tuple[int, int] | None = None,
                 epochs: int = 12, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                 max_steps: int | None = None, log=print) -> dict:
    """Train ``preset`` (10 classes) on the digits train split; save safetensors + sidecar at ``out``.

    Args:
        image_size: (H, W) the 8x8 digits are upsampled to (default 64x64; must suit the family).
        epochs, batch_size, lr: AdamW with cosine decay and 1 warm-up epoch; random 4-pixel shifts as augmentation.
        max_steps: stop after this many optimizer steps (the cosine schedule then spans them; the last epoch may
            be partial), for a training-time budget on large presets; None: ``epochs`` full epochs.
        log: called with one line per epoch (``epoch 3/12: loss 0.412, 17 s``: the epoch's mean cross-entropy
            over its samples, in nats, and the seconds since training started) and a final line; None for silence.
    Progress (:mod:`vitedge.progress`, when on): a stage line per step and a bar over each epoch's batches.
    Returns:
        The sidecar dict (preset, kwargs, image size, split seed, train/test sizes, test top-1 (0..1), seconds,
        ``train_loss``: each epoch's sample-weighted mean training loss in nats).
    Raises:
        UsageError: unknown preset, an image size the family cannot take, or max_steps < 1.
    """
    p = get_preset(preset)
    size = tuple(image_size or DEFAULT_DIGITS_SIZE)
    torch.manual_seed(seed)
    progress.stage(f"building {preset} ({size[0]}x{size[1]}, 10 classes)")
    model, spec, pre = prepare_preset(preset, num_classes=10, image_size=size, seed=seed)
    progress.stage("loading the digits")
    train_idx, test_idx = digits_split(seed)
    xtr, ytr = digits_batch(train_idx, pre)
    xte, yte = digits_batch(test_idx, pre)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps_per_epoch = math.ceil(len(xtr) / batch_size)
    total = epochs * steps_per_epoch
    if max_steps is not None:
        if max_steps < 1:
            raise UsageError(f"max_steps must be >= 1, got {max_steps}")
        total = min(total, max_steps)
        epochs = math.ceil(total / steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / steps_per_epoch) * 0.5 * (1 + math.cos(math.pi * s / total)))
    g = torch.Generator().manual_seed(seed)
    pad = max(1, size[0] // 16)
    t0 = time.perf_counter()
    partial = f" ({total} steps, the last epoch partial)" if total % steps_per_epoch else ""
    progress.stage(f"training {epochs} epochs{partial} on {len(xtr)} images, batch {batch_size}")
    epoch_losses = []
    step = 0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        loss_sum, n_seen = 0.0, 0  # per-sample losses summed, samples seen this epoch: a sample-weighted mean
        bar = progress.bar(steps_per_epoch, f"epoch {epoch + 1}/{epochs}", unit="batch")
        for i in range(0, len(xtr), batch_size):
            if step == total:
                break
            step += 1
            idx = perm[i:i + batch_size]
            xb = xtr[idx]
            dy, dx = (int(v) for v in torch.randint(-pad, pad + 1, (2,), generator=g))
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            logits = model(xb)
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            loss = F.cross_entropy(logits, ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)  # cross_entropy's default is the batch mean
            n_seen += len(idx)
            bar.update()
            bar.set_postfix_str(f"loss {loss_sum / n_seen:.3f}", refresh=False)
        bar.close()
        epoch_losses.append(loss_sum / n_seen)
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {epoch_losses[-1]:.3f}, {time.perf_counter() - t0:.0f} s")
    progress.stage(f"evaluating on {len(xte)} held-out digits")
    acc = evaluate(model, xte, yte)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_state_dict(model, out)
    sidecar = {"preset": preset, "family": p.family, "dataset": "digits", "num_classes": 10,
               "labels": DIGITS_LABELS, "image_size": list(size), "kwargs": spec["kwargs"], "split_seed": seed,
               "train_size": len(train_idx), "test_size": len(test_idx), "test_top1": acc, "epochs": epochs,
               "steps": total, "seconds": time.perf_counter() - t0, "train_loss": epoch_losses, "preprocessing": pre}
    write_json_atomic(f"{out}.json", sidecar)
    if log:
        log(f"test top-1 {acc:.2%} on {len(test_idx)} held-out digits; wrote {out}")
    return sidecar
