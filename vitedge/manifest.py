"""Artifact manifests and atomic artifact directories.

An artifact is a directory holding the exported file(s) and ``manifest.json`` (schema in CONVENTIONS.md).
Directories are written atomically: everything goes to a hidden sibling temp directory, which is swapped
into place only once complete, so an interrupted or failed export leaves the previous artifact or nothing.

Reading is defensive: :func:`read_manifest` checks the manifest's types and names (no file may lie outside the
artifact folder) before anything uses them, and verifies every file's size and SHA-256 unless told not to.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import errno
import functools
from importlib import resources
import hashlib
import json
import math
import os
import platform
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import __version__
from .errors import ArtifactError
from .safety import check_relative_name, check_tree, is_inside

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 * 2**20   # a manifest is a few KiB; refuse to parse a huge one
MAX_INPUT_SIDE = 8192             # largest H or W a manifest may ask preprocessing to produce (in the schema)
DISK_FULL_BYTES = 1 << 20         # a write failure with less free space than this is reported as a full disk
DTYPES = (  # tensor dtypes a manifest may name (the schema's tensor_spec enum)
    "float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")

MAX_FILE_BYTES = 16 * 2**30       # largest artifact file read into memory for a runtime (the zip cap in safety.py)

__all__ = ["Artifact", "MAX_FILE_BYTES", "SCHEMA_VERSION", "artifact_folder", "atomic_directory",
           "check_destination", "clean_stale", "file_entry", "is_artifact_dir", "read_manifest", "sha256_file", "versions", "write_manifest"]


def _read_regular(path: Path, max_bytes: int, what: str, expect: int | None = None) -> bytes:
    """Read the regular file at ``path`` once: open (non-blocking, so a FIFO cannot hang us), ``fstat`` the opened
    descriptor (must be a regular file; size checked against ``expect`` and ``max_bytes`` BEFORE reading), then read
    exactly that many bytes. A file that grows or shrinks while it is read is refused.

    Raises:
        ArtifactError: missing/unreadable file, not a regular file, a size other than ``expect`` or above
            ``max_bytes``, or a size change during the read; the message names ``what``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ArtifactError(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{what} {path} is not a regular file (FIFO, device or directory?)")
        size = st.st_size
        if expect is not None and size != expect:
            raise ArtifactError(f"{what} {path} is {size} bytes, manifest says {expect} (truncated or replaced)")
        if size > max_bytes:
            raise ArtifactError(f"{what} {path} is {size} bytes, above the {max_bytes}-byte limit")
        if getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        with open(fd, "rb", closefd=False) as f:  # BufferedReader.read(n) reads until n bytes or end of file
            data = f.read(size)
            if len(data) != size or f.read(1):
                raise ArtifactError(f"{what} {path} changed size while it was read")
        return data
    except OSError as e:
        raise ArtifactError(f"cannot read {what} {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)


@dataclass
class Artifact:
    """An artifact directory and its parsed manifest.

    ``verified``: :func:`read_manifest` checked every listed file's size and SHA-256 (``verify=True``), so
    :meth:`read_file` compares what it reads with the manifest too. ``manifest_sha256``: hex SHA-256 of the exact
    manifest.json bytes that were parsed into :attr:`manifest` (None for an artifact built in memory).
    """

    path: Path
    manifest: dict
    verified: bool = False
    #: hex SHA-256 of the manifest.json bytes that were parsed into :attr:`manifest` (None if not read from disk)
    manifest_sha256: str | None = None

    @property
    def file(self) -> Path:
        """The main artifact file (``manifest['artifact']`` inside :attr:`path`)."""
        return self.path / self.manifest["artifact"]

    @property
    def size_mb(self) -> float:
        """Total size in MiB of the files the manifest covers."""
        return sum(f["bytes"] for f in self.manifest["files"].values()) / 2**20

    def read_file(self, name: str | None = None, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
        """The bytes of one artifact file, read once, for a runtime to load from memory (no hash-then-reopen race).

        ``name``: POSIX path relative to :attr:`path` (default: the main artifact file, ``manifest['artifact']``).
        The file is opened once, ``fstat``-ed (a regular file; its size checked against the manifest and
        ``max_bytes`` before anything is read), read whole, and, when the artifact was verified
        (:attr:`verified`), its SHA-256 is compared with the manifest's: the returned bytes are exactly the
        hashed ones. A verified artifact reads only files its manifest lists. Unverified (``verify=False``, or
        the export driver's own in-memory artifact): the bytes are returned without a comparison.

        Returns:
            The file's bytes.
        Raises:
            ArtifactError: an unlisted file (verified artifacts), a name escaping the folder, a missing or
                non-regular file, a size other than the manifest's or above ``max_bytes``, or bytes whose
                SHA-256 differs from the manifest's.
        """
        name = self.manifest["artifact"] if name is None else name
        rel = check_relative_name(name, f"artifact {self.path}: file").as_posix()
        entry = (self.manifest.get("files") or {}).get(rel)
        if self.verified and entry is None:
            raise ArtifactError(f"artifact file {self.path / rel} is not listed in its manifest (no SHA-256 to check "
                                "it against)")
        f = self.path / rel
        if (f.exists() or f.is_symlink()) and not is_inside(self.path, f):
            raise ArtifactError(f"artifact file {f} resolves outside {self.path} (symlink?)")
        data = _read_regular(f, max_bytes, "artifact file", entry["bytes"] if self.verified else None)
        if self.verified and hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ArtifactError(f"artifact file {f} does not match the SHA-256 in its manifest")
        return data


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
    """Add ``files`` (sha256 + bytes of every regular file below ``directory``, keyed by POSIX relative path,
    e.g. ``model.onnx`` or ``model.mlpackage/Manifest.json``) and write ``manifest.json``.

    Raises:
        ArtifactError: the directory holds a symlink pointing outside it, or a device file / FIFO.
    """
    manifest = dict(manifest)
    manifest["files"] = {rel: file_entry(directory / rel) for rel in check_tree(directory) if rel != MANIFEST}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


SCHEMA_FILE = "schemas/manifest.schema.json"  # package data: vitedge/schemas/manifest.schema.json


@functools.lru_cache(maxsize=1)
def manifest_schema() -> dict:
    """The JSON Schema (draft 2020-12) of manifest.json shipped with vitedge (``vitedge/schemas/manifest.schema.json``;
    the C++ runner installs the same file as ``share/vitedge/manifest.schema.json``)."""
    return json.loads(resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema
    schema = manifest_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


class _Shown:
    """A manifest value as a one-line message shows it: repr, control characters escaped, at most 80 characters."""

    def __init__(self, v):
        text = repr(v) if isinstance(v, str) else json.dumps(v, default=str)
        text = (text[:77] + "...") if len(text) > 80 else text
        self.text = "".join(c if c.isprintable() else "?" for c in text)

    def __str__(self):
        return self.text

    __repr__ = __str__
    __format__ = lambda self, spec: self.text  # noqa: E731


def _field(path) -> str:
    """A JSON path as a message names it: ``preprocessing.size[0]``, ``onnxruntime.session_config['session.x']``."""
    out = ""
    for elem in path:
        if isinstance(elem, int):
            out += f"[{elem}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", elem):
            out += ("." if out else "") + elem
        else:
            out += f"[{_Shown(elem)}]"
    return out or "(top level)"


_SUBSCHEMA_KEYS = {"properties": 1, "patternProperties": 1, "prefixItems": 1, "$defs": 0, "allOf": 0, "anyOf": 0,
                   "oneOf": 0, "dependentSchemas": 0}  # keyword followed by a name/index -> instance elements consumed
_SUBSCHEMA_ONE = {"items": 1, "additionalProperties": 1, "propertyNames": 0, "contains": 1, "then": 0, "else": 0,
                  "not": 0, "if": 0}


def _schema_message(e, doc) -> str:
    """One line naming the field of a jsonschema ValidationError: the ``errorMessage`` of the deepest schema node on
    the error's schema path that has one (formatted with the field, its value, its key), else jsonschema's message."""
    root = manifest_schema()

    def resolve(ref: str):
        node = root
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return node

    ipath = list(e.absolute_path)
    node, pos, names = root, 0, False
    found = (root.get("errorMessage"), 0, False) if "errorMessage" in root else None
    spath = list(e.absolute_schema_path)
    i = 0
    while i < len(spath):
        k = spath[i]
        while isinstance(node, dict) and k not in node and "$ref" in node:
            node = resolve(node["$ref"])
        if not isinstance(node, dict) or k not in node:
            break
        if k in _SUBSCHEMA_KEYS and i + 1 < len(spath):
            node, pos, i = node[k][spath[i + 1]], pos + _SUBSCHEMA_KEYS[k], i + 2
        elif k in _SUBSCHEMA_ONE and isinstance(node[k], dict):
            node, pos, i = node[k], pos + _SUBSCHEMA_ONE[k], i + 1
            names = names or k == "propertyNames"
        else:
            break  # the failing keyword itself
        if isinstance(node, dict) and "$ref" in node and "errorMessage" not in node:
            target = resolve(node["$ref"])
            if "errorMessage" in target and (i >= len(spath) or spath[i] not in node):
                found = (target["errorMessage"], pos, names)
        if isinstance(node, dict) and "errorMessage" in node:
            found = (node["errorMessage"], pos, names)
    field = ipath[:min(pos, len(ipath))] if found else ipath
    if e.validator == "required":
        missing = str(e.message).split(" is a required property")[0][:80]
        return f"missing {missing}" + (f" in {_field(ipath)}" if ipath else "")
    if found is None:
        msg = (str(e.message).strip().splitlines() or [""])[0]
        return f"{_field(ipath)}: {msg[:200]}"
    template, pos, names = found
    field = ipath[:pos]
    if names:
        value = e.instance
    else:
        value = doc
        for elem in field:
            value = value[elem]
    try:
        return template.format(path=_field(field), value=_Shown(value), key=_Shown(field[-1] if field else ""),
                               parent=_field(field[:-1]), name_check=_name_reason(value))
    except (KeyError, IndexError, ValueError, TypeError):
        return f"{_field(ipath)}: {template[:200]}"


def _name_reason(value) -> str:
    """Why ``value`` is not a file name inside the artifact folder, as check_relative_name words it."""
    if not isinstance(value, str):
        return "must be a file name (a string)"
    try:
        check_relative_name(value, "")
    except ArtifactError as e:
        return str(e).strip()
    return f"{_Shown(value)} is not a file name inside the artifact folder"


def _check_structure(m: dict, mpath: Path) -> None:
    """The manifest against its JSON Schema (:func:`manifest_schema`), then what a schema cannot express: names in
    bytes and escaping the folder (``check_relative_name``), ``preprocessing.size`` equal to the input's (H, W).
    Raises ArtifactError naming the first bad field (one line)."""
    import jsonschema
    err = jsonschema.exceptions.best_match(_validator().iter_errors(m))
    if err is not None:
        msg = _schema_message(err, m).replace("\n", " ")
        raise ArtifactError(f"corrupt manifest {mpath}: {msg[:400]}")
    check_relative_name(m["artifact"], f"manifest {mpath}: artifact")
    for name in m["files"]:
        check_relative_name(name, f"manifest {mpath}: file")
    shape, size = m["inputs"][0]["shape"], m["preprocessing"]["size"]
    if size != shape[2:4]:  # images are resized to exactly the model's input; anything else only costs memory
        raise ArtifactError(f"corrupt manifest {mpath}: preprocessing size {size} differs from the model input's "
                            f"(H, W) {shape[2:4]}")


def _json_number(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text[:40]} is out of range")
    return v


def _json_constant(name: str):
    raise ValueError(f"{name} is not JSON")


_NOT_MODEL_FILE = "is a file but not the model file of an artifact"


def artifact_folder(path: str | os.PathLike) -> Path:
    """The artifact folder ``path`` designates: ``path`` itself unless it is a regular file (symlinks followed),
    which stands for the folder it is in (its path's parent) when that folder holds manifest.json and the file is
    the one the manifest names in ``artifact`` (checked by :func:`read_manifest` once the manifest is parsed). A
    directory without manifest.json beside one (Core ML's ``model.mlpackage``) is read the same way.

    The C++ runner applies the same rule (cpp/src/artifact_io.cpp locate_artifact).

    Raises:
        ArtifactError: ``path`` is manifest.json itself, or a file with no manifest.json beside it (naming ``path``).
    """
    p = Path(path)
    if p.is_dir() and not (p / MANIFEST).is_file() and (p.parent / MANIFEST).is_file():
        return p.parent  # a model that is a directory (Core ML's model.mlpackage): read_manifest checks the name
    if not p.is_file():
        return p
    if p.name == MANIFEST:
        raise ArtifactError(f"{p} {_NOT_MODEL_FILE} (it is the manifest; give its folder {p.parent} or the model "
                            "file it names)")
    if not (p.parent / MANIFEST).is_file():
        raise ArtifactError(f"{p} {_NOT_MODEL_FILE} (no {MANIFEST} beside it)")
    return p.parent


def read_manifest(path: str | os.PathLike, verify: bool = True) -> Artifact:
    """Read an artifact: its directory, or the model file in it (the file ``artifact`` names; see
    :func:`artifact_folder`; manifest.json or any other file is refused).

    Always checked: the manifest is at most 16 MiB of JSON, its schema version is an integer no newer than
    this reader's, its keys have the types vitedge reads (files, inputs, outputs, preprocessing, ...), and every
    file name it holds (``artifact`` and the keys of ``files``) is a relative path inside the artifact folder:
    no ``..``, no absolute path, no symlink resolving outside the folder.

    With ``verify`` also: the main artifact is covered by ``files`` (so stripping ``files`` cannot skip the
    check), every listed file exists with the recorded size and SHA-256, and a main artifact that is a directory
    (Core ML ``.mlpackage``) holds no file the manifest does not list. The returned artifact is then marked
    ``verified``: :meth:`Artifact.read_file`, which the targets load from, hashes the bytes it hands a runtime
    again, so a file swapped after this check is refused rather than loaded.

    manifest.json itself is opened once (a regular file, size checked before reading) and parsed from the same
    bytes whose SHA-256 is kept as ``Artifact.manifest_sha256``. ``preprocessing.size`` must equal the input's
    (H, W).

    Raises:
        ArtifactError: missing directory or manifest; a file that is not the artifact's model file; invalid,
            oversized or ill-typed manifest; a schema newer than this reader; a name escaping the folder; a
            missing, unlisted, truncated or modified file (named in the message).
    """
    directory = artifact_folder(path)
    given_file = Path(path) if directory != Path(path) else None
    mpath = directory / MANIFEST
    if not os.path.lexists(Path(path)):  # Path drops a trailing "/", as the C++ runner does
        raise ArtifactError(f"artifact not found: {path}")
    if not mpath.is_file():
        if Path(path).name == MANIFEST:
            raise ArtifactError(f"{path} is not a regular file")
        if Path(path).is_dir():
            raise ArtifactError(f"{path} is not a vitedge artifact (no {MANIFEST} in it)")
        raise ArtifactError(f"{path} is not a vitedge artifact: give an artifact folder (holding {MANIFEST}) or the "
                            "model file in one")
    try:
        if mpath.stat().st_size > MAX_MANIFEST_BYTES:
            raise ArtifactError(f"manifest {mpath} is larger than {MAX_MANIFEST_BYTES} bytes")
        raw = _read_regular(mpath, MAX_MANIFEST_BYTES, "manifest")  # parsed and hashed from the same bytes
        # NaN, Infinity and numbers beyond a double are not JSON (the C++ runner's parser refuses them too)
        manifest = json.loads(raw.decode("utf-8"), parse_float=_json_number, parse_constant=_json_constant)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"corrupt manifest {mpath}: {msg[:200]}") from None
    if not isinstance(manifest, dict) or not _is_int(manifest.get("schema_version")):
        raise ArtifactError(f"corrupt manifest {mpath}: no integer schema_version")
    if manifest["schema_version"] > SCHEMA_VERSION:
        raise ArtifactError(f"{mpath} has schema version {manifest['schema_version']}, newer than this vitedge "
                            f"({__version__}) reads ({SCHEMA_VERSION}); upgrade vitedge")
    if manifest["schema_version"] < 1:
        raise ArtifactError(f"corrupt manifest {mpath}: schema version {manifest['schema_version']} < 1")
    _check_structure(manifest, mpath)
    if given_file is not None and PurePosixPath(manifest["artifact"]) != PurePosixPath(given_file.name):
        raise ArtifactError(f"{given_file} {_NOT_MODEL_FILE} (its {mpath} names {manifest['artifact']!r}; give the "
                            f"folder {directory} or that file)")
    files: dict = manifest["files"]
    for name in (manifest["artifact"], *files):
        f = directory / name
        try:
            present = f.exists() or f.is_symlink()
        except OSError as e:  # e.g. a name the file system cannot hold
            raise ArtifactError(f"manifest {mpath} names {name[:60]!r}, which cannot be looked up: "
                                f"{e.strerror or e}") from None
        if present and not is_inside(directory, f):
            raise ArtifactError(f"manifest {mpath} names {name!r}, which resolves outside {directory} (symlink?)")
    art = Artifact(directory, manifest, verified=verify, manifest_sha256=hashlib.sha256(raw).hexdigest())
    if verify:
        main = manifest["artifact"].rstrip("/")
        if main not in files and not any(n.startswith(main + "/") for n in files):
            raise ArtifactError(f"manifest {mpath} does not cover its artifact {main!r} in 'files' (no SHA-256 to "
                                "verify; use --no-verify to load it anyway)")
        for name, entry in files.items():
            f = directory / name
            if not f.is_file():
                raise ArtifactError(f"artifact file missing: {f}")
            size = f.stat().st_size
            if size != entry["bytes"]:
                raise ArtifactError(f"artifact file {f} is {size} bytes, manifest says {entry['bytes']} "
                                    "(truncated or replaced)")
            if sha256_file(f) != entry["sha256"]:
                raise ArtifactError(f"artifact file {f} does not match the SHA-256 in its manifest")
        if art.file.is_dir():
            for rel in check_tree(art.file):
                if f"{main}/{rel}" not in files:
                    raise ArtifactError(f"artifact file {art.file / rel} is not listed in its manifest")
    return art


# ---------------------------------------------------------------------------------------------------------
# Atomic artifact directories

def _alive(pid: int) -> bool:
    """True if process ``pid`` exists on this host (a zombie counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(final: str | os.PathLike) -> list[Path]:
    """Remove the hidden temp/backup siblings of ``final`` (``.NAME.tmp-PID-*``, ``.NAME.old-PID-*``) left by
    exports that were killed, i.e. whose process PID no longer runs on this host. Returns what was removed.

    Temp directories of running exports (their PID is alive) are kept, so concurrent exports are safe.
    """
    final = Path(final).absolute()
    removed = []
    prefixes = (f".{final.name}.tmp-", f".{final.name}.old-")
    with contextlib.suppress(OSError):
        for p in final.parent.iterdir():
            if not p.name.startswith(prefixes) or p.is_symlink() or not p.is_dir():
                continue
            pid = p.name[len(prefixes[0]):].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if os.name == "posix" else None
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def _dir_lock(directory: Path):
    """Exclusive ``flock`` on ``directory`` (serialises the swap of concurrent exports into one folder)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory below ``root`` so the swap never exposes unwritten data after a crash."""
    for dirpath, _, filenames in os.walk(root):
        for name in [*filenames, "."]:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                _fsync_path(p)


def _free_bytes(directory: Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def _disk_full(exc: BaseException, directory: Path) -> int | None:
    """Free bytes on ``directory``'s file system if ``exc`` looks caused by a full disk, else None."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        return None
    free = _free_bytes(directory)
    e: BaseException | None = exc
    for _ in range(8):  # the OSError may sit in the context of an error that wrapped it (e.g. ExportError)
        if e is None:
            break
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return free if free is not None else 0
        e = e.__cause__ or e.__context__
    return free if free is not None and free < DISK_FULL_BYTES else None


def is_artifact_dir(path: str | os.PathLike) -> bool:
    """True if ``path`` is a real directory (not a symlink) whose ``manifest.json`` is a regular file of at most
    16 MiB holding a JSON object with an integer ``schema_version`` and a ``target`` string, i.e. something a vitedge
    export wrote. File hashes are not checked (an artifact whose files were edited is still one)."""
    p = Path(path)
    try:
        if not stat.S_ISDIR(os.lstat(p).st_mode):
            return False
        m = p / MANIFEST
        if not stat.S_ISREG(os.lstat(m).st_mode):
            return False
        doc = json.loads(_read_regular(m, MAX_MANIFEST_BYTES, "manifest").decode("utf-8"))
    except (OSError, ArtifactError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and _is_int(doc.get("schema_version")) and isinstance(doc.get("target"), str)


def check_destination(final: str | os.PathLike, force: bool = False, shown: str | None = None) -> None:
    """Refuse an export destination whose contents are not ours to replace.

    Accepted: a path that does not exist, an empty directory, or (only with ``force``) a previous vitedge artifact
    (:func:`is_artifact_dir`). Refused: a symlink (even to an artifact), a regular file or any other non-directory,
    a directory holding anything else (a user's ``docs/``, the working directory ``.``), and an artifact without
    ``force``. Nothing is created, removed or modified. ``shown``: the name used in messages (default ``final``).

    Raises:
        ArtifactError: ``DIR exists and is not a vitedge artifact; choose another -o or remove it``, or
            ``DIR already holds a vitedge artifact; pass --force to replace it``.
    """
    p = Path(final)
    name = shown if shown is not None else str(final)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ArtifactError(f"cannot use {name} as the output: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        if is_artifact_dir(p):
            if force:
                return
            raise ArtifactError(f"{name} already holds a vitedge artifact; pass --force to replace it")
        try:
            empty = not any(os.scandir(p))
        except OSError:
            empty = False
        if empty:
            return
    raise ArtifactError(f"{name} exists and is not a vitedge artifact; choose another -o or remove it")


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, *, force: bool = False):
    """Yield a temporary directory beside ``final``; on success it replaces ``final`` as a whole.

    * ``final`` must be absent, an empty directory, or (with ``force``) a previous vitedge artifact
      (:func:`check_destination`); this is checked before anything is created and again under the lock just
      before the swap (the folder may have changed meanwhile). Anything else, a symlink included, is never
      replaced: the temp directory is removed and ``final`` is left exactly as it was.
    * Stale temp directories of killed exports into the same ``final`` are removed first (:func:`clean_stale`).
    * On success the files are fsync'ed, then, under an exclusive lock on the parent folder, the temp directory
      is swapped with ``final`` by ``renameat2(RENAME_EXCHANGE)`` (Linux), so ``final`` is at every instant the
      old whole artifact or the new one. Where that call is unsupported the swap is two renames (old -> hidden
      backup, new -> final): a kill between them leaves no artifact at ``final``, never a partial one.
    * Two exports into one ``final`` at once with ``force`` both succeed; the one that swaps last wins, whole
      (without ``force`` the later one finds the first one's artifact and refuses).
    * On any exception the temporary directory is removed and ``final`` is untouched.

    Raises:
        ArtifactError: ``final`` is not replaceable (:func:`check_destination`), or the write failed on a full
            disk (``ENOSPC``/``EDQUOT``, or under 1 MiB left on the file system), with the original error
            appended; other exceptions pass through unchanged.
    """
    shown = str(final)
    check_destination(final, force, shown)
    final = Path(final).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        _fsync_tree(tmp)
        old = None
        with _dir_lock(final.parent):
            check_destination(final, force, shown)  # again: the folder may have changed since the export began
            if final.exists() or final.is_symlink():
                if _exchange(tmp, final):
                    old = tmp  # now holds the previous artifact
                else:
                    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-{os.getpid()}-", dir=final.parent))
                    os.replace(final, old / "a")
                    os.replace(tmp, final)
            else:
                os.replace(tmp, final)
            _fsync_path(final.parent)
        if old is not None:
            if old.is_symlink() or old.is_file():  # ``final`` was a symlink or a file, now swapped out
                old.unlink(missing_ok=True)
            else:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        free = None if isinstance(e, ArtifactError) else _disk_full(e, final.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if free is not None:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ArtifactError(f"cannot write {final}: no space left on device ({free} bytes free); nothing was "
                                f"written [{msg[:200]}]") from None
        raise


def _fsync_path(path) -> None:
    """fsync one file or directory (best effort: a filesystem that cannot fsync a directory is ignored)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
