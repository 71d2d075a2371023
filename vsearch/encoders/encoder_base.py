"""The encoder protocol shared by the pipeline (embedding items) and the service (queries)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from vsearch.manifest import EncoderInfo

if TYPE_CHECKING:
    import torch
    from PIL import Image


class EncoderUnavailable(RuntimeError):
    """The model cannot be loaded (no weights offline, missing package); says how to fix it.

    ``reason`` is the cause without the advice, for callers that give advice of their own.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class TextNotSupported(ValueError):
    """Asked an image-only encoder to embed text."""


@runtime_checkable
class Encoder(Protocol):
    """Turns decoded RGB images (and texts, when ``has_text``) into float32 vectors.

    ``info`` goes into the manifest; the service refuses a snapshot whose
    ``info`` differs from its own encoder's (name, model_id, revision, dim).
    """

    info: EncoderInfo
    has_text: bool

    @property
    def dim(self) -> int: ...

    @property
    def encoder_id(self) -> str:
        """name@revision#weights-digest: what makes two encoders produce the same vectors."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, dim) float32, L2-normalised when ``info.normalized``."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32; raises TextNotSupported for image-only encoders."""
        ...


@runtime_checkable
class PixelEncoder(Encoder, Protocol):
    """An Encoder whose preprocessing can run apart from the model (the partition worker's path).

    ``preprocess`` is pure CPU work on one decoded image (resize, crop) and runs in
    decode workers; ``encode_pixels`` normalises a uint8 batch on the model's
    device and runs the model. ``encode_images(imgs)`` equals
    ``encode_pixels(stack([preprocess(i) for i in imgs]))``.
    """

    device: str
    min_side: int  # decoders may shrink an image until its shorter side is this (JPEG draft)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """(H, W, 3) uint8, the model's input size, from one RGB image."""
        ...

    def encode_pixels(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        """(n, dim) float32 from an (n, H, W, 3) uint8 batch (numpy or a torch tensor)."""
        ...
