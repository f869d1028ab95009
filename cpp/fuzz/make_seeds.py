"""Write the fuzzers' seed corpora into cpp/fuzz/seeds/ (committed; re-run to refresh).

.venv/bin/python cpp/fuzz/make_seeds.py

seeds/manifest/: the manifest.json of a tiny TorchScript artifact exported with vitedge.export.export (the
real writer), plus variants (labels/preprocessing null, dynamic H/W, two outputs).
seeds/image/: the bundled scikit-image photos (vitedge.data.bundled_photo_paths) downscaled by PIL to small
sizes and written in the formats stb_image reads (JPEG baseline + progressive, PNG RGB/gray/palette/RGBA,
BMP, GIF, TGA, PPM/PGM), each prefixed by the two bytes fuzz_image.cpp reads as the target (H, W).
Small files keep the fuzzers fast (libFuzzer's -max_len defaults to the largest seed).
"""
from __future__ import annotations

import io
import json
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def manifests(out: Path) -> None:
    from _common import export_tiny
    with tempfile.TemporaryDirectory() as tmp:
        art = export_tiny(Path(tmp) / "tiny")
        real = json.loads((art / "manifest.json").read_text())
    (out / "exported.json").write_text(json.dumps(real, indent=2))
    v = json.loads(json.dumps(real))
    v["labels"], v["preprocessing"] = None, None
    (out / "nulls.json").write_text(json.dumps(v))
    v = json.loads(json.dumps(real))
    v["inputs"][0]["shape"] = [-1, 3, -1, -1]
    v["outputs"].append({"name": "attention", "shape": [-1, 4, 17, 17], "dtype": "float32"})
    v["labels"] = [f"class {i}" for i in range(10)]
    (out / "dynamic.json").write_text(json.dumps(v, separators=(",", ":")))


def images(out: Path) -> None:
    from PIL import Image

    from vitedge.data import bundled_photo_paths
    for i, path in enumerate(bundled_photo_paths()):
        img = Image.open(path).convert("RGB")
        w, h = (24 + 8 * i, 16 + 4 * i)
        small = img.resize((w, h), Image.BILINEAR)
        variants = {"jpg": (small, "JPEG", {"quality": 80}),
                    "prog.jpg": (small, "JPEG", {"quality": 60, "progressive": True}),
                    "png": (small, "PNG", {}),
                    "gray.png": (small.convert("L"), "PNG", {}),
                    "pal.png": (small.convert("P"), "PNG", {}),
                    "rgba.png": (small.convert("RGBA"), "PNG", {}),
                    "bmp": (small, "BMP", {}),
                    "gif": (small, "GIF", {}),
                    "tga": (small, "TGA", {}),
                    "ppm": (small, "PPM", {}),
                    "pgm": (small.convert("L"), "PPM", {})}
        exif = Image.Exif()
        exif[0x0112] = 2 + i % 7  # EXIF orientation 2..8 (issue 17: applied in C++ too)
        variants["exif.jpg"] = (small, "JPEG", {"quality": 80, "exif": exif})
        variants["exif.png"] = (small, "PNG", {"exif": exif})
        target = bytes([(31 + 17 * i) % 128, (47 + 29 * i) % 128])  # (H, W) = 1 + byte % 128
        for ext, (im, fmt, kw) in variants.items():
            buf = io.BytesIO()
            im.save(buf, fmt, **kw)
            (out / f"{Path(path).stem}.{ext}").write_bytes(target + buf.getvalue())
        # 16-bit RGB PNG (written by hand: Pillow writes only 16-bit grey): samples v * 257 + noise
        a = (np.asarray(small).astype(np.uint16) * 257 + i).astype(">u2")
        raw = b"".join(b"\0" + row.tobytes() for row in a.reshape(h, -1))
        chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
        png16 = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                 + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
        (out / f"{Path(path).stem}.16.png").write_bytes(target + png16)


def main() -> None:
    for name, fn in (("manifest", manifests), ("image", images)):
        out = HERE / "seeds" / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        fn(out)
        files = sorted(out.iterdir())
        print(f"{out}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes, largest "
              f"{max(f.stat().st_size for f in files)}")


if __name__ == "__main__":
    main()
