"""One preprocessing definition (issue 17): the same image files through C++ and Python give the same numbers.

image_parity.py --tool PATH/vitedge_image_tests --workdir DIR [--bench PATH/vitedge-bench --classify PATH/classify]

The C++ side is vitedge::load_image (what vitedge-bench --image, classify, vitedge-load and the C ABI's
vitedge_preprocess_file call), driven by ``vitedge_image_tests --dump IMG H W OUT``; the Python side is
vitedge.data.load_batch. Preprocessing: scale 1/255, mean 0, std 1, so a difference of 1/255 is one pixel level.

1. EXIF orientation 1..8, PNG (lossless: C++ == Python within 1e-6) from real photos (chelsea 451x300,
   astronaut), eXIf chunk little- and big-endian, before and after IDAT, at a square and a non-square target
   (the orientation is applied before the cover-resize). Python's pixels equal Pillow's ImageOps.exif_transpose.
2. EXIF orientation 1..8, JPEG written by Pillow (APP1 Exif): a 64x64 JPEG at 64x64 (no resize) gives C++
   pixels exactly the Pillow transpose of C++'s orientation-1 pixels (the JPEG data is the same, only the tag
   differs); non-square chelsea JPEGs agree with Python within 1 pixel level (stb_image vs libjpeg IDCT), where
   an ignored orientation differs by far more.
3. 16-bit PNG from a real photo (grey, grey + tRNS, grey + alpha, RGB, RGBA, and a dark 12-bit grey one): C++ ==
   Python within 1e-6, and both equal the definition, sample v -> v >> 8.
4. The EXIF parsers agree byte for byte: exif_orientation on hostile blocks and on 1000 random mutations of a
   real EXIF header, C++ (--orientation) vs Python.
5. A FIFO, /dev/zero, a directory and a sparse 3 GiB file are refused quickly by both (subprocess timeouts, so
   a regression fails instead of hanging); a FIFO inside an --images folder is refused by image_paths.
6. With --bench/--classify: the same four refused by vitedge-bench --image and classify on a tiny ONNX artifact
   (a data format: loads without a signature), one line and exit 1, and an orientation-6 JPEG classified as the
   upright photo (same top-1 and softmax within 1e-3 as the explicitly rotated PNG).
"""
from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from _common import Failure, main

PRE = {"size": [64, 64], "resize": "cover", "crop": "center", "interpolation": "bilinear", "scale": 1 / 255,
       "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "layout": "NCHW", "color": "RGB"}
EXACT = 1e-6
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}  # Pillow's, as ImageOps.exif_transpose
TIMEOUT = 20  # seconds: a refusal is instant; a hang is a failure, not a stuck test


def chunk(t: bytes, d: bytes) -> bytes:
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


def tiff(orientation: int, endian: str = "<", extra_tags: bool = True) -> bytes:
    """EXIF TIFF data with a camera-like IFD0 (Make, Model with out-of-line values, then Orientation)."""
    make, model = b"vitedge test camera\0", b"issue 17 rotated\0\0\0\0"
    entries = [(0x010F, 2, len(make), None), (0x0110, 2, len(model), None)] if extra_tags else []
    entries.append((0x0112, 3, 1, orientation))
    ifd_size = 2 + 12 * len(entries) + 4
    data_at = 8 + ifd_size
    body, blobs = struct.pack(endian + "H", len(entries)), b""
    for tag, typ, count, value in entries:
        if value is None:
            blob = make if tag == 0x010F else model
            body += struct.pack(endian + "HHII", tag, typ, count, data_at + len(blobs))
            blobs += blob
        else:
            body += struct.pack(endian + "HHIH", tag, typ, count, value) + b"\0\0"
    head = (b"II*\0" if endian == "<" else b"MM\0*") + struct.pack(endian + "I", 8)
    return head + body + struct.pack(endian + "I", 0) + blobs


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def with_exif_png(png: bytes, exif: bytes, after_idat: bool = False) -> bytes:
    at = png.index(b"IEND" if after_idat else b"IDAT") - 4
    return png[:at] + chunk(b"eXIf", exif) + png[at:]


