"""CLIP through the production loading path matches transformers' own features, on a tiny model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vsearch.encoders import EncoderUnavailable, load_encoder, parse_encoder_spec

log = logging.getLogger(__name__)


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    sizes = [(48, 48), (60, 90), (97, 41), (200, 150), (20, 33)]  # square, tall, wide, big, tiny
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


TEXTS = ["a photo of a cat", "Two DOGS playing", "", "long " * 100]


def test_image_and_text_embeddings_match_transformers(tiny_clip_dir: Path) -> None:
    import torch
    from transformers import CLIPModel, CLIPProcessor

    encoder = load_encoder(f"clip:{tiny_clip_dir}", device="cpu")
    images = _images()
    ours_images = encoder.encode_images(images)
    ours_texts = encoder.encode_texts(TEXTS)

    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    with torch.inference_mode():
        pixels = processor(images=images, return_tensors="pt")
        ref_images = model.get_image_features(**pixels).pooler_output
        tokens = processor(
            text=TEXTS, padding=True, truncation=True, max_length=77, return_tensors="pt"
        )
        ref_texts = model.get_text_features(**tokens).pooler_output
    ref_images = torch.nn.functional.normalize(ref_images, dim=-1).numpy()
    ref_texts = torch.nn.functional.normalize(ref_texts, dim=-1).numpy()

    assert ours_images.dtype == np.float32 and ours_images.shape == (len(images), 24)
    assert ours_texts.shape == (len(TEXTS), 24)
    np.testing.assert_allclose(ours_images, ref_images, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours_texts, ref_texts, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ours_images, axis=1), 1.0, atol=1e-5)
    # Batching must not change a vector: one at a time equals all at once.
    np.testing.assert_allclose(encoder.encode_images(images[1:2])[0], ours_images[1], atol=1e-6)


def test_info_and_id_describe_the_weights(tiny_clip_dir: Path) -> None:
    encoder = load_encoder(f"clip:{tiny_clip_dir}", device="cpu")
    assert encoder.has_text
    assert encoder.dim == encoder.info.dim == 24
    assert encoder.info.name == "clip" and encoder.info.normalized
    assert encoder.info.revision.startswith("sha256:")
    assert encoder.encoder_id.startswith(f"clip:{tiny_clip_dir.name}@")


def test_offline_without_weights_says_how_to_point_at_a_local_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(EncoderUnavailable, match=r"local copy.*clip:/path/to/dir"):
        load_encoder("clip:openai/clip-vit-base-patch32", device="cpu")
    with pytest.raises(EncoderUnavailable, match="does not exist"):
        load_encoder(f"clip:{tmp_path}/no-such-dir", device="cpu")


def test_spec_parsing() -> None:
    kind, name, options = parse_encoder_spec("efficientnet-lite0")
    assert (kind, name, options) == ("efficientnet-lite0", "efficientnet-lite0", {})
    assert parse_encoder_spec("clip:openai/clip-vit-base-patch32?dtype=bf16&batch_size=64") == (
        "clip",
        "openai/clip-vit-base-patch32",
        {"dtype": "bf16", "batch_size": 64},
    )
    for bad in ["", "clip:", "resnet50", "efficientnet-lite0?image_size"]:
        with pytest.raises(ValueError):
            parse_encoder_spec(bad)
    with pytest.raises(ValueError, match="unknown option"):
        load_encoder("efficientnet-lite0?colour=blue")


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_path_agrees_with_fp32(tiny_clip_dir: Path, dtype: str) -> None:
    """The GPU's default numeric path (half-precision weights, uint8 pixels scaled on
    the device, float32 unit vectors out), run on the CPU since no GPU is here."""
    full = load_encoder(f"clip:{tiny_clip_dir}", device="cpu")
    half = load_encoder(f"clip:{tiny_clip_dir}?dtype={dtype}", device="cpu")
    assert next(half.model.parameters()).dtype != next(full.model.parameters()).dtype
    images, texts = _images(), TEXTS[:3]
    for ours, ref in [
        (half.encode_images(images), full.encode_images(images)),
        (half.encode_texts(texts), full.encode_texts(texts)),
    ]:
        assert ours.dtype == np.float32 and ours.shape == ref.shape
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        cosine = np.sum(ours * ref, axis=1)
        log.warning("%s vs fp32: min cosine %.6f", dtype, cosine.min())
        assert cosine.min() > 0.999, cosine
