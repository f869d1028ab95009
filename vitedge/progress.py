"""Progress of long steps (export, calibration, Core ML conversion, training, benchmarking) for a person watching.

Library code calls :func:`stage` at the start of each step ("converting to Core ML") and :func:`bar` around a
loop; both do nothing until :func:`enable` turns progress on. The ``vitedge`` CLI turns it on when stderr is a
terminal and ``--quiet`` is not given, so logs, pipes and tests see only results and errors.

A stage is one line on stderr: ``vitedge: [  12.3 s] converting to Core ML``, the seconds counted from
:func:`enable` (the start of the command). A bar is tqdm's, on stderr, erased when its loop ends.
"""
from __future__ import annotations

import sys
import time

__all__ = ["bar", "enable", "enabled", "stage", "stderr_is_tty"]

_on = False
_t0 = 0.0


def stderr_is_tty() -> bool:
    """Whether stderr is a terminal (False for a pipe, a file, a closed or replaced stream)."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def enable(on: bool | None = None) -> bool:
    """Turn progress on (True) or off (False), or on exactly when stderr is a terminal (None); restarts the
    stage clock. Returns whether progress is now on."""
    global _on, _t0
    _on = stderr_is_tty() if on is None else bool(on)
    _t0 = time.monotonic()
    return _on


def enabled() -> bool:
    """Whether :func:`stage` and :func:`bar` show anything."""
    return _on


def stage(message: str) -> None:
    """One progress line on stderr, ``vitedge: [SECONDS s] message``, when progress is on."""
    if _on:
        print(f"vitedge: [{time.monotonic() - _t0:6.1f} s] {message}", file=sys.stderr, flush=True)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def bar(total: int, desc: str, unit: str = "it"):
    """A tqdm progress bar of ``total`` steps on stderr, erased when closed, when progress is on; else an object
    with the same ``update``/``set_postfix_str``/``close`` (and context manager) that shows nothing."""
    if not _on:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=f"vitedge: {desc}", unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)
