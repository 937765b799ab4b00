"""A source image -> the stored square: upright (EXIF orientation applied), shorter side resized
to the stored size, centre-cropped, 8-bit RGB. The source is a file of a tree (`load_source`) or
the bytes of an archive member (`load_bytes`); whatever cannot become such an image raises
BadImage with the reason, for report.txt.

A JPEG is decoded at a reduced scale (1/2, 1/4 or 1/8, Pillow's draft mode) whenever that
scale still covers the stored size, so that the work per image is bounded by the output, not
by the source. A file that is a JPEG compressed once more with gzip (ILSVRC-2010's archives
hold such members under a .JPEG name) is unpacked first.
"""
from __future__ import annotations

import gzip
import io
import os
import warnings
import zlib
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .build import BadImage

# Pixels prepare decodes of one image at most (a JPEG counts at the reduced scale it is decoded
# at, never below --size: a 13000x13000 JPEG decodes at 1/8, 1625x1625). Measured here, one
# 7000x7000 PNG peaks at 410 MB (RGB) or 640 MB (16-bit grey) per worker; larger images (a
# 13000x13000 PNG of 0.5 MB took 1.3 GB) are skipped and listed in report.txt.
MAX_PIXELS = 50_000_000
# Bytes a gzip-compressed image may unpack to; more is refused rather than held in memory.
MAX_GZIP = 64 << 20


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. 16-bit greyscale (some PNGs) is scaled down (rounded)
    rather than clipped; CMYK (Adobe's inverted kind included) and palette images go through
    Pillow. Integer arithmetic in place (4 bytes a pixel for 16-bit images, not float64 copies)."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I"):
        arr = np.asarray(im).astype(np.int64 if im.mode == "I" else np.int32)
        if arr.max() > 255:
            arr += 128
            arr //= 257  # round(x / 257) for whole x
        np.clip(arr, 0, 255, out=arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def load_source(path: str, size: int) -> np.ndarray:
    """The file at `path` as a stored square: (size, size, 3) uint8."""
    try:
        if os.path.getsize(path) == 0:
            raise BadImage("empty file")
    except OSError as e:
        raise BadImage(f"unreadable: {e.strerror or e}") from None
    return decode(path, size)


def load_bytes(data: bytes, size: int) -> np.ndarray:
    """A file's bytes (an archive member's) as a stored square: (size, size, 3) uint8."""
    if not data:
        raise BadImage("empty file")
    return decode(io.BytesIO(data), size)


def _gunzipped(src: str | BinaryIO) -> bytes | None:
    """The content of a gzip file, or None when `src` is not one."""
    f = open(src, "rb") if isinstance(src, str) else src
    try:
        f.seek(0)
        if f.read(2) != b"\x1f\x8b":
            return None
        f.seek(0)
        try:
            data = gzip.GzipFile(fileobj=f).read(MAX_GZIP + 1)
        except (OSError, EOFError, zlib.error) as e:
            raise BadImage(f"cannot decode: a gzip file that does not unpack ({e or type(e).__name__})") from None
    finally:
        if isinstance(src, str):
            f.close()
    if len(data) > MAX_GZIP:
        raise BadImage(f"too large: a gzip file that unpacks to over {MAX_GZIP:,} bytes")
    return data


def decode(src: str | BinaryIO, size: int, unpacked: bool = False) -> np.ndarray:
    """A file (path or binary file object) as a stored square: (size, size, 3) uint8."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on odd EXIF and palettes; the image is fine
            with Image.open(src) as im:
                full = im.size
                # A large JPEG decodes straight at 1/2, 1/4 or 1/8 scale, never below `size`.
                im.draft("RGB", (size, size))
                if im.size[0] * im.size[1] > MAX_PIXELS:
                    raise BadImage(f"too large: {full[0]}x{full[1]} pixels, over prepare's limit of "
                                   f"{MAX_PIXELS:,} decoded pixels")
                im.load()
                ImageOps.exif_transpose(im, in_place=True)  # in place: no copy of an upright image
                im = to_rgb(im)
        w, h = im.size
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC, box=box))
    except UnidentifiedImageError:
        inner = None if unpacked else _gunzipped(src)
        if inner is None:
            raise BadImage("not an image (no known image format)") from None
    except Image.DecompressionBombError as e:
        raise BadImage(f"too large: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        raise BadImage(("truncated: " if "truncat" in msg else "cannot decode: ") + msg) from None
    return decode(io.BytesIO(inner), size, unpacked=True)