def png16(a: np.ndarray, ctype: int, extra: bytes = b"") -> bytes:
    """A 16-bit PNG of uint16 samples ``a`` ((h, w) or (h, w, c)), written by hand (Pillow writes only I;16)."""
    h, w = a.shape[:2]
    raw = b"".join(b"\0" + row.tobytes() for row in a.astype(">u2").reshape(h, -1))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


class Sides:
    def __init__(self, tool: Path, work: Path):
        self.tool, self.work = tool, work

    def cpp(self, img: Path, size) -> np.ndarray:
        out = self.work / (img.name + ".f32")
        r = subprocess.run([str(self.tool), "--dump", str(img), str(size[0]), str(size[1]), str(out)],
                           capture_output=True, text=True, timeout=TIMEOUT)
        if r.returncode != 0:
            raise Failure(f"C++ load_image({img.name}) failed: {r.stderr.strip()}")
        return np.fromfile(out, dtype=np.float32).reshape(3, *size)

    def py(self, img: Path, size) -> np.ndarray:
        from vitedge.data import load_batch
        return load_batch([img], dict(PRE, size=list(size))).numpy()[0]

    def orientations(self, files: list[Path]) -> list[int]:
        r = subprocess.run([str(self.tool), "--orientation", *map(str, files)], capture_output=True, text=True,
                           timeout=TIMEOUT)
        if r.returncode != 0:
            raise Failure(f"--orientation failed: {r.stderr.strip()}")
        return [int(v) for v in r.stdout.split()]


def pixels(x: np.ndarray) -> np.ndarray:
    """(3, H, W) float preprocessed with PRE -> (H, W, 3) uint8 pixels."""
    return np.rint(x.transpose(1, 2, 0) * 255).astype(np.uint8)


def check_orientation_png(s: Sides, photos: dict) -> None:
    from vitedge.data import preprocess
    n = 0
    for name in ("chelsea", "astronaut"):
        base = png_bytes(photos[name])
        for o in range(1, 9):
            for endian, after in (("<", False), (">", True)):
                f = s.work / f"{name}-o{o}-{'le' if endian == '<' else 'be'}.png"
                f.write_bytes(with_exif_png(base, tiff(o, endian), after_idat=after))
                pil = ImageOps.exif_transpose(Image.open(f)).convert("RGB")
                for size in ((64, 64), (48, 80)):
                    c, p = s.cpp(f, size), s.py(f, size)
                    d = float(np.abs(c - p).max())
                    if d > EXACT:
                        raise Failure(f"{f.name} at {size}: C++ and Python differ by {d:.3g} (> {EXACT})")
                    want = preprocess(pil, dict(PRE, size=list(size)))
                    if not np.array_equal(p, want):
                        raise Failure(f"{f.name} at {size}: Python differs from Pillow's exif_transpose")
                    n += 1
    print(f"orientation PNG: {n} cases, C++ == Python within {EXACT}, == Pillow exif_transpose")


def check_orientation_jpeg(s: Sides, photos: dict) -> None:
    small = photos["astronaut"].resize((64, 48), Image.BILINEAR)  # not square: 5..8 swap width and height
    ref = None
    for o in range(1, 9):
        f = s.work / f"small-o{o}.jpg"
        exif = Image.Exif()
        exif[0x0112] = o
        small.save(f, quality=95, exif=exif)
        size = (48, 64) if o < 5 else (64, 48)  # the displayed size: no resize, so the raw decoded pixels
        got = pixels(s.cpp(f, size))
        if ref is None:
            ref = Image.fromarray(got)
        want = np.asarray(ref.transpose(TRANSPOSE[o]) if o > 1 else ref)
        if not np.array_equal(got, want):
            raise Failure(f"{f.name}: C++ pixels are not the orientation-{o} transpose of orientation 1's")
    worst = 0.0
    chelsea = photos["chelsea"]
    for o in range(1, 9):
        f = s.work / f"chelsea-o{o}.jpg"
        exif = Image.Exif()
        exif[0x0112] = o
        chelsea.save(f, quality=95, exif=exif)
        for size in ((64, 64), (48, 80)):
            d = float(np.abs(s.cpp(f, size) - s.py(f, size)).max()) * 255
            worst = max(worst, d)
            if d > 1.0 + 1e-3:
                raise Failure(f"{f.name} at {size}: C++ and Python differ by {d:.2f} pixel levels (> 1)")
    # The check has teeth: orientation 6 ignored would differ by far more than a level.
    wrong = float(np.abs(s.cpp(s.work / "chelsea-o1.jpg", (48, 80)) - s.py(s.work / "chelsea-o6.jpg", (48, 80))).max())
    if wrong * 255 < 20:
        raise Failure(f"orientation 1 vs 6 differ by only {wrong * 255:.1f} levels: the check cannot tell")
    print(f"orientation JPEG: C++ == transposed C++ exactly (8 tags); chelsea C++ vs Python <= {worst:.2f} levels")


