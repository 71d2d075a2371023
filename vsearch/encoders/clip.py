"""CLIP through transformers (``CLIPModel`` + its processor): the production encoder.

The weights come from a local directory (``save_pretrained`` output, or
``hf download ID --local-dir DIR``) or a Hugging Face hub id, resolved first
from the local cache and only then from the hub. Offline with neither, loading
raises ``EncoderUnavailable`` saying how to point at a local copy.

Images: resized and centre-cropped exactly as the processor does (on the CPU,
in the decode workers), then scaled and normalised on the device; fp16 on GPU by
default (``dtype=bf16`` or ``fp32`` to change), fp32 on CPU. Texts go through
the processor's tokenizer. Both outputs are L2-normalised float32.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vsearch.encoders.base import EncoderUnavailable
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

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_FILES = ["*.json", "*.txt", "*.safetensors", "*.model"]


def resolve_model_dir(name: str, revision: str | None = None) -> tuple[Path, str]:
    """(local directory holding the model, revision) for a directory or a hub id."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve(), ""
    if name.startswith((".", "/", "~")):
        raise EncoderUnavailable(f"CLIP model directory {name!r} does not exist")
    from huggingface_hub import snapshot_download

    errors = []
    for local_only in (True, False):
        try:
            folder = snapshot_download(
                name, revision=revision, allow_patterns=_FILES, local_files_only=local_only
            )
        except Exception as e:  # offline, unknown id, no cache: all say the same to the user
            errors.append(f"{type(e).__name__}: {e}")
            continue
        folder_path = Path(folder)
        return folder_path, folder_path.name  # snapshot folders are named by commit hash
    raise EncoderUnavailable(
        f"cannot load CLIP weights {name!r}: not in the local Hugging Face cache and the hub "
        f"is not reachable ({errors[-1][:200]}). Point at a local copy instead: "
        f"'clip:/path/to/dir' with a directory made by save_pretrained or by "
        f"`hf download {name} --local-dir DIR` on a machine with network, or set HF_HOME to "
        "a cache that holds it."
    )


def weights_digest(folder: Path) -> str:
    """sha256 over the names and bytes of the weight files: same digest, same vectors."""
    sha = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        raise EncoderUnavailable(f"{folder}: no weight files (*.safetensors or *.bin)")
    for p in files:
        sha.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
    return sha.hexdigest()


class ClipEncoder:
    """Images and texts into one space; see the module docstring."""

    has_text = True

    def __init__(
        self,
        name: str,
        *,
        device: str | None = None,
        dtype: str | None = None,
        revision: str | None = None,
        batch_size: int = 256,
        model_id: str | None = None,
    ) -> None:
        import torch
        from transformers import CLIPModel, CLIPProcessor

        folder, hub_revision = resolve_model_dir(name, revision)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.batch_size = batch_size
        try:
            processor: Any = CLIPProcessor.from_pretrained(folder)
            model: Any = CLIPModel.from_pretrained(folder, dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise EncoderUnavailable(f"cannot load CLIP from {folder}: {e}") from e
        self.model = model.eval().to(self.device, self.dtype)
        self.tokenizer = processor.tokenizer
        self._configure_pixels(processor.image_processor)
        self._max_text_len = int(model.config.text_config.max_position_embeddings)
        self._digest = weights_digest(folder)
        is_dir = Path(name).expanduser().is_dir()
        self.info = EncoderInfo(
            name="clip",
            model_id=model_id or (folder.name if is_dir else name),
            revision=hub_revision or f"sha256:{self._digest[:16]}",
            dim=int(model.config.projection_dim),
            normalized=True,
        )

    def _configure_pixels(self, image_processor: Any) -> None:
        size, crop = dict(image_processor.size or {}), dict(image_processor.crop_size or {})
        if "shortest_edge" not in size or not image_processor.do_center_crop:
            raise EncoderUnavailable(
                f"unsupported CLIP image processor settings size={size}, "
                f"do_center_crop={image_processor.do_center_crop}: expected shortest_edge + crop"
            )
        from PIL import Image

        self._shortest_edge = int(size["shortest_edge"])
        self._crop = (int(crop["height"]), int(crop["width"]))
        self._resample = Image.Resampling(int(image_processor.resample))
        self.min_side = self._shortest_edge
        self._normalise = PixelNormaliser(
            image_processor.image_mean, image_processor.image_std, self.device, self.dtype
        )

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def encoder_id(self) -> str:
        return f"clip:{self.info.model_id}@{self.info.revision}#{self._digest[:16]}"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return resize_center_crop(image, self._shortest_edge, self._crop, self._resample)

    def encode_pixels(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model.get_image_features(pixel_values=self._normalise(pixels))
            return l2_normalised(out.pooler_output)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        parts = [
            self.encode_pixels(
                stack_pixels([self.preprocess(im) for im in images[i : i + self.batch_size]])
            )
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings, not one string")
        parts = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(
                    list(texts[i : i + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self._max_text_len,
                    return_tensors="pt",
                ).to(self.device)
                out = self.model.get_text_features(**tokens)
                parts.append(l2_normalised(out.pooler_output))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
