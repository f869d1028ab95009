"""Artifact manifests and atomic artifact directories.

An artifact is a directory holding the exported file(s) and ``manifest.json`` (schema in CONVENTIONS.md).
Directories are written atomically: everything goes to a hidden sibling temp directory, which is renamed
into place only once complete, so an interrupted or failed export leaves the previous artifact or nothing.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import ArtifactError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

__all__ = ["Artifact", "SCHEMA_VERSION", "atomic_directory", "file_entry", "read_manifest", "sha256_file",
           "versions", "write_manifest"]


@dataclass
class Artifact:
    """An artifact directory and its parsed manifest."""

    path: Path
    manifest: dict

    @property
    def file(self) -> Path:
        """The main artifact file (``manifest['artifact']`` inside :attr:`path`)."""
        return self.path / self.manifest["artifact"]

    @property
    def size_mb(self) -> float:
        """Total size in MiB of the files the manifest covers."""
        return sum(f["bytes"] for f in self.manifest["files"].values()) / 2**20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_entry(path: Path) -> dict:
    """``{"sha256": ..., "bytes": ...}`` for one artifact file."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def versions() -> dict:
    """Versions of the libraries that shape an artifact (absent ones are omitted)."""
    out = {"vitedge": __version__, "python": platform.python_version()}
    for mod in ("torch", "onnx", "onnxruntime", "onnxscript", "numpy"):
        with contextlib.suppress(Exception):
            out[mod] = __import__(mod).__version__
    return out


def utc_now() -> str:
    """Current UTC time, ISO 8601 with a Z suffix."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_manifest(directory: Path, manifest: dict) -> None:
    """Add ``files`` (sha256 + bytes of every file in ``directory``) and write ``manifest.json``."""
    manifest = dict(manifest)
    manifest["files"] = {p.name: file_entry(p) for p in sorted(directory.iterdir()) if p.name != MANIFEST}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(path: str | os.PathLike, verify: bool = True) -> Artifact:
    """Read an artifact directory (or its manifest.json, or its main file).

    With ``verify``, every file listed in the manifest must exist with the recorded size and SHA-256.

    Raises:
        ArtifactError: missing directory or manifest, invalid JSON, a schema newer than this reader,
            a missing, truncated or modified file.
    """
    p = Path(path)
    if p.is_file() and p.name != MANIFEST:
        p = p.parent
    directory = p.parent if p.name == MANIFEST else p
    mpath = directory / MANIFEST
    if not directory.exists():
        raise ArtifactError(f"artifact not found: {directory}")
    if not mpath.is_file():
        raise ArtifactError(f"{directory} is not a vitedge artifact (no {MANIFEST})")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"corrupt manifest {mpath}: {e}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("schema_version"), int):
        raise ArtifactError(f"corrupt manifest {mpath}: no integer schema_version")
    if manifest["schema_version"] > SCHEMA_VERSION:
        raise ArtifactError(f"{mpath} has schema version {manifest['schema_version']}, newer than this vitedge "
                            f"({__version__}) reads ({SCHEMA_VERSION}); upgrade vitedge")
    for key in ("artifact", "target", "files", "inputs", "outputs"):
        if key not in manifest:
            raise ArtifactError(f"corrupt manifest {mpath}: missing {key!r}")
    art = Artifact(directory, manifest)
    if verify:
        for name, entry in manifest["files"].items():
            f = directory / name
            if Path(name).name != name:
                raise ArtifactError(f"manifest {mpath} names a file outside its folder: {name!r}")
            if not f.is_file():
                raise ArtifactError(f"artifact file missing: {f}")
            if f.stat().st_size != entry.get("bytes"):
                raise ArtifactError(f"artifact file {f} is {f.stat().st_size} bytes, manifest says "
                                    f"{entry.get('bytes')} (truncated or replaced)")
            if sha256_file(f) != entry.get("sha256"):
                raise ArtifactError(f"artifact file {f} does not match the SHA-256 in its manifest")
    return art


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike):
    """Yield a temporary directory beside ``final``; on success it replaces ``final`` as a whole.

    On any exception the temporary directory is removed and ``final`` is untouched. The swap is two renames
    (old -> hidden backup, new -> final), so a kill between them leaves no artifact at ``final``, never a
    partial one.
    """
    final = Path(final).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        backup = None
        if final.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, backup / "a")
        os.replace(tmp, final)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
