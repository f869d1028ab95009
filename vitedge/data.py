"""Real inputs: the photos bundled with scikit-image, image folders, and the preprocessing every runtime shares.

Preprocessing (recorded in each manifest, reproduced by the C++ runner, cpp/src/image.cpp): read the file
(a regular file of at most MAX_IMAGE_BYTES, checked before reading), decode to 8-bit RGB (16-bit samples:
``v >> 8``; grey replicated; alpha dropped), apply the EXIF orientation (:func:`exif_orientation`), resize
keeping the aspect ratio so the image covers (H, W) (Pillow bilinear), center-crop to (H, W), then float32
``(pixel * scale - mean) / std`` in NCHW layout.
"""
from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageError

__all__ = ["BUNDLED_PHOTOS", "IMAGE_EXTENSIONS", "IMAGE_FORMATS", "MAX_IMAGE_BYTES", "bundled_photo_paths",
           "exif_orientation", "image_paths", "labelled_image_paths", "load_batch", "load_rgb", "make_preprocessing", "preprocess",
           "read_image_file"]

# Colour photographs shipped inside the scikit-image wheel (skimage/data), no download needed.
BUNDLED_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg",
                  "motorcycle_left.png", "retina.jpg", "ihc.png")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_PIXELS = 89_478_485  # Pillow's default decompression-bomb limit (~0.25 GB of 24-bit RGB)
# Decoders Pillow may use: the formats of IMAGE_EXTENSIONS (JPEG includes multi-picture MPO files). Others
# (EPS, which runs Ghostscript; PSD, FITS, ...) are refused whatever the file is named.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF")
# Largest image file read, in bytes (checked with fstat before reading); the C++ runner's kMaxImageFileBytes.
MAX_IMAGE_BYTES = 2**31 - 1


def make_preprocessing(size: tuple[int, int], mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> dict:
    """The manifest's ``preprocessing`` dict for an (H, W) input."""
    return {"size": [int(size[0]), int(size[1])], "resize": "cover", "crop": "center", "interpolation": "bilinear",
            "scale": 1 / 255, "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "layout": "NCHW", "color": "RGB"}


def bundled_photo_paths() -> list[Path]:
    """Paths of the bundled colour photos (8 files in scikit-image's data folder)."""
    import skimage.data
    root = Path(skimage.data.__file__).parent
    paths = [root / n for n in BUNDLED_PHOTOS if (root / n).is_file()]
    if not paths:
        raise ImageError(f"no bundled photos found in {root}; is scikit-image installed?")
    return paths


def image_paths(folder: str | os.PathLike) -> list[Path]:
    """Image files (by extension, sorted) directly inside ``folder``.

    Raises:
        ImageError: the folder does not exist or holds no image files, or an entry with an image extension is
            not a regular file (a FIFO, device, directory or dangling symlink): one line naming it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"image folder not found: {folder}")
    paths = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            mode = p.stat().st_mode  # follows a symlink; never opens the entry, so a FIFO cannot block
        except OSError as e:
            raise ImageError(f"cannot read image {p}: {e.strerror}") from None
        if not stat.S_ISREG(mode):
            raise ImageError(f"{p} is {_file_kind(mode)}, not a regular file; refusing it (remove it from {folder})")
        paths.append(p)
    if not paths:
        raise ImageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return paths


def labelled_image_paths(folder: str | os.PathLike) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """Images of ``folder`` with their labels when it is laid out ImageFolder-style.

    A folder with image files directly inside: those (sorted), no labels. A folder with none but class
    subfolders (not hidden) holding images: every image of each subfolder (one level, sorted), labelled with the
    subfolder's index in the sorted list of the subfolders that hold images (the class names).
    Returns (paths, labels or None, class names or None).
    Raises:
        ImageError: as :func:`image_paths` (missing folder, no images, an entry that is not a regular file).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"image folder not found: {folder}")
    entries = sorted(folder.iterdir())
    classes = [d for d in entries if not d.name.startswith(".") and d.is_dir()]
    if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in entries) or not classes:
        return image_paths(folder), None, None
    paths: list[Path] = []
    labels: list[int] = []
    names: list[str] = []
    for d in classes:
        if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in d.iterdir()):
            continue
        found = image_paths(d)
        paths += found
        labels += [len(names)] * len(found)
        names.append(d.name)
    if not paths:
        raise ImageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder} or its class subfolders")
    return paths, labels, names


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_image_file(path: str | os.PathLike) -> bytes:
    """The bytes of the image file at ``path``, read once, as the C++ runner's read_image_file.

    The file is opened with ``O_NONBLOCK`` (opening a FIFO cannot block), fstat'ed on the descriptor (anything
    but a regular file is refused: FIFO, device, directory, socket), its size checked against
    :data:`MAX_IMAGE_BYTES` before any byte is read, then read.

    Raises:
        ImageError: missing, unopenable, not a regular file, or over MAX_IMAGE_BYTES bytes.
    """
    path = Path(path)
    flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_BINARY", 0))
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageError(f"image not found: {path}") from None
    except OSError as e:
        raise ImageError(f"cannot decode image {path}: cannot open file ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"cannot decode image {path}: it is {_file_kind(st.st_mode)}, not a regular file; "
                             "refusing to read it")
        if st.st_size > MAX_IMAGE_BYTES:
            raise ImageError(f"cannot decode image {path}: the file is {st.st_size} bytes, over the limit of "
                             f"{MAX_IMAGE_BYTES} bytes (2 GiB); not read")
        chunks, left = [], st.st_size
        while left > 0:  # exactly the size fstat gave; a file that shrank meanwhile reads short
            b = os.read(fd, min(left, 1 << 30))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        return b"".join(chunks)
    except OSError as e:
        raise ImageError(f"cannot decode image {path}: read error ({e.strerror})") from None
    finally:
        os.close(fd)


