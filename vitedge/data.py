"""Real inputs: the photos bundled with scikit-image, image folders, and the preprocessing every runtime shares.

Preprocessing (recorded in each manifest, reproduced by the C++ runner): decode to 8-bit RGB (EXIF
orientation applied), resize keeping the aspect ratio so the image covers (H, W) (bilinear), center-crop
to (H, W), then float32 ``(pixel * scale - mean) / std`` in NCHW layout.
"""
from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

__all__ = ["BUNDLED_PHOTOS", "IMAGE_EXTENSIONS", "IMAGE_FORMATS", "bundled_photo_paths", "image_paths", "load_batch",
           "load_rgb", "make_preprocessing", "preprocess"]

# Colour photographs shipped inside the scikit-image wheel (skimage/data), no download needed.
BUNDLED_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg",
                  "motorcycle_left.png", "retina.jpg", "ihc.png")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_PIXELS = 89_478_485  # Pillow's default decompression-bomb limit (~0.25 GB of 24-bit RGB)
# Decoders Pillow may use: the formats of IMAGE_EXTENSIONS (JPEG includes multi-picture MPO files). Others
# (EPS, which runs Ghostscript; PSD, FITS, ...) are refused whatever the file is named.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF")


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
        ImageError: the folder does not exist or holds no image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"image folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise ImageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return paths


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image file to an 8-bit RGB PIL image with its EXIF orientation applied.

    Modes: greyscale is replicated to 3 channels; 16-bit greyscale is scaled to 8 bits; 16-bit RGB is reduced to
    its top 8 bits by Pillow; RGBA/LA drop the alpha channel (as stb_image does in the C++ runner, so both
    sides see the same pixels); CMYK and palette images are converted by Pillow. Only the decoders of
    :data:`IMAGE_FORMATS` run, and truncated files are errors (it refuses to run while Pillow's global
    ``LOAD_TRUNCATED_IMAGES`` is on).

    Raises:
        ImageError: unreadable, not an image, a format outside IMAGE_FORMATS, truncated, or larger than
            MAX_PIXELS (decompression bomb: refused from the header, before any pixel is decoded).
    """
    from PIL import ImageFile
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if ImageFile.LOAD_TRUNCATED_IMAGES:  # another library switched it on globally; not for us
                raise ImageError(f"cannot decode image {path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set, so a "
                                 "truncated file would decode silently; unset it")
            with Image.open(path, formats=IMAGE_FORMATS) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageError(f"{path}: {im.width}x{im.height} pixels exceeds the {MAX_PIXELS} pixel limit")
                im.load()
                im = ImageOps.exif_transpose(im)
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 8 bits
                    a = np.asarray(im, dtype=np.float64)
                    im = Image.fromarray(np.clip(a / (65535.0 if a.max() > 255 else 255.0) * 255 + 0.5, 0, 255)
                                         .astype(np.uint8))
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
