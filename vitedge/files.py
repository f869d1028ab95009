"""Atomic file writes shared by the CLI, the sweep, training and the benchmark scripts.

A reader (or a crash) never sees a half-written file: the text goes to a temp file in the destination's folder
(same file system), is flushed and fsync'ed, and is renamed over the destination (``os.replace``, atomic on
POSIX and Windows). The temp file is removed if anything fails.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its parent folders; returns the path.

    Raises:
        OSError: the folder cannot be created or written (the destination is left as it was).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | os.PathLike, obj, *, default=None) -> Path:
    """Write ``obj`` as indented JSON (2 spaces, trailing newline) to ``path`` atomically; returns the path.

    ``default``: as in :func:`json.dumps`, for values JSON has no type for (e.g. ``str``).

    Raises:
        TypeError: ``obj`` holds a value JSON cannot encode and ``default`` does not convert (nothing is written).
        OSError: as :func:`write_text_atomic`.
    """
    return write_text_atomic(path, json.dumps(obj, indent=2, default=default) + "\n")
