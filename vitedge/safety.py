"""Guards for files a user hands us that someone else may have crafted: archives, directory trees, ONNX
external data and the names inside manifests.

Every check runs *before* the library that would read the file opens it, and refuses with one readable line
(an :class:`~vitedge.errors.ArtifactError` unless told otherwise); nothing is extracted or executed first.

* :func:`safe_zip_members`: any zip we read (TorchScript ``.pt``, AOTInductor ``.pt2``, torch checkpoints,
  bundles): no absolute names, no ``..`` components, no symlink or encrypted members, no duplicate names, a
  bounded member count, total uncompressed size and compression ratio (zip bomb), and no overlapping members
  (the "non-recursive" zip bomb of D. Fifield, WOOT 2019, whose members share one compressed kernel).
* :func:`safe_extract`: extraction that runs :func:`safe_zip_members` first and writes only inside the target.
* :func:`check_tree`: a directory artifact (Core ML ``.mlpackage``): no symlink resolving outside it, no device
  files or FIFOs, bounded entry count and size.
* :func:`check_onnx_external_data`: every external-data ``location`` of an ONNX file stays inside its folder
  (no ``../``, no absolute path, no symlink out) and its offset/length lie inside the data file.
* :func:`check_relative_name` / :func:`is_inside`: the name rules above, for manifests.
"""
from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .errors import ArtifactError, VitedgeError

__all__ = ["DEFAULT_MAX_ENTRIES", "DEFAULT_MAX_RATIO", "DEFAULT_MAX_TOTAL_BYTES", "check_onnx_external_data",
           "check_relative_name", "check_tree", "is_inside", "is_zip", "onnx_external_locations", "safe_extract",
           "safe_zip_members"]

DEFAULT_MAX_TOTAL_BYTES = 16 * 2**30  # 16 GiB uncompressed: far above any ViT artifact, far below a zip bomb's
DEFAULT_MAX_RATIO = 200                # uncompressed / compressed, per member; torch writes members stored (1.0)
DEFAULT_MAX_ENTRIES = 100_000
RATIO_MIN_BYTES = 1 << 20              # the ratio is only checked for members of at least 1 MiB uncompressed
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip local file header (APPNOTE 4.3.7), 30 bytes


def check_relative_name(name, what: str = "name", error: type[VitedgeError] = ArtifactError) -> PurePosixPath:
    """Check that ``name`` is a relative path that stays below the folder it is resolved in.

    Refused: a non-string or empty name, a NUL or backslash in it, an absolute path (``/x``, ``C:x``), any
    ``..`` component, a part over 255 bytes or a name over 1024 bytes. ``.`` components are dropped.
    Returns the name as a :class:`PurePosixPath`.

    Raises:
        ``error`` (default ArtifactError): naming ``what`` and the offending name.
    """
    if not isinstance(name, str) or not name or name in (".", "./"):
        raise error(f"{what} {name!r} is not a file name")
    if "\x00" in name or "\\" in name:
        raise error(f"{what} {name!r} holds a NUL or backslash")
    p = PurePosixPath(name)
    if p.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise error(f"{what} {name!r} is an absolute path")
    if ".." in p.parts:
        raise error(f"{what} {name!r} escapes its folder ('..')")
    if len(name.encode("utf-8", "surrogatepass")) > 1024 or any(len(c.encode("utf-8", "surrogatepass")) > 255
                                                                 for c in p.parts):
        raise error(f"{what} {name[:40]!r}... is longer than a file name may be (255 bytes a part, 1024 in all)")
    return p


def is_inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """True if ``path``, with every symlink resolved, lies inside ``root`` (also resolved)."""
    root_r = Path(root).resolve()
    try:
        return Path(path).resolve().is_relative_to(root_r)
    except (OSError, RuntimeError):  # symlink loop
        return False


