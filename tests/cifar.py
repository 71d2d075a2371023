"""Real image embeddings, made once per test session: EfficientNet-Lite0 on CIFAR-10.

10,000 train images (every 5th of ``cifar10-train-00[0-4].tar``: 1,000 per class)
and 1,000 test images (every 10th of ``cifar10-test-000.tar``: 100 per class) go
through the production path: tar shards from ../shared/data -> decode workers ->
the model at 96 px -> partitions in a store -> read back. That costs about a
minute on 2 cores, so every test that needs real vectors takes them from here:

    from tests.cifar import cifar_fixture  # noqa: F401  (the ``cifar`` fixture)

    def test_something(cifar: CifarVectors) -> None: ...

A module that imports the fixture registers its own copy of it; the vectors are
cached here, so the images are embedded once per session whatever the number of
modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.embedding.conftest import shared_file
from vsearch.sources import Item

IMAGE_SIZE = 96  # CIFAR images are 32x32; 96 keeps the suite inside its time budget
SID = "20260101T000000Z"


@dataclass(frozen=True)
class CifarVectors:
    """Unit vectors (float32, 1280-d) and class labels of the train and test images."""

    xb: np.ndarray  # 10,000 train images
    lb: np.ndarray
    xq: np.ndarray  # 1,000 test images
    lq: np.ndarray


def _every(items: Iterator[Item], step: int) -> Iterator[Item]:
    # The shards are sorted by class: every step-th sample keeps all classes balanced.
    for n, item in enumerate(items):
        if n % step == 0:
            yield item


def embed_cifar(folder: Path) -> CifarVectors:
    """Embed the images into a store under ``folder`` and read the partitions back."""
    from vsearch.embedding.partitions import read_partition
    from vsearch.embedding.worker import embed_partition
    from vsearch.encoders import load_encoder
    from vsearch.sources import open_source
    from vsearch.storage import LocalStore

    store = LocalStore(folder / "store")
    encoder = load_encoder("efficientnet-lite0", image_size=IMAGE_SIZE, device="cpu")
    data = shared_file("cifar10-test-000.tar").parent
    runs = [(SID, str(data / "cifar10-train-00[0-4].tar"), 5),
            (f"{SID}-queries", str(data / "cifar10-test-000.tar"), 10)]  # fmt: skip
    arrays = []
    for snapshot, uri, step in runs:
        source = open_source(uri)
        for spec in source.partitions():
            items = _every(source.items(spec), step)
            record = embed_partition(store, snapshot, spec["index"], items, encoder, batch_size=32)
            assert record.failures == 0
        parts = [read_partition(store, snapshot, s["index"]) for s in source.partitions()]
        xb = np.concatenate([p[0] for p in parts]).astype("float32")
        labels = np.array([m["label"] for p in parts for m in p[2]])
        arrays.append((xb, labels))
    (xb, lb), (xq, lq) = arrays
    return CifarVectors(xb, lb, xq, lq)


_embedded: dict[str, CifarVectors] = {}


@pytest.fixture(scope="session", name="cifar")
def cifar_fixture(tmp_path_factory: pytest.TempPathFactory) -> CifarVectors:
    """The embedded CIFAR-10 sample, shared by every test of the session."""
    if "cifar" not in _embedded:
        _embedded["cifar"] = embed_cifar(tmp_path_factory.mktemp("cifar"))
    return _embedded["cifar"]
