"""Image inputs (issue 17), Python side: EXIF orientation by the rule the C++ runner applies too, 16-bit PNG as
``v >> 8``, and image files that are not regular files (FIFO, device, directory) or too large refused quickly,
before any byte is read. The same files through C++ are checked against these numbers by cpp/tests/image_parity.py
(ctest cpp_image_parity); the C++ unit checks are cpp/tests/image_tests.cpp (ctest cpp_image)."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from vitedge.data import (MAX_IMAGE_BYTES, bundled_photo_paths, exif_orientation, image_paths, load_batch, load_rgb,
                          read_image_file)
from vitedge.errors import ImageError

ROOT = Path(__file__).resolve().parents[2]
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return Image.open([p for p in bundled_photo_paths() if p.name == "chelsea.png"][0]).convert("RGB")


def chunk(t: bytes, d: bytes) -> bytes:
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


def tiff(entries, endian="<", ifd=8, count=None) -> bytes:
    """EXIF TIFF data: header, IFD0 at ``ifd`` holding ``entries`` (tag, type, count, value), next IFD 0."""
    head = (b"II*\0" if endian == "<" else b"MM\0*") + struct.pack(endian + "I", ifd)
    body = struct.pack(endian + "H", len(entries) if count is None else count)
    for tag, typ, n, v in entries:
        value = (struct.pack(endian + "HH", v, 0) if typ in (3, 8) else bytes([v, 0, 0, 0]) if typ in (1, 6)
                 else struct.pack(endian + "I", v))  # left-justified in the 4-byte field
        body += struct.pack(endian + "HHI", tag, typ, n) + value
    return head + body + struct.pack(endian + "I", 0)


def jpeg_with_app1(im: Image.Image, *payloads: bytes) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    segs = b"".join(b"\xff\xe1" + struct.pack(">H", len(p) + 2) + p for p in payloads)
    return data[:2] + segs + data[2:]


def png_with_exif(im: Image.Image | bytes, exif: bytes, after_idat: bool = False) -> bytes:
    if isinstance(im, Image.Image):
        buf = io.BytesIO()
        im.save(buf, "PNG")
        im = buf.getvalue()
    data = im
    at = data.index(b"IEND" if after_idat else b"IDAT") - 4
    return data[:at] + chunk(b"eXIf", exif) + data[at:]


def png16(a: np.ndarray, ctype: int) -> bytes:
    h, w = a.shape[:2]
    raw = b"".join(b"\0" + row.tobytes() for row in a.astype(">u2").reshape(h, -1))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------------------------------
# EXIF orientation

@pytest.mark.parametrize("fmt", ["jpeg-pillow", "jpeg-be", "png-le", "png-be-after-idat"])
def test_orientation_matches_pillow(tmp_path, chelsea, fmt):
    small = chelsea.resize((60, 40), Image.BILINEAR)
    for o in range(1, 9):
        f = tmp_path / f"o{o}.{fmt[:3].replace('jpe', 'jpg')}"
        if fmt == "jpeg-pillow":
            exif = Image.Exif()
            exif[0x0112] = o
            small.save(f, "JPEG", quality=95, exif=exif)
        elif fmt == "jpeg-be":
            f.write_bytes(jpeg_with_app1(small, b"Exif\0\0" + tiff([(0x010F, 2, 20, 38), (0x0112, 3, 1, o)], ">")
                                         + b"vitedge test camera\0"))
        else:
            f.write_bytes(png_with_exif(small, tiff([(0x0112, 3, 1, o)], "<" if fmt == "png-le" else ">"),
                                        after_idat=fmt.endswith("after-idat")))
        data = f.read_bytes()
        assert exif_orientation(data) == o
        got = load_rgb(f)
        want = ImageOps.exif_transpose(Image.open(f)).convert("RGB")
        assert got.size == ((40, 60) if o >= 5 else (60, 40))
        assert np.array_equal(np.asarray(got), np.asarray(want)), (fmt, o)
        plain = Image.open(f).convert("RGB")
        assert np.array_equal(np.asarray(got), np.asarray(plain.transpose(TRANSPOSE[o]) if o > 1 else plain))


E6 = [(0x0112, 3, 1, 6)]


@pytest.mark.parametrize("block,want", [
    (tiff(E6), 6),
    (tiff([(0x0112, 4, 1, 6)]), 6),                          # LONG
    (tiff([(0x0112, 3, 1, 0)]), 1), (tiff([(0x0112, 3, 1, 9)]), 1),
    (tiff([(0x0112, 2, 1, 6)]), 1),                          # ASCII
    (tiff([(0x0112, 3, 2, 6)]), 6),                          # count 2: the first value
    (tiff([(0x0112, 8, 1, 6)], ">"), 6),                     # SSHORT
    (tiff([(0x0112, 9, 1, 0xFFFFFFFA)]), 1),                 # SLONG -6
    (tiff([(0x0112, 1, 1, 6)]), 1),                          # BYTE: Pillow reads bytes, not applied
    (tiff([(0x0112, 99, 1, 6), (0x0112, 3, 1, 3)]), 3),      # unknown type skipped
    (tiff([(0x0112, 3, 0, 6), (0x0112, 3, 1, 3)]), 3),       # count 0 skipped
    (tiff([(0x010F, 2, 20, 100), (0x0112, 3, 1, 6)]), 1),    # an out-of-line value past the end ends the IFD
    (tiff([(0x010F, 2, 200, 8), (0x0112, 3, 1, 6)]), 6),     # value bytes over the block's size: entry skipped
    (tiff([(0x0112, 3, 3, 1000)]), 1),
    (tiff(E6, ifd=0xFFFFFFF0), 1), (tiff(E6, ">", ifd=0x7FFFFFFF), 1),  # IFD0 past the end
    (tiff(E6, count=65535), 6),                              # entry count past the end: complete entries count
    (tiff([(0x0100, 3, 1, 5), (0x0112, 3, 1, 6)])[:28], 1),   # the orientation entry cut short
    (tiff([(0x0112, 3, 1, 6), (0x0112, 3, 1, 3)]), 6),       # the first entry decides
    (tiff(E6)[:-4] + struct.pack("<I", 8), 6),               # next-IFD offset looping to IFD0: never followed
    (b"Exif\0\0" + tiff(E6), 6),                             # a second "Exif\0\0" (Pillow strips it too)
    (b"XX*\0" + tiff(E6)[4:], 1), (tiff(E6)[:6], 1), (b"not TIFF at all", 1), (b"", 1),
])
def test_exif_blocks(tmp_path, chelsea, block, want):
    small = chelsea.resize((30, 20), Image.BILINEAR)
    for data in (jpeg_with_app1(small, b"Exif\0\0" + block), png_with_exif(small, block)):
        assert exif_orientation(data) == want
        f = tmp_path / ("x.jpg" if data[:2] == b"\xff\xd8" else "x.png")
        f.write_bytes(data)
        im = load_rgb(f)  # a malformed block never makes the image fail
        assert im.size == ((20, 30) if want >= 5 else (30, 20))


def test_exif_segments_and_chunks(chelsea):
    small = chelsea.resize((30, 20), Image.BILINEAR)
    whole = tiff([(0x0100, 3, 1, 5), (0x0112, 3, 1, 8)], ">")
    # Two APP1 Exif segments: their TIFF data concatenated (Pillow), so an IFD0 split across them is read.
    assert exif_orientation(jpeg_with_app1(small, b"Exif\0\0" + whole[:20], b"Exif\0\0" + whole[20:])) == 8
    # PNG: the last eXIf chunk wins, before or after IDAT.
    two = png_with_exif(png_with_exif(small, tiff(E6)), tiff([(0x0112, 3, 1, 3)]), after_idat=True)
    assert exif_orientation(two) == 3
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(two))).size == (30, 20)  # Pillow: 3 too
    # Segment and chunk lengths past the end, or below 2: stop, orientation 1.
    good = jpeg_with_app1(small, b"Exif\0\0" + tiff(E6))
    assert exif_orientation(good[:4] + b"\xff\xff" + good[6:]) == 1
    assert exif_orientation(good[:4] + b"\x00\x01" + good[6:]) == 1
    p = png_with_exif(small, tiff(E6))
    assert exif_orientation(p[:33] + b"\x7f" + p[34:]) == 1
    for n in range(len(good) // 4):  # every prefix: no exception
        assert 1 <= exif_orientation(good[:n]) <= 8


# ---------------------------------------------------------------------------------------------------------
# 16-bit PNG: v >> 8

def test_16bit_png_is_high_byte(tmp_path, chelsea):
    rgb = np.asarray(chelsea).astype(np.uint16)
    rng = np.random.default_rng(0)
    rgb16 = rgb * 256 + rng.integers(0, 256, rgb.shape, dtype=np.uint16)
    grey16 = rgb16[..., 0]
    dark = np.asarray(chelsea.convert("L")).astype(np.uint16)  # a dark 16-bit photo: every sample <= 255
    alpha = rng.integers(0, 65536, grey16.shape, dtype=np.uint16)
    cases = {
        "grey16.png": (Image.fromarray(grey16), grey16, "I;16"),   # written by Pillow (mode I;16)
        "dark16.png": (Image.fromarray(dark), dark, "I;16"),
        "dark12.png": (png16(dark * 16, 0), dark * 16, "I;16"),
        "la16.png": (png16(np.stack([grey16, alpha], -1), 4), grey16, "RGBA"),
        "rgb16.png": (png16(rgb16, 2), rgb16, "RGB"),
        "rgba16.png": (png16(np.concatenate([rgb16, alpha[..., None]], -1), 6), rgb16, "RGBA"),
    }
    for name, (src, samples, pil_mode) in cases.items():
        f = tmp_path / name
        src.save(f) if isinstance(src, Image.Image) else f.write_bytes(src)
        assert Image.open(f).mode == pil_mode, name
        want = (samples >> 8).astype(np.uint8)
        want = np.repeat(want[..., None], 3, 2) if want.ndim == 2 else want
        assert np.array_equal(np.asarray(load_rgb(f)), want), name
    # The dark photo is black after v >> 8 (the old code stretched it by 255 / max).
    assert np.asarray(load_rgb(tmp_path / "dark16.png")).max() == 0
    # Big-endian I;16B, as a TIFF (Python-only format) gives it: the same rule.
    Image.frombytes("I;16B", chelsea.size, grey16.astype(">u2").tobytes()).save(tmp_path / "grey16b.tif")
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "grey16b.tif"))[..., 0], (grey16 >> 8).astype(np.uint8))


# ---------------------------------------------------------------------------------------------------------
# Files that are not regular, and sizes

def _load_in_subprocess(path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """load_batch(path) in a child with a timeout, so that a regression that blocks fails instead of hanging."""
    code = ("import sys\nfrom vitedge.data import load_batch\nfrom vitedge.errors import ImageError\ntry:\n"
            "    load_batch([sys.argv[1]], {'size': [8, 8], 'scale': 1/255, 'mean': [0, 0, 0], 'std': [1, 1, 1]})\n"
            "except ImageError as e:\n    print(e)\n    sys.exit(1)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_non_regular_image_refused(tmp_path, kind):
    path = {"fifo": tmp_path / "pipe.jpg", "dev-zero": Path("/dev/zero"), "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    t0 = time.monotonic()
    r = _load_in_subprocess(path)
    assert r.returncode == 1 and not r.stderr.strip(), (r.stdout, r.stderr)
    want = {"fifo": "a FIFO", "dev-zero": "a character device", "directory": "a directory"}[kind]
    assert f"it is {want}, not a regular file" in r.stdout and len(r.stdout.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 30
    with pytest.raises(ImageError, match="not a regular file"):
        read_image_file(path)  # in-process too (opened O_NONBLOCK: returns at once)


def test_huge_sparse_file_refused_without_reading(tmp_path):
    big = tmp_path / "big.png"
    with open(big, "wb") as fh:
        fh.truncate(3 << 30)  # 3 GiB, sparse
    t0 = time.monotonic()
    with pytest.raises(ImageError, match=f"over the limit of {MAX_IMAGE_BYTES} bytes"):
        load_rgb(big)
    assert time.monotonic() - t0 < 1.0  # reading 3 GiB would take seconds (and 3 GiB of memory)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="no bytes"):
        load_rgb(tmp_path / "empty.png")


def test_image_folder_with_fifo_is_refused(tmp_path, chelsea):
    folder = tmp_path / "imgs"
    folder.mkdir()
    chelsea.save(folder / "cat.png")
    assert image_paths(folder) == [folder / "cat.png"]
    os.mkfifo(folder / "pipe.jpg")
    with pytest.raises(ImageError, match="pipe.jpg is a FIFO, not a regular file"):
        image_paths(folder)
    os.unlink(folder / "pipe.jpg")
    os.symlink(folder / "missing.png", folder / "dangling.png")
    with pytest.raises(ImageError, match="dangling.png"):
        image_paths(folder)


def test_cli_images_folder_with_fifo(tmp_path, chelsea):
    """`vitedge bench ART --images DIR` with a FIFO in DIR: one line, exit 1, no hang (a data-format artifact)."""
    from vitedge.export import export, prepare_preset
    model, spec, pre = prepare_preset("deit_tiny", image_size=(32, 32), num_classes=2)
    art = export(model, torch.zeros(2, 3, 32, 32), "onnx", tmp_path / "art", spec=spec, preprocessing=pre).path
    folder = tmp_path / "imgs"
    folder.mkdir()
    chelsea.save(folder / "cat.png")
    os.mkfifo(folder / "pipe.jpg")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", "import sys; from vitedge.cli import main; sys.exit(main(sys.argv[1:]))",
                        "bench", str(art), "--images", str(folder), "--iters", "1", "--warmup", "0"],
                       capture_output=True, text=True, timeout=120, env=env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("vitedge: error: ") and "pipe.jpg is a FIFO" in lines[0], r.stderr


def test_load_batch_on_rotated_photo_matches_pillow_pipeline(tmp_path, chelsea):
    """The preprocessed tensor of an orientation-6 JPEG is the one of the upright pixels (no 0.43-logit drift)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    chelsea.save(tmp_path / "rot.jpg", quality=95, exif=exif)
    pre = {"size": [64, 64], "scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    from vitedge.data import preprocess
    want = preprocess(ImageOps.exif_transpose(Image.open(tmp_path / "rot.jpg")).convert("RGB"), pre)
    assert np.array_equal(load_batch([tmp_path / "rot.jpg"], pre).numpy()[0], want)


def test_exif_orientation_agrees_with_pillow_on_mutations():
    """Random byte mutations of a camera-like EXIF header: our rule gives Pillow's orientation wherever Pillow
    opens the file (its getexif on the same bytes; integer orientation 1..8, else 1)."""
    import random
    import warnings
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 90)).save(buf, "JPEG")
    jpg = buf.getvalue()

    def camera(o, e):
        return tiff([(0x10F, 2, 8, 50), (0x112, 3, 1, o), (0x11A, 5, 1, 58)], e) + b"camera\0\0" + \
            struct.pack(e + "II", 72, 1)

    seeds = [jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(camera(o, e)) + 8) + b"Exif\0\0" + camera(o, e) + jpg[2:]
             for o in (3, 6, 8) for e in "<>"]
    rng = random.Random(17)
    compared = 0
    for _ in range(1500):
        b = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(2, 80)] = rng.choice((0, 1, 2, 3, 4, 5, 6, 8, 9, 11, 0xFF, 0x12, rng.randrange(256)))
        b = bytes(b)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                v = Image.open(io.BytesIO(b)).getexif().get(0x0112)
        except Exception:  # Pillow cannot open it: load_rgb refuses the file, no orientation to compare
            continue
        want = v if type(v) is int and 1 <= v <= 8 else 1
        assert exif_orientation(b) == want, b[:80].hex()
        compared += 1
    assert compared > 1000
