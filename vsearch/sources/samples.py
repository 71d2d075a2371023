"""Sample images for the offline quickstart: deterministic, synthetic, in a few classes.

No photo is bundled with any package the project installs, and the
quickstart may neither download nor read ``../shared/data`` — so the demo draws
its own pictures: eight classes that differ in shape, colour and texture
(``red-disc``, ``blue-square``, ``green-triangle``, ``yellow-star``,
``h-stripes``, ``v-stripes``, ``checkerboard``, ``rings``), each image with its own
position, size, rotation, hue jitter, background and noise drawn from a
generator seeded by its index. The same ``n`` gives the same files, byte for
byte, with the same Pillow. Each image comes with a caption (``{stem}.txt``)
and a label (``{stem}.json``), the layout the directory source reads.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vsearch.canonical_json import json_line

CLASSES = (
    "red-disc",
    "blue-square",
    "green-triangle",
    "yellow-star",
    "h-stripes",
    "v-stripes",
    "checkerboard",
    "rings",
)
SIZE = 128
_CAPTIONS = {
    "red-disc": "a red disc",
    "blue-square": "a blue square",
    "green-triangle": "a green triangle",
    "yellow-star": "a yellow star",
    "h-stripes": "horizontal stripes",
    "v-stripes": "vertical stripes",
    "checkerboard": "a checkerboard",
    "rings": "concentric rings",
}
_SHAPE_COLOURS = {
    "red-disc": (210, 40, 40),
    "blue-square": (40, 70, 210),
    "green-triangle": (40, 170, 60),
    "yellow-star": (235, 205, 30),
}


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _polygon(
    cx: float, cy: float, r: float, n: int, angle: float, inner: float = 1.0
) -> list[tuple[float, float]]:
    points = []
    for k in range(n * (2 if inner != 1.0 else 1)):
        radius = r if k % 2 == 0 or inner == 1.0 else r * inner
        theta = angle + math.pi * 2 * k / (n * (2 if inner != 1.0 else 1))
        points.append((cx + radius * math.cos(theta), cy + radius * math.sin(theta)))
    return points


def draw_sample(index: int) -> tuple[str, Image.Image]:
    """(class name, image) of sample ``index``; the class cycles through CLASSES."""
    label = CLASSES[index % len(CLASSES)]
    rng = np.random.default_rng(index)
    grey = int(rng.integers(150, 250))
    image = Image.new("RGB", (SIZE, SIZE), _jitter(rng, (grey, grey, grey), 12))
    draw = ImageDraw.Draw(image)
    cx, cy = rng.uniform(40, SIZE - 40, size=2)
    r = rng.uniform(18, 34)
    angle = rng.uniform(0, 2 * math.pi)
    if label in _SHAPE_COLOURS:
        fill = _jitter(rng, _SHAPE_COLOURS[label], 25)
        if label == "red-disc":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif label == "blue-square":
            draw.polygon(_polygon(cx, cy, r * 1.2, 4, angle), fill=fill)
        elif label == "green-triangle":
            draw.polygon(_polygon(cx, cy, r * 1.3, 3, angle), fill=fill)
        else:
            draw.polygon(_polygon(cx, cy, r * 1.4, 5, angle, inner=0.45), fill=fill)
    else:
        dark = _jitter(rng, (40, 40, 40), 30)
        period = int(rng.integers(10, 22))
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        offset = int(rng.integers(0, period))
        if label == "h-stripes":
            mask = ((yy + offset) // (period // 2)) % 2 == 0
        elif label == "v-stripes":
            mask = ((xx + offset) // (period // 2)) % 2 == 0
        elif label == "checkerboard":
            mask = (((xx + offset) // period) + ((yy + offset) // period)) % 2 == 0
        else:
            mask = (np.hypot(xx - cx, yy - cy).astype(int) // (period // 2)) % 2 == 0
        pixels = np.asarray(image).copy()
        pixels[mask] = dark
        image = Image.fromarray(pixels)
    noise = rng.normal(0, 6, size=(SIZE, SIZE, 3))
    pixels = np.clip(np.asarray(image).astype(np.float64) + noise, 0, 255).astype(np.uint8)
    return label, Image.fromarray(pixels)


def write_sample_images(directory: str | Path, n: int) -> list[Path]:
    """Write ``n`` sample JPEGs (with captions and labels) under ``directory``; returns their paths.

    Layout: ``{directory}/{class}/{index:05d}.jpg`` + ``.txt`` + ``.json``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    root = Path(directory)
    paths = []
    for index in range(n):
        label, image = draw_sample(index)
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{index:05d}.jpg"
        image.save(path, format="JPEG", quality=90)
        (folder / f"{index:05d}.txt").write_text(_CAPTIONS[label] + "\n")
        (folder / f"{index:05d}.json").write_text(json_line({"label": label, "sample": index}))
        paths.append(path)
    return paths
