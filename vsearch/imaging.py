"""Safe image decoding for the pipeline and the query service.

``decode_image`` turns untrusted bytes into an RGB ``PIL.Image`` or raises
``ImageRejected`` with a short machine-readable ``reason``:

==================== ==============================================================
``empty``            no bytes at all
``unidentified``     no decoder recognises the data (not an image, or garbage)
``format-not-allowed`` an image, but not one of ``ALLOWED_FORMATS``
``too-many-pixels``  width * height above ``max_pixels`` (decompression bombs)
``truncated``        the data ends before the image does
``corrupt``          the decoder failed on the data
==================== ==============================================================

The pixel limit is checked from the header, before any pixel is decoded, so a
50-kB PNG claiming 100,000 x 100,000 pixels costs nothing. EXIF orientation is
applied; transparency is flattened onto white; 16-bit and palette images become
8-bit RGB.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG includes MPO (phones)
DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: more than any photo the web serves, far below a bomb


class ImageRejected(ValueError):
    """The bytes are not an image we accept; ``reason`` is one short machine-readable word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    min_side: int | None = None,
) -> Image.Image:
    """Decode ``data`` into an RGB image, EXIF-oriented; raises ImageRejected.

    ``max_side``: shrink (keeping the aspect ratio) so that the longer side is at
    most this. ``min_side``: a hint that the caller needs the shorter side to be
    at least this many pixels, no more; JPEGs are then decoded at a reduced
    scale in the DCT domain (Pillow's ``draft``), several times faster for big
    photos. The image is never smaller than ``min_side`` because of it.
    """
    if not data:
        raise ImageRejected("empty", "no bytes")
    image = _open(data)
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt", f"image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected("too-many-pixels", f"{width}x{height} > {max_pixels} pixels")
    if image.format in ("JPEG", "MPO") and (min_side or max_side):
        _draft(image, min_side=min_side, max_side=max_side)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected("too-many-pixels", str(e)) from None
    except OSError as e:
        truncated = "truncated" in str(e) or "broken data stream" in str(e)
        reason = "truncated" if truncated else "corrupt"
        raise ImageRejected(reason, str(e)) from None
    except (SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as e:
        raise ImageRejected("corrupt", f"{type(e).__name__}: {e}") from None
    rgb = to_rgb(_oriented(image))
    if max_side and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return rgb


def _open(data: bytes) -> ImageFile.ImageFile:
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        try:  # only to say why: a known but refused format reads better than "unidentified"
            other = Image.open(io.BytesIO(data))
        except Exception:
            raise ImageRejected("unidentified", "not a recognised image") from None
        raise ImageRejected("format-not-allowed", str(other.format)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected("too-many-pixels", str(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        raise ImageRejected("corrupt", f"{type(e).__name__}: {e}") from None
    assert isinstance(image, ImageFile.ImageFile)
    return image


def _draft(image: ImageFile.ImageFile, *, min_side: int | None, max_side: int | None) -> None:
    # draft() picks the largest DCT scale (1/2, 1/4, 1/8) that keeps the image at
    # least the requested size; we ask for what min_side (shorter side) or
    # max_side (longer side) needs, whichever is larger.
    width, height = image.size
    scales = [1.0]
    if min_side:
        scales.append(min_side / min(width, height))
    if max_side:
        scales.append(max_side / max(width, height))
    scale = min(1.0, max(scales[1:]))
    if scale < 1.0:
        image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))


def _oriented(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block is not a broken image: keep it unrotated
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; transparency flattened onto white, 16-bit and float scaled down."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        # 16/32-bit grey: keep the top 8 bits of 16-bit data, clip the rest.
        values = np.asarray(image)
        scaled = values >> 8 if image.mode.startswith("I;16") else values
        image = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def encode_jpeg(image: Image.Image, *, quality: int = 90) -> bytes:
    """The image as a baseline JPEG (what fetched-and-resized images are stored as)."""
    buf = io.BytesIO()
    to_rgb(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