def check_16bit(s: Sides, photos: dict) -> None:
    rgb = np.asarray(photos["chelsea"]).astype(np.uint16)
    rng = np.random.default_rng(17)
    low = rng.integers(0, 256, rgb.shape, dtype=np.uint16)
    rgb16 = rgb * 256 + low                      # real photo in the high byte, noise in the low byte
    grey16 = rgb16[..., 1]
    alpha16 = rng.integers(0, 65536, grey16.shape, dtype=np.uint16)
    dark = (np.asarray(photos["chelsea"].convert("L")).astype(np.uint16) * 16 + low[..., 0] % 16)  # 12-bit: 0..4095
    cases = {
        "grey16.png": (png16(grey16, 0), grey16[..., None].repeat(3, 2)),
        "grey16-trns.png": (png16(grey16, 0, chunk(b"tRNS", struct.pack(">H", int(grey16[0, 0])))),
                            grey16[..., None].repeat(3, 2)),
        "grey16-dark.png": (png16(dark, 0), dark[..., None].repeat(3, 2)),
        "la16.png": (png16(np.stack([grey16, alpha16], -1), 4), grey16[..., None].repeat(3, 2)),
        "rgb16.png": (png16(rgb16, 2), rgb16),
        "rgba16.png": (png16(np.concatenate([rgb16, alpha16[..., None]], -1), 6), rgb16),
        "rgb16-dark.png": (png16(rgb16 >> 4, 2), rgb16 >> 4),
    }
    h, w = grey16.shape
    for name, (data, samples) in cases.items():
        f = s.work / name
        f.write_bytes(data)
        want = (samples >> 8).astype(np.uint8)
        c, p = s.cpp(f, (h, w)), s.py(f, (h, w))  # native size: the decoded pixels themselves
        if not np.array_equal(pixels(p), want):
            raise Failure(f"{name}: Python pixels are not v >> 8 (max diff "
                          f"{int(np.abs(pixels(p).astype(int) - want).max())})")
        if float(np.abs(c - p).max()) > EXACT:
            raise Failure(f"{name}: C++ and Python differ by {float(np.abs(c - p).max()):.3g}")
        c, p = s.cpp(f, (64, 64)), s.py(f, (64, 64))  # and through the resize
        if float(np.abs(c - p).max()) > EXACT:
            raise Failure(f"{name} at 64x64: C++ and Python differ by {float(np.abs(c - p).max()):.3g}")
    print(f"16-bit PNG: {len(cases)} files (incl. dark), C++ == Python == v >> 8")