def is_zip(path: str | os.PathLike) -> bool:
    """True if ``path`` is a regular file that starts like a zip archive (``PK\\x03\\x04`` or an empty one)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    except OSError:
        return False


def safe_zip_members(path: str | os.PathLike, *, max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
                     max_ratio: float = DEFAULT_MAX_RATIO, max_entries: int = DEFAULT_MAX_ENTRIES,
                     error: type[VitedgeError] = ArtifactError, data: bytes | None = None) -> list[zipfile.ZipInfo]:
    """Check a zip archive before anything reads or extracts it; return its members.

    ``data``: the archive's bytes, already read (e.g. by :meth:`vitedge.manifest.Artifact.read_file`); they are
    checked instead of the file, and ``path`` only names the archive in messages.

    Reads only the central directory and the local headers (no member is decompressed). Refused: not a zip or a
    corrupt one; more than ``max_entries`` members; a member name that is absolute, has a ``..`` component, a
    NUL or a backslash; duplicate names; symlink members (Unix mode in the external attributes); encrypted
    members; a total declared uncompressed size above ``max_total_bytes``; a member of at least 1 MiB whose
    uncompressed / compressed size exceeds ``max_ratio``; members whose data overlap or run past the central
    directory, or whose local header disagrees with the central directory; a compression method other than
    stored or deflate (the ones torch's zip reader, miniz, supports).

    Raises:
        ``error`` (default ArtifactError), naming the archive and the member.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path if data is None else io.BytesIO(data)) as zf:
            infos = zf.infolist()
            start_dir = zf.start_dir
    except FileNotFoundError:
        raise error(f"archive not found: {path}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error,
            NotImplementedError) as e:
        raise error(f"cannot load {path}: not a readable zip archive ({str(e).strip() or type(e).__name__})") from None
    if len(infos) > max_entries:
        raise error(f"archive {path} has {len(infos)} members, more than the limit of {max_entries}")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        check_relative_name(name.rstrip("/") or name, f"archive {path}: member", error)
        key = str(PurePosixPath(name))
        if key in seen:
            raise error(f"archive {path}: member {name!r} appears twice")
        seen.add(key)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise error(f"archive {path}: member {name!r} is a symlink")
        if info.flag_bits & 0x1:
            raise error(f"archive {path}: member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise error(f"archive {path}: member {name!r} uses compression method {info.compress_type} (only stored "
                        "and deflate are read)")
        if info.file_size < 0 or info.compress_size < 0:
            raise error(f"archive {path}: member {name!r} has a negative size")
        total += info.file_size
        if total > max_total_bytes:
            raise error(f"archive {path} expands to more than {max_total_bytes} bytes (zip bomb?) at member "
                        f"{name!r}")
        if info.file_size >= RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
            raise error(f"archive {path}: member {name!r} expands {info.file_size / max(info.compress_size, 1):.0f}"
                        f"-fold, more than the limit of {max_ratio:g} (zip bomb?)")
    _check_layout(path, infos, start_dir, error, data)
    return infos


def _check_layout(path: Path, infos, start_dir: int, error, data: bytes | None = None) -> None:
    """Each member's local header matches the central directory and the data ranges do not overlap."""
    spans = []
    size = path.stat().st_size if data is None else len(data)
    with (open(path, "rb") if data is None else io.BytesIO(data)) as f:
        for info in infos:
            if not 0 <= info.header_offset < size:
                raise error(f"archive {path}: member {info.filename!r} starts outside the file")
            f.seek(info.header_offset)
            raw = f.read(_LOCAL_HEADER.size)
            if len(raw) != _LOCAL_HEADER.size:
                raise error(f"archive {path}: member {info.filename!r} has a truncated local header")
            fields = _LOCAL_HEADER.unpack(raw)
            if fields[0] != b"PK\x03\x04":
                raise error(f"archive {path}: member {info.filename!r} has no local header where the directory "
                            "says")
            name_len, extra_len = fields[10], fields[11]
            local_name = f.read(name_len)
            decoded = local_name.decode("utf-8" if info.flag_bits & 0x800 else "cp437", errors="replace")
            if decoded != info.orig_filename:
                raise error(f"archive {path}: member {info.filename!r} is named {decoded!r} in its local header")
            begin = info.header_offset
            end = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size
            spans.append((begin, end, info.filename))
    spans.sort()
    for (b0, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise error(f"archive {path}: members {n0!r} and {n1!r} overlap (zip bomb?)")
    if spans and spans[-1][1] > start_dir:
        raise error(f"archive {path}: member {spans[-1][2]!r} runs into the central directory")


def safe_extract(path: str | os.PathLike, dest: str | os.PathLike, **limits) -> list[Path]:
    """Extract a zip archive into ``dest`` after :func:`safe_zip_members` (``limits`` are passed to it).

    Members are written only below ``dest`` (each target's resolved parent is checked) and each is read with
    its declared size as a hard cap (zipfile stops there and checks the CRC). Returns the extracted files.

    Raises:
        ArtifactError (or ``limits["error"]``): an unsafe archive; nothing outside ``dest`` is written.
    """
    error = limits.get("error", ArtifactError)
    infos = safe_zip_members(path, **limits)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    try:
        with zipfile.ZipFile(path) as zf:
            for info in infos:
                target = dest / PurePosixPath(info.filename)
                if not is_inside(dest, target.parent if info.is_dir() else target):
                    raise error(f"archive {path}: member {info.filename!r} would be written outside {dest}")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if not is_inside(dest, target.parent):
                    raise error(f"archive {path}: member {info.filename!r} would be written outside {dest}")
                with zf.open(info) as src, open(target, "xb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                out.append(target)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, zlib.error, OSError) as e:
        raise error(f"cannot extract {path}: {str(e).strip() or type(e).__name__}") from None
    return out


def check_tree(root: str | os.PathLike, *, max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
               max_entries: int = DEFAULT_MAX_ENTRIES, error: type[VitedgeError] = ArtifactError) -> list[str]:
    """Check a directory artifact (e.g. a Core ML ``.mlpackage``) before a runtime opens it.

    Walks ``root`` without following symlinks. Refused: a symlink whose target resolves outside ``root`` (or
    does not resolve), a FIFO, socket or device file, more than ``max_entries`` entries, regular files totalling
    more than ``max_total_bytes``. Returns the regular files as sorted POSIX paths relative to ``root``.

    Raises:
        ``error`` (default ArtifactError), naming the entry.
    """
    root = Path(root)
    if root.is_symlink() or not root.is_dir():
        raise error(f"{root} is not a directory")
    files, count, total = [], 0, 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            count += 1
            if count > max_entries:
                raise error(f"{root} holds more than {max_entries} entries")
            p = Path(dirpath) / name
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                if not p.exists() or not is_inside(root, p):
                    raise error(f"{root}: {rel} is a symlink pointing outside the artifact "
                                f"({os.readlink(p)})")
                if p.is_file():
                    files.append(rel)
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise error(f"{root}: {rel} is not a regular file (device, FIFO or socket)")
            total += st.st_size
            if total > max_total_bytes:
                raise error(f"{root} holds more than {max_total_bytes} bytes")
            files.append(rel)
    return sorted(files)


def _onnx_tensors(graph):
    """Every TensorProto of an ONNX graph: initializers, sparse initializers and attribute tensors, recursively."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node):
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        if attr.HasField("g"):
            yield from _onnx_tensors(attr.g)
        for g in attr.graphs:
            yield from _onnx_tensors(g)


def check_onnx_external_data(path: str | os.PathLike, data: bytes | None = None) -> list[str]:
    """Check every external-data reference of an ONNX file before a runtime opens it.

    Parses the model without loading external data (``onnx.load(..., load_external_data=False)``, or the bytes
    ``data`` when given: ``path`` then only locates the folder and names the file in messages) and, for
    each tensor stored externally (ONNX IR ``TensorProto.data_location == EXTERNAL``; graph, sparse and
    attribute tensors, subgraphs and functions), requires a ``location`` that is relative, has no ``..``
    component, resolves (symlinks followed) inside the ONNX file's folder to a regular file, and whose
    ``offset``/``length`` lie inside that file. Returns the sorted distinct locations (empty if none), normalised
    (``./w.bin`` -> ``w.bin``).

    Raises:
        ArtifactError: an unparsable file, or the first unsafe reference (names the tensor and the location).
    """
    return sorted(set(onnx_external_locations(path, data).values()))


def onnx_external_locations(path: str | os.PathLike, data: bytes | None = None) -> dict[str, str]:
    """As :func:`check_onnx_external_data`, but returns ``{location as written in the model: normalised location}``
    (ONNX Runtime's in-memory external data is keyed by the location exactly as the model writes it)."""
    import onnx
    from onnx import TensorProto

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False) if data is None else onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError and friends: one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"cannot load ONNX file {path}: {msg[:300]}") from None
    folder = path.parent
    tensors = list(_onnx_tensors(model.graph))
    for fn in model.functions:
        for node in fn.node:
            tensors.extend(_node_tensors(node))
    locations: dict[str, str] = {}
    for t in tensors:
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location")
        where = f"ONNX file {path}: tensor {t.name!r} external data location"
        rel = check_relative_name(loc, where)
        target = folder / rel
        if not is_inside(folder, target):
            raise ArtifactError(f"{where} {loc!r} resolves outside {folder} (symlink?)")
        if not target.is_file():
            raise ArtifactError(f"{where} {loc!r} is not a file in {folder}")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
        except ValueError:
            raise ArtifactError(f"{where} {loc!r} has a non-integer offset or length") from None
        size = target.stat().st_size
        if offset < 0 or offset > size or (length != -1 and (length < 0 or offset + length > size)):
            raise ArtifactError(f"{where} {loc!r}: offset {offset} / length {length} lie outside the "
                                f"{size}-byte file")
        locations[loc] = str(rel)
    return locations