# Bytes per value of the TIFF field types Pillow's ImageFileDirectory_v2 reads; other types are skipped.
_TIFF_UNIT = {1: 1, 2: 1, 6: 1, 7: 1, 3: 2, 8: 2, 4: 4, 9: 4, 11: 4, 13: 4, 5: 8, 10: 8, 12: 8, 16: 8}
# Integer types: struct format of one value (Pillow reads BYTE as bytes, so it is not one of them).
_TIFF_INT = {3: "H", 4: "I", 13: "I", 6: "b", 8: "h", 9: "i", 16: "Q"}


def _tiff_orientation(t: bytes) -> int:
    for _ in range(2):  # Pillow strips "Exif\0\0" once or twice (Image.Exif.load)
        if t[:6] == b"Exif\0\0":
            t = t[6:]
    if len(t) < 8:
        return 1
    if t[:4] == b"II*\0":
        e = "<"
    elif t[:4] == b"MM\0*":
        e = ">"
    else:
        return 1
    (ifd,) = struct.unpack_from(e + "I", t, 4)
    if ifd + 2 > len(t):
        return 1
    (count,) = struct.unpack_from(e + "H", t, ifd)
    stored, total = set(), 0  # IFD0's entries in order, as Pillow's ImageFileDirectory_v2.load reads them
    for k in range(count):
        at = ifd + 2 + 12 * k
        if at + 12 > len(t):
            return 1  # an incomplete entry ends the IFD
        tag, typ, n = struct.unpack_from(e + "HHI", t, at)
        if tag in stored:
            continue  # a repeated tag: the first stored one counts
        size = _TIFF_UNIT.get(typ, 0) * n
        if size == 0:
            continue  # unknown type, or no value: skipped
        at += 8  # the value, inline when it fits in 4 bytes
        if size > 4:
            total += size
            if total > len(t):
                continue  # more value bytes than the block holds: this entry skipped
            (at,) = struct.unpack_from(e + "I", t, at)
            if at + size > len(t):
                return 1  # a value past the end ends the IFD
        stored.add(tag)
        if tag != 0x0112:
            continue
        if typ not in _TIFF_INT:
            return 1
        (v,) = struct.unpack_from(e + _TIFF_INT[typ], t, at)  # the first value
        return v if 1 <= v <= 8 else 1
    return 1