def check_parsers_agree(s: Sides) -> None:
    from vitedge.data import exif_orientation
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 90)).save(buf, "JPEG", quality=90)
    jpg = buf.getvalue()
    png = png_bytes(Image.new("RGB", (3, 2), (1, 2, 3)))

    def app1(payload: bytes) -> bytes:
        return jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpg[2:]

    t6 = tiff(6, ">")
    blobs = [
        app1(b"Exif\0\0" + t6), app1(b"Exif\0\0" + t6[:20]), app1(b"Exif\0\0" + t6[:8]),
        app1(b"Exif\0\0" + b"MM\0*\xff\xff\xff\xf0"), app1(b"Exif\0\0" + b"II*\0\x08\0\0\0\xff\xff"),
        app1(b"Exif\0\0Exif\0\0" + t6), app1(b"Exif\0\0" + t6.replace(b"\x01\x12\x00\x03", b"\x01\x12\x00\x02")),
        app1(b"Exif\0\0" + t6)[:30], jpg[:2] + b"\xff\xe1\xff\xff" + b"Exif\0\0" + t6,
        jpg[:2] + b"\xff\xe1\x00\x01" + b"Exif\0\0" + t6, with_exif_png(png, t6), with_exif_png(png, t6)[:60],
        with_exif_png(png, b"Exif\0\0" + tiff(3)), with_exif_png(with_exif_png(png, tiff(5)), tiff(7), True),
        b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n",
    ]
    rng = random.Random(17)
    seeds = [app1(b"Exif\0\0" + tiff(o, e)) for o in (3, 6, 8) for e in "<>"] + [with_exif_png(png, tiff(7, "<"))]
    for _ in range(1000):  # random byte mutations and truncations of camera-like EXIF headers
        b = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(min(len(b), 120))
            b[i] = rng.choice((0, 1, 2, 3, 4, 5, 6, 8, 9, 11, 13, 16, 0xFF, 0x12, rng.randrange(256)))
        if rng.random() < 0.3:
            del b[rng.randrange(len(b)):]
        blobs.append(bytes(b))
    files = []
    for i, b in enumerate(blobs):
        f = s.work / f"exif-{i:03d}.bin"
        f.write_bytes(b)
        files.append(f)
    cpp = s.orientations(files)
    py = [exif_orientation(b) for b in blobs]
    bad = [(f.name, c, p) for f, c, p in zip(files, cpp, py) if c != p]
    if bad or len(cpp) != len(py):
        raise Failure(f"exif_orientation differs between C++ and Python on {len(bad)} blocks, e.g. {bad[:3]}")
    print(f"exif_orientation: C++ == Python on {len(blobs)} hostile/mutated blocks "
          f"(orientations seen: {sorted(set(py))})")


def check_refusals(s: Sides, photos: dict) -> None:
    fifo = s.work / "fifo.jpg"
    os.mkfifo(fifo)
    big = s.work / "big.png"
    with open(big, "wb") as fh:
        fh.truncate(3 << 30)  # sparse: no disk used; refused from fstat's size without reading
    folder = s.work / "imgs"
    folder.mkdir()
    photos["chelsea"].save(folder / "cat.png")
    os.mkfifo(folder / "pipe.jpg")
    cases = [(fifo, "a FIFO, not a regular file"), (Path("/dev/zero"), "a character device, not a regular file"),
             (folder, "a directory, not a regular file"), (big, "over the limit of 2147483647 bytes")]
    code = ("import sys\nfrom vitedge.data import load_batch, image_paths\nfrom vitedge.errors import ImageError\n"
            "try:\n    load_batch([sys.argv[1]], {'size': [8, 8], 'scale': 1/255, 'mean': [0,0,0], 'std': [1,1,1]}) "
            "if sys.argv[2] == 'file' else image_paths(sys.argv[1])\nexcept ImageError as e:\n    print(e)\n"
            "    sys.exit(1)\n")
    for path, needle in cases + [(folder, "pipe.jpg is a FIFO, not a regular file")]:
        what = "folder" if needle.startswith("pipe") else "file"
        if what == "file":
            t0 = time.monotonic()
            r = subprocess.run([str(s.tool), "--dump", str(path), "8", "8", str(s.work / "x.f32")],
                               capture_output=True, text=True, timeout=TIMEOUT)
            dt = time.monotonic() - t0
            if r.returncode != 1 or needle not in r.stderr or len(r.stderr.strip().splitlines()) != 1 or dt > 5:
                raise Failure(f"C++ on {path}: rc {r.returncode} in {dt:.1f} s, {r.stderr.strip()!r} "
                              f"(want rc 1, one line with {needle!r})")
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-c", code, str(path), what], capture_output=True, text=True,
                           timeout=TIMEOUT + 40, env=dict(os.environ))
        dt = time.monotonic() - t0
        if r.returncode != 1 or needle not in r.stdout or r.stderr.strip():
            raise Failure(f"Python {what} {path}: rc {r.returncode} in {dt:.1f} s, {r.stdout.strip()!r} "
                          f"{r.stderr.strip()[-300:]!r} (want rc 1 and {needle!r})")
    print("refusals: FIFO, /dev/zero, directory, sparse 3 GiB file (C++ and Python), FIFO in a folder (Python)")


