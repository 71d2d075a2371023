"""What the encoders share: CPU preprocessing to uint8 pixels, and device handling.

Preprocessing is split at the uint8 boundary: resizing and cropping (CPU, in
decode workers) produce an (H, W, 3) uint8 array; scaling to [0, 1] and the
per-channel normalisation happen on the model's device, on the whole batch, so
the host-to-device copy moves a quarter of the bytes that float32 would.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def pick_device(device: str | None) -> str:
    """``device`` as given, else ``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            from vsearch.encoders.encoder_base import EncoderUnavailable

            raise EncoderUnavailable(f"device {device!r} asked for, but torch sees no CUDA GPU")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str | None, device: str) -> torch.dtype:
    """float32 on CPU; on GPU fp16 unless ``dtype`` says ``bf16``/``fp32``.

    Half precision on a CPU is allowed when asked for by name (torch runs it, most
    CPUs slower than fp32): it runs the GPU's numeric path where no GPU is, which
    is how the tests check it.
    """
    import torch

    names = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype:
        if dtype not in names:
            raise ValueError(f"dtype {dtype!r}: use one of {', '.join(names)}")
        if device == "cpu" and dtype != "fp32":
            log.warning("dtype %s on CPU: usually slower than fp32 there; meant for GPUs", dtype)
        return names[dtype]
    return torch.float32 if device == "cpu" else torch.float16


def resize_center_crop(
    image: Image.Image,
    shortest_edge: int,
    crop: tuple[int, int],
    resample: Image.Resampling = Image.Resampling.BICUBIC,
) -> np.ndarray:
    """Resize the shorter side to ``shortest_edge`` (aspect kept), then crop the centre.

    The arithmetic follows transformers' image processors (``shortest_edge`` then
    ``center_crop``), so CLIP inputs equal what its processor makes. Returns an
    (h, w, 3) uint8 array with (h, w) = ``crop``.
    """
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = shortest_edge, int(shortest_edge * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), resample=resample)
    pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    crop_h, crop_w = crop
    if crop_h > new_h or crop_w > new_w:
        raise ValueError(f"crop {crop} larger than the resized image {(new_h, new_w)}")
    top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
    return np.ascontiguousarray(pixels[top : top + crop_h, left : left + crop_w])


def stack_pixels(arrays: Sequence[np.ndarray]) -> np.ndarray:
    if not arrays:
        raise ValueError("no images to encode")
    return np.stack(arrays)


class PixelNormaliser:
    """uint8 NHWC batch -> normalised NCHW float tensor on ``device`` in ``dtype``."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        device: str,
        dtype: Any,
        *,
        channels_last: bool = False,
    ) -> None:
        import torch

        self.device = device
        self.dtype = dtype
        # NHWC input permuted to NCHW is already channels-last in memory: convnets
        # that run channels-last (much faster on CPU for depthwise convolutions) take
        # it without a copy.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # (x/255 - mean)/std == x * scale + shift, folded into one multiply-add
        std_t = torch.tensor(std, dtype=torch.float32)
        mean_t = torch.tensor(mean, dtype=torch.float32)
        self.scale = (1.0 / (255.0 * std_t)).view(1, 3, 1, 1).to(device)
        self.shift = (-mean_t / std_t).view(1, 3, 1, 1).to(device)

    def __call__(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        import torch

        batch = torch.from_numpy(pixels) if isinstance(pixels, np.ndarray) else pixels
        if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected an (n, H, W, 3) uint8 batch, got {tuple(batch.shape)}")
        batch = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        normalised = (batch * self.scale + self.shift).to(self.dtype)
        return normalised.contiguous(memory_format=self.memory_format)


def l2_normalised(features: torch.Tensor) -> np.ndarray:
    """Rows scaled to unit length, in float32 on the host."""
    import torch

    out = torch.nn.functional.normalize(features.float(), dim=-1)
    return out.cpu().numpy().astype(np.float32, copy=False)