def exif_orientation(data: bytes) -> int:
    """The EXIF Orientation (1..8) of an encoded JPEG or PNG image; 1 when absent or malformed.

    The rule, identical in the C++ runner (cpp/src/image.cpp ``exif_orientation``): JPEG (starts FF D8): the APP1
    segments whose payload starts ``Exif\\0\\0``, walked from SOI up to the first SOS or EOI, their TIFF data
    concatenated (as Pillow); PNG: the last ``eXIf`` chunk before IEND (before or after IDAT). In that TIFF data
    (``II*\\0`` or ``MM\\0*``, then the IFD0 offset), IFD0's entries are walked as Pillow's ImageFileDirectory_v2
    walks them: an incomplete entry or an out-of-line value past the end ends the walk; an unknown type, a count of
    0, or out-of-line values adding up to more than the block are skipped; a repeated tag is skipped. The first
    0x0112 entry kept gives the orientation when its type is an integer (SHORT, LONG, SBYTE, SSHORT, SLONG, IFD,
    LONG8) and its first value is 1..8; anything else is 1. Every offset is bounds-checked and only IFD0 is read
    (no IFD chain, so no loop). Not read by either side, though Pillow's ``ImageOps.exif_transpose`` reads them:
    XMP ``tiff:Orientation``, PNG text chunks ("Raw profile type exif", "exif"), BigTIFF-form EXIF, and
    orientations stored as FLOAT/DOUBLE/RATIONAL.
    """
    n = len(data)
    if data[:2] == b"\xff\xd8":
        exif, found, i = bytearray(), False, 2
        while i < n and data[i] == 0xFF:
            while i < n and data[i] == 0xFF:  # fill bytes
                i += 1
            if i >= n:
                break
            m = data[i]
            i += 1
            if m in (0xD8, 0x01) or 0xD0 <= m <= 0xD7:  # no length field
                continue
            if m in (0xDA, 0xD9, 0x00) or i + 2 > n:
                break
            (length,) = struct.unpack_from(">H", data, i)
            if length < 2 or i + length > n:
                break
            if m == 0xE1 and length - 2 >= 6 and data[i + 2:i + 8] == b"Exif\0\0":
                exif += data[i + 8:i + length]
                found = True
            i += length
        return _tiff_orientation(bytes(exif)) if found else 1
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        i, last = 8, None
        while i + 8 <= n:
            (length,) = struct.unpack_from(">I", data, i)
            if i + 12 + length > n:  # data and CRC must be there
                break
            kind = data[i + 4:i + 8]
            if kind == b"IEND":
                break
            if kind == b"eXIf":
                last = data[i + 8:i + 8 + length]
            i += 12 + length
        return _tiff_orientation(last) if last is not None else 1
    return 1


