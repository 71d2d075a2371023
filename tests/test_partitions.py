"""Embedding partitions: the commit record makes a partition exist, and only then."""

from __future__ import annotations

import numpy as np
import pytest

from vsearch.embedding.partitions import (
    is_committed,
    list_partitions,
    partition_keys,
    read_partition,
    write_partition,
)
from vsearch.storage import ObjectNotFound, ObjectStore


def test_round_trip_and_commit_record(store: ObjectStore) -> None:
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((50, 8)).astype("float32")
    ids = np.arange(100, 150, dtype="int64")
    meta = [{"id": int(i), "key": f"k{i}"} for i in ids]
    record = write_partition(
        store,
        "20260101T000000Z",
        3,
        xb,
        ids,
        meta,
        [{"key": "bad", "reason": "truncated JPEG"}],
        input_fingerprint="fp1",
        encoder_id="enc",
    )
    assert (record.count, record.dim, record.failures) == (50, 8, 1)
    got_xb, got_ids, got_meta = read_partition(store, "20260101T000000Z", 3)
    np.testing.assert_array_equal(got_xb, xb)
    np.testing.assert_array_equal(got_ids, ids)
    assert got_meta == meta
    assert list_partitions(store, "20260101T000000Z") == [3]
    assert is_committed(store, "20260101T000000Z", 3, "fp1")
    assert not is_committed(store, "20260101T000000Z", 3, "fp2")


def test_objects_without_a_record_are_not_a_partition(store: ObjectStore) -> None:
    keys = partition_keys("20260101T000000Z", 0)
    store.put(keys.vectors, b"half-written run")
    assert list_partitions(store, "20260101T000000Z") == []
    with pytest.raises(ObjectNotFound):
        read_partition(store, "20260101T000000Z", 0)


def test_shape_and_dtype_are_checked(store: ObjectStore) -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        write_partition(
            store,
            "20260101T000000Z",
            0,
            np.zeros((2, 4), "float32"),
            np.zeros(3, "int64"),
            [{}, {}],
            [],
            input_fingerprint="",
            encoder_id="",
        )
    with pytest.raises(ValueError, match="int64"):
        write_partition(
            store,
            "20260101T000000Z",
            0,
            np.zeros((1, 4), "float32"),
            np.zeros(1, "int32"),
            [{}],
            [],
            input_fingerprint="",
            encoder_id="",
        )
