"""CLIP through transformers (``CLIPModel`` + its processor): the production encoder.

The weights come from a local directory (``save_pretrained`` output, or
``hf download ID --local-dir DIR``) or a Hugging Face hub id, resolved first
from the local cache and only then from the hub. Offline with neither, loading
raises ``EncoderUnavailable`` saying how to point at a local copy.

The manifest records ``model_id`` (the hub id, or the directory's name) and
``revision`` (the hub commit, or ``sha256:…`` of the weight files of a local
directory; a directory downloaded at a known commit can say so with the
``revision`` option, a 40-hex commit hash), so a snapshot built from a hub id can be loaded again
from its ``EncoderInfo`` (``spec_from_info``).

Images: resized and centre-cropped exactly as the processor does (on the CPU,
in the decode workers), then scaled and normalised on the device; fp16 on GPU by
default (``dtype=bf16`` or ``fp32`` to change), fp32 on CPU. Texts go through
the processor's tokenizer. Both outputs are L2-normalised float32.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from vsearch.encoders.encoder_base import EncoderUnavailable
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
_COMMIT = re.compile(r"[0-9a-f]{40}")  # hub snapshot folders are named by commit hash


def resolve_model_dir(name: str, revision: str | None = None) -> tuple[Path, str]:
    """(local directory holding the model, revision) for a directory or a hub id."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve(), ""
    if name.startswith((".", "/", "~")):
        raise EncoderUnavailable(f"CLIP model directory {name!r} does not exist")
    from huggingface_hub import snapshot_download

    error: Exception | None = None
    for local_only in (True, False):
        try:
            folder = snapshot_download(
                name, revision=revision, allow_patterns=_FILES, local_files_only=local_only
            )
        except Exception as e:  # offline, unknown id, no cache: all say the same to the user
            error = e
            continue
        folder_path = Path(folder)
        return folder_path, folder_path.name  # snapshot folders are named by commit hash
    at = f" at revision {revision}" if revision else ""
    reason = (
        f"cannot load CLIP weights {name!r}{at}: not in the local Hugging Face cache and the "
        f"hub is not reachable ({f'{type(error).__name__}: {error}'[:200]})"
    )
    # A directory records the commit it is told (else its weights' digest): say it.
    pinned = revision is not None and _COMMIT.fullmatch(revision) is not None
    options = f"?model_id={quote(name, safe='/')}&revision={revision}" if pinned else ""
    download = f" --revision {revision}" if revision else ""
    raise EncoderUnavailable(
        f"{reason}. Point at a local copy instead: 'clip:/path/to/dir{options}' with a "
        f"directory made by save_pretrained or by `hf download {name}{download} --local-dir "
        "DIR` on a machine with network, or set HF_HOME to a cache that holds it.",
        reason=reason,
    ) from error  # a network error (stages.transient) is worth a retry; "no such repo" is not


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


def spec_from_info(info: EncoderInfo) -> str:
    """The spec that loads ``info``'s weights again: its hub id at its commit.

    A snapshot built from a local directory records only the directory's name and
    the weights' digest, which do not say where the directory is.
    """
    if _COMMIT.fullmatch(info.revision):
        return f"clip:{info.model_id}?revision={info.revision}"
    raise EncoderUnavailable(
        f"it was loaded from a local directory (revision {info.revision}: the sha256 of its "
        "weight files), and the manifest does not say where that directory is"
    )


def load_hint(info: EncoderInfo) -> str:
    model = quote(info.model_id, safe="/")
    if _COMMIT.fullmatch(info.revision):
        return (
            f"set VSEARCH_QUERY_ENCODER='clip:/path/to/local/dir?model_id={model}"
            f"&revision={info.revision}' with a directory made where there is network by "
            f"`hf download {info.model_id} --revision {info.revision} --local-dir DIR`, or "
            "put that revision in the Hugging Face cache the service reads (HF_HOME, or "
            f"HF_HUB_CACHE: `hf download {info.model_id} --revision {info.revision}`)"
        )
    digest = info.revision.removeprefix("sha256:")
    return (
        f"set VSEARCH_QUERY_ENCODER='clip:/path/to/local/dir?model_id={model}' with the "
        f"directory the snapshot was built from (its weight files' sha256 starts with {digest})"
    )


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
        # A directory's revision is its weights' digest unless the caller names the hub
        # commit it was downloaded at (to serve a snapshot built from that hub revision).
        if not hub_revision and revision is not None and _COMMIT.fullmatch(revision):
            hub_revision = revision
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
