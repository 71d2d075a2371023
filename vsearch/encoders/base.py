"""The encoder protocol shared by the pipeline (embedding items) and the service (queries)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from vsearch.manifest import EncoderInfo

if TYPE_CHECKING:
    from PIL import Image


class EncoderUnavailable(RuntimeError):
    """The model cannot be loaded (no weights offline, missing package); says how to fix it."""


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