def check_tools(s: Sides, photos: dict, bench: Path, classify: Path) -> None:
    import torch
    from _common import PREPROCESSING, tiny_vit
    from vitedge.export import export
    art = export(tiny_vit(), torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)), "onnx",
                 s.work / "art-onnx", preprocessing=dict(PREPROCESSING)).path
    bad = [(s.work / "fifo.jpg", "a FIFO"), (Path("/dev/zero"), "a character device"),
           (s.work / "imgs", "a directory"), (s.work / "big.png", "over the limit")]
    for path, needle in bad:
        for cmd in ([bench, art, "--image", path, "--iters", 1, "--warmup", 0], [classify, art, path]):
            t0 = time.monotonic()
            r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=TIMEOUT + 40)
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            if r.returncode != 1 or len(lines) != 1 or needle not in lines[0]:
                raise Failure(f"{Path(cmd[0]).name} on {path}: rc {r.returncode} in {time.monotonic() - t0:.1f} s, "
                              f"stderr {r.stderr.strip()[-300:]!r} (want rc 1, one line with {needle!r})")
    exif = Image.Exif()
    exif[0x0112] = 6
    photos["chelsea"].save(s.work / "cat-o6.jpg", quality=95, exif=exif)
    ImageOps.exif_transpose(Image.open(s.work / "cat-o6.jpg")).save(s.work / "cat-upright.png")

    def top(path: Path) -> tuple[int, float]:
        r = subprocess.run([str(classify), str(art), str(path)], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise Failure(f"classify {path.name}: {r.stderr.strip()}")
        first = r.stdout.splitlines()[1].split()
        return int(first[0]), float(first[-1])
    (a, pa), (b, pb) = top(s.work / "cat-o6.jpg"), top(s.work / "cat-upright.png")
    if a != b or abs(pa - pb) > 1e-3:
        raise Failure(f"classify: orientation-6 JPEG gives class {a} ({pa:.4f}), the upright PNG {b} ({pb:.4f})")
    print("tools: vitedge-bench --image and classify refuse FIFO, /dev/zero, a directory, 3 GiB; rotated JPEG == "
          f"upright (class {a}, {pa:.4f} vs {pb:.4f})")


def run_all() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True, type=Path)
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--bench", type=Path)
    ap.add_argument("--classify", type=Path)
    a = ap.parse_args()
    shutil.rmtree(a.workdir, ignore_errors=True)
    a.workdir.mkdir(parents=True)
    import skimage.data
    photos = {"chelsea": Image.fromarray(skimage.data.chelsea()).convert("RGB"),
              "astronaut": Image.fromarray(skimage.data.astronaut()).convert("RGB")}
    s = Sides(a.tool, a.workdir)
    try:
        checks(s, photos, a)
    except subprocess.TimeoutExpired as e:  # a blocking open or read: a failure, not a stuck test
        raise Failure(f"timed out after {e.timeout} s (blocked?): {' '.join(map(str, e.cmd))[:300]}") from None
    shutil.rmtree(a.workdir, ignore_errors=True)


def checks(s: Sides, photos: dict, a) -> None:
    check_orientation_png(s, photos)
    check_orientation_jpeg(s, photos)
    check_16bit(s, photos)
    check_parsers_agree(s)
    check_refusals(s, photos)
    if a.bench and a.classify:
        check_tools(s, photos, a.bench, a.classify)


if __name__ == "__main__":
    main(run_all)
