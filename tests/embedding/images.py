"""Test images made on the spot: good ones, and each kind of bad one."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def jpeg(width: int = 64, height: int = 48, seed: int = 0, **save: object) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90, **save)
    return buf.getvalue()


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg(256, 256, seed=1)
    return data[: len(data) // 2]


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming width x height 1-bit pixels, with a tiny body.

    10^10 pixels: decoding it would need gigabytes; the header alone must be refused.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    idat = zlib.compress(row * 16, 9)  # only the first rows: enough to look real
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def rotated_jpeg() -> bytes:
    """A 60x20 JPEG whose EXIF says 'rotate 90°': it must come out 20x60."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg(60, 20, seed=2, exif=exif.tobytes())


def size_of(data: bytes) -> tuple[int, int]:
    """(width, height) of encoded image bytes."""
    with Image.open(io.BytesIO(data)) as im:
        return im.size
