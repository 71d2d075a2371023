"""Atomic publish: verification, immutability, compare-and-swap, ordering, rollback.

Runs against the local store and S3 over HTTP (moto server).
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta

import pytest

from tests.fixtures.snapshots import build_synthetic_snapshot
from vsearch.catalog import (
    CURRENT_KEY,
    PublishConflict,
    SnapshotNotFound,
    VerificationError,
    list_snapshots,
    publish_snapshot,
    read_current,
    read_pointer,
    rollback,
)
from vsearch.manifest import Manifest
from vsearch.storage import ObjectInfo, ObjectStore

DAY = datetime(2026, 5, 1, tzinfo=UTC)


def snap(store: ObjectStore, days: int = 0, seed: int = 0, previous: str | None = None) -> Manifest:
    return build_synthetic_snapshot(
        store, DAY + timedelta(days=days), n=200, seed=seed, previous=previous
    )


def current_id(store: ObjectStore) -> str | None:
    found = read_pointer(store)
    return found[0].snapshot_id if found else None


def test_publish_then_read_current(store: ObjectStore) -> None:
    assert read_current(store) is None
    m = snap(store)
    result = publish_snapshot(store, m)
    assert result.moved and result.current == m.snapshot_id
    assert read_current(store) == m
    assert list_snapshots(store) == [m.snapshot_id]


def test_publish_is_idempotent(store: ObjectStore) -> None:
    m = snap(store)
    publish_snapshot(store, m)
    again = publish_snapshot(store, m)
    assert not again.moved and "already current" in again.message
    assert read_current(store) == m


def test_manifests_are_immutable(store: ObjectStore) -> None:
    m = snap(store)
    publish_snapshot(store, m)
    other = dataclasses.replace(m, delta_watermark="5-0")
    with pytest.raises(PublishConflict, match="delta_watermark"):
        publish_snapshot(store, other)
    assert read_current(store) == m


def test_missing_object_is_refused_and_current_stays(store: ObjectStore) -> None:
    m1 = snap(store)
    publish_snapshot(store, m1)
    m2 = snap(store, days=1, seed=1)
    store.delete(m2.shards[1].uri)
    with pytest.raises(VerificationError, match=r"shards\[1\].*missing"):
        publish_snapshot(store, m2)
    assert current_id(store) == m1.snapshot_id
    assert list_snapshots(store) == [m1.snapshot_id]  # no manifest written for the refused one


def test_corrupted_object_is_refused_and_current_stays(store: ObjectStore) -> None:
    m1 = snap(store)
    publish_snapshot(store, m1)
    m2 = snap(store, days=1, seed=1)
    shard = m2.shards[0]
    data = bytearray(store.get(shard.uri))
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    store.put(shard.uri, bytes(data))
    with pytest.raises(VerificationError, match=r"shards\[0\].*sha256"):
        publish_snapshot(store, m2)
    store.put(shard.uri, bytes(data[:-1]))
    with pytest.raises(VerificationError, match="bytes, manifest says"):
        publish_snapshot(store, m2)
    assert current_id(store) == m1.snapshot_id


def test_current_never_moves_back_unless_forced(store: ObjectStore) -> None:
    old, new = snap(store, days=0), snap(store, days=3, seed=1)
    publish_snapshot(store, new)
    result = publish_snapshot(store, old)  # e.g. a backfill of an earlier date
    assert not result.moved and "stays at newer" in result.message
    assert current_id(store) == new.snapshot_id
    assert list_snapshots(store) == [old.snapshot_id, new.snapshot_id]
    assert publish_snapshot(store, old, force=True).moved
    assert current_id(store) == old.snapshot_id


class PausingStore:
    """Delegates to a real store; holds each compare-and-swap of CURRENT until released,
    so two publishers both read the same CURRENT before either swaps it."""

    def __init__(self, inner: ObjectStore, barrier: threading.Barrier, turn: list[threading.Event]):
        self._inner, self._barrier, self._turn = inner, barrier, turn

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def compare_and_swap(self, key: str, data: bytes, etag: str | None) -> ObjectInfo:
        assert key == CURRENT_KEY
        index = self._barrier.wait()  # both publishers hold the same etag now
        self._turn[index].wait()
        try:
            return self._inner.compare_and_swap(key, data, etag)
        finally:
            if index + 1 < len(self._turn):
                self._turn[index + 1].set()


def test_two_concurrent_publishers_one_wins_one_conflicts(store: ObjectStore) -> None:
    base = snap(store)
    publish_snapshot(store, base)
    a, b = snap(store, days=1, seed=1), snap(store, days=2, seed=2)
    barrier = threading.Barrier(2)
    turn = [threading.Event(), threading.Event()]
    turn[0].set()
    paused = PausingStore(store, barrier, turn)
    outcomes: dict[str, object] = {}

    def publisher(m: Manifest) -> None:
        try:
            outcomes[m.snapshot_id] = publish_snapshot(paused, m)  # type: ignore[arg-type]
        except PublishConflict as e:
            outcomes[m.snapshot_id] = e

    threads = [threading.Thread(target=publisher, args=(m,)) for m in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    conflicts = [sid for sid, o in outcomes.items() if isinstance(o, PublishConflict)]
    winners = [sid for sid, o in outcomes.items() if not isinstance(o, PublishConflict)]
    assert len(conflicts) == 1 and len(winners) == 1
    assert current_id(store) == winners[0]
    assert f"CURRENT moved to {winners[0]}" in str(outcomes[conflicts[0]])
    assert read_current(store) == (a if winners[0] == a.snapshot_id else b)


def test_rollback_to_previous_and_to_named(store: ObjectStore) -> None:
    m1 = snap(store)
    m2 = snap(store, days=1, seed=1, previous=m1.snapshot_id)
    m3 = snap(store, days=2, seed=2, previous=m2.snapshot_id)
    for m in (m1, m2, m3):
        publish_snapshot(store, m)
    assert rollback(store).current == m2.snapshot_id
    assert rollback(store).current == m1.snapshot_id
    with pytest.raises(SnapshotNotFound, match="no previous"):
        rollback(store)
    assert rollback(store, to=m3.snapshot_id).current == m3.snapshot_id
    assert read_current(store) == m3


def test_rollback_refuses_a_corrupted_target(store: ObjectStore) -> None:
    m1 = snap(store)
    m2 = snap(store, days=1, seed=1, previous=m1.snapshot_id)
    publish_snapshot(store, m1)
    publish_snapshot(store, m2)
    store.delete(m1.metadata.files[0].uri)
    with pytest.raises(VerificationError, match="missing"):
        rollback(store)
    assert current_id(store) == m2.snapshot_id


def test_rollback_with_nothing_published(store: ObjectStore) -> None:
    with pytest.raises(SnapshotNotFound):
        rollback(store)
