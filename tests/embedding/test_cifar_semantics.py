"""Semantics with real weights: EfficientNet-Lite0 image-to-image search on CIFAR-10.

1,000 test images (100 per class) query 10,000 train images (1,000 per class)
by exact inner-product search over vectors that went through the whole stage:
tar shards from ../shared/data -> decode workers -> model -> partitions in a
store -> read back. class-precision@10 is the share of the 10 nearest train
images that have the query's class (chance: 0.10). The measured value is in
bench/results/embed_cifar_precision.md; the floor is 5 points below it.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tests.cifar import IMAGE_SIZE, CifarVectors, cifar_fixture  # noqa: F401  (fixture)

log = logging.getLogger(__name__)

MEASURED = 0.5652  # bench/results/embed_cifar_precision.md
FLOOR = MEASURED - 0.05


def class_precision_at_10(xq: np.ndarray, lq: np.ndarray, xb: np.ndarray, lb: np.ndarray) -> float:
    import faiss

    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    _, neighbours = index.search(xq, 10)
    return float((lb[neighbours] == lq[:, None]).mean())


@pytest.mark.slow
def test_cifar10_class_precision_at_10(cifar: CifarVectors) -> None:
    xb, lb, xq, lq = cifar.xb, cifar.lb, cifar.xq, cifar.lq
    assert len(xb) == 10_000 and len(xq) == 1_000
    assert sorted(np.unique(lb, return_counts=True)[1]) == [1000] * 10
    precision = class_precision_at_10(xq, lq, xb, lb)
    log.warning(
        "CIFAR-10 class-precision@10 = %.4f (EfficientNet-Lite0 @ %dpx)", precision, IMAGE_SIZE
    )
    assert precision >= FLOOR
