"""Safe decoding: good images come out RGB and upright, bad ones are rejected with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.embedding import images
from vsearch.imaging import ImageRejected, decode_image, encode_jpeg


def test_jpeg_decodes_to_rgb() -> None:
    image = decode_image(images.jpeg(64, 48))
    assert image.mode == "RGB" and image.size == (64, 48)


def test_exif_orientation_is_applied() -> None:
    assert decode_image(images.rotated_jpeg()).size == (20, 60)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "I;16", "CMYK", "1"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    base = Image.new("RGBA", (16, 16), (255, 0, 0, 0))  # fully transparent red
    if mode == "I;16":
        source = Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16))
    elif mode == "CMYK":
        source = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    else:
        source = base.convert(mode)
    data = images.png(source) if mode != "CMYK" else _jpeg(source)
    image = decode_image(data)
    assert image.mode == "RGB" and image.size == (16, 16)
    if mode in ("RGBA", "LA"):  # transparency goes onto white, not black
        assert image.getpixel((0, 0)) == (255, 255, 255)
    if mode == "I;16":  # 16-bit values scale down, not clip to white
        assert image.getpixel((0, 0)) == (156, 156, 156)


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"<html>not an image</html>", "unidentified"),
        (images.truncated_jpeg(), "truncated"),
        (images.png_bomb(), "too-many-pixels"),
        (images.jpeg()[:2] + b"\x00" * 400, "unidentified"),
    ],
    ids=["empty", "html", "truncated", "bomb", "garbage"],
)
def test_bad_data_is_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageRejected) as caught:
        decode_image(data)
    assert caught.value.reason == reason
    assert isinstance(caught.value, ValueError)


def test_formats_outside_the_allow_list_are_refused() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PPM")
    with pytest.raises(ImageRejected) as caught:
        decode_image(buf.getvalue())
    assert caught.value.reason == "format-not-allowed" and "PPM" in str(caught.value)


def test_pixel_limit_is_a_parameter() -> None:
    data = images.jpeg(100, 100)
    assert decode_image(data, max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageRejected, match="too-many-pixels"):
        decode_image(data, max_pixels=9_999)


def test_max_side_shrinks_keeping_the_aspect_ratio() -> None:
    image = decode_image(images.jpeg(400, 200), max_side=100)
    assert image.size == (100, 50)
    assert decode_image(images.jpeg(80, 40), max_side=100).size == (80, 40)  # never enlarges


def test_min_side_decodes_big_jpegs_smaller_but_never_below_it() -> None:
    data = images.jpeg(800, 600)
    image = decode_image(data, min_side=224)
    assert min(image.size) >= 224 and image.size[0] < 800  # DCT-domain downscale happened
    assert image.size[0] * 600 == image.size[1] * 800
    assert decode_image(data, min_side=1000).size == (800, 600)


def test_encode_jpeg_round_trips() -> None:
    image = decode_image(encode_jpeg(Image.new("RGB", (30, 20), (10, 200, 30))))
    assert image.size == (30, 20)
    assert np.abs(np.asarray(image).astype(int) - (10, 200, 30)).max() < 8
