"""Sample images for the quickstart are deterministic; item ids are stable and documented."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vsearch.ids import IdAllocator, IdCollision, item_id
from vsearch.sources.samples import CLASSES, write_sample_images


def test_samples_are_deterministic_and_cover_every_class(tmp_path: Path) -> None:
    first = write_sample_images(tmp_path / "a", 24)
    second = write_sample_images(tmp_path / "b", 24)
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in first]
    assert digests == [hashlib.sha256(p.read_bytes()).hexdigest() for p in second]
    assert len(set(digests)) == 24  # no two images alike
    assert {p.parent.name for p in first} == set(CLASSES)
    assert (first[0].with_suffix(".txt")).read_text().strip() == "a red disc"
    with pytest.raises(ValueError):
        write_sample_images(tmp_path, -1)


def test_item_ids_are_stable_non_negative_int64() -> None:
    # Pinned values: changing the scheme changes every id in every snapshot.
    assert item_id("a") == 1540924368551928085
    assert item_id("cifar10-train-000/000000") == 1318503442870478913
    ids = {item_id(f"key-{i}") for i in range(100_000)}
    assert len(ids) == 100_000
    assert all(0 <= i < 2**63 for i in ids)
    with pytest.raises(ValueError):
        item_id("")


def test_allocator_refuses_duplicates() -> None:
    allocator = IdAllocator()
    assert allocator.allocate("x") == item_id("x")
    with pytest.raises(IdCollision) as caught:
        allocator.allocate("x")
    assert caught.value.reason == "duplicate-key" and len(allocator) == 1