# Pillow's transposes for orientations 2..8 (as ImageOps.exif_transpose).
_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image file to an 8-bit RGB PIL image with its EXIF orientation applied.

    The file is read once by :func:`read_image_file` (regular files only, size checked before reading).
    Modes, the same pixels as stb_image in the C++ runner: a 16-bit sample becomes its high byte ``v >> 8`` (grey
    ``I;16``/``I;16B``, and 16-bit RGB/RGBA/LA, which Pillow already reduces that way; 32-bit ``I`` samples are
    clipped to 0..65535 first); greyscale is replicated to 3 channels; RGBA/LA drop the alpha channel; CMYK and
    palette images are converted by Pillow. Orientation: JPEG and PNG by :func:`exif_orientation` (the rule the
    C++ runner applies); WebP and TIFF (Python only) by Pillow's ``ImageOps.exif_transpose``. Only the decoders
    of :data:`IMAGE_FORMATS` run, and truncated files are errors (it refuses to run while Pillow's global
    ``LOAD_TRUNCATED_IMAGES`` is on).

    Raises:
        ImageError: unreadable, not a regular file, over MAX_IMAGE_BYTES, not an image, a format outside
            IMAGE_FORMATS, truncated, or larger than MAX_PIXELS (decompression bomb: refused from the header,
            before any pixel is decoded).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if ImageFile.LOAD_TRUNCATED_IMAGES:  # another library switched it on globally; not for us
                raise ImageError(f"cannot decode image {path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set, so a "
                                 "truncated file would decode silently; unset it")
            data = read_image_file(path)
            if not data:
                raise ImageError(f"cannot decode image {path}: no bytes (empty file)")
            try:
                opened = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            except UnidentifiedImageError:
                raise ImageError(f"cannot decode image {path}: cannot identify image file (not "
                                 f"{', '.join(IMAGE_FORMATS)})") from None
            with opened as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageError(f"{path}: {im.width}x{im.height} pixels exceeds the {MAX_PIXELS} pixel limit")
                im.load()
                if im.format in ("JPEG", "MPO", "PNG"):  # the formats the C++ runner decodes too: one rule
                    orientation = exif_orientation(data)
                    if orientation != 1:
                        im = im.transpose(_ORIENT[orientation])
                else:
                    im = ImageOps.exif_transpose(im)
                if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: the high byte, as stb_image
                    im = Image.fromarray((np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8))
                elif im.mode == "I":  # 32-bit integer grey (TIFF): clipped to 16 bits, then the high byte
                    a = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
                    im = Image.fromarray((a >> 8).astype(np.uint8))
                return im.convert("RGB")
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"image not found: {path}") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"cannot decode image {path}: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"cannot decode image {path}: {e}") from None
    except (MemoryError, RecursionError, ArithmeticError, LookupError, TypeError, AttributeError, struct.error) as e:
        # a malformed header or EXIF block reaching a Pillow code path that does not expect it
        raise ImageError(f"cannot decode image {path}: {type(e).__name__}: {str(e)[:200]}") from None


def resize_cover_crop(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize keeping the aspect ratio so ``im`` covers (H, W), bilinear, then center-crop to (H, W)."""
    h, w = size
    if (im.height, im.width) == (h, w):
        return im
    s = max(h / im.height, w / im.width)
    nh, nw = max(h, round(im.height * s)), max(w, round(im.width * s))
    im = im.resize((nw, nh), Image.BILINEAR)
    top, left = (nh - h) // 2, (nw - w) // 2
    return im.crop((left, top, left + w, top + h))


def preprocess(im: Image.Image, pre: dict) -> np.ndarray:
    """PIL RGB image -> float32 array (3, H, W) per the manifest's ``preprocessing`` dict."""
    im = resize_cover_crop(im, tuple(pre["size"]))
    x = np.asarray(im, dtype=np.uint8).astype(np.float32)
    mean = np.asarray(pre["mean"], dtype=np.float32)
    std = np.asarray(pre["std"], dtype=np.float32)
    x = (x * np.float32(pre["scale"]) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def load_batch(paths, pre: dict) -> torch.Tensor:
    """Decode and preprocess image files into a float32 (N, 3, H, W) tensor. Raises ImageError."""
    return torch.from_numpy(np.stack([preprocess(load_rgb(p), pre) for p in paths]))


# ---------------------------------------------------------------------------------------------------------
# Labelled real images: scikit-learn's bundled handwritten digits (1797 8x8 greyscale images, 10 classes).

DIGITS_LABELS = [str(i) for i in range(10)]


def digits_split(seed: int = 0, test_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Fixed, stratified train/test split of the digits: (train indices, test indices), disjoint, seeded."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    y = load_digits().target
    train, test = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=y)
    return np.sort(train), np.sort(test)


def digits_images(indices) -> tuple[list[Image.Image], np.ndarray]:
    """Digits ``indices`` as 8x8 RGB PIL images (grey 0..16 scaled to 0..255) and their int64 labels."""
    from sklearn.datasets import load_digits
    d = load_digits()
    idx = np.asarray(indices)
    pix = np.clip(d.images[idx] * (255.0 / 16.0) + 0.5, 0, 255).astype(np.uint8)
    return [Image.fromarray(p).convert("RGB") for p in pix], d.target[idx].astype(np.int64)


def digits_batch(indices, pre: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed digits: float32 (N, 3, H, W) upsampled with the artifact's preprocessing, and int64 labels (N,)."""
    ims, y = digits_images(indices)
    return torch.from_numpy(np.stack([preprocess(im, pre) for im in ims])), torch.from_numpy(y)
