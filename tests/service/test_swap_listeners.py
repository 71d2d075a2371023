"""Swap and release listeners: their order, what they see, and how the app wires them.

The app registers, in order, the replica's ``prepare_delta`` and the metrics as
swap listeners, and the replica's ``compact_delta`` as a release listener; a
listener added afterwards therefore sees the delta and the metrics already
updated, and the old snapshot still served.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.snapshots.registry import LoadedSnapshot, SnapshotRegistry
from service.state import ServiceState
from tests.fixtures.snapshots import build_snapshot, publish, sample_vectors, snapshot_id
from tests.service.conftest import AUTH, AppFactory, vector_query
from vsearch.catalog import read_current, rollback
from vsearch.serving.metadata_store import open_metadata_store
from vsearch.storage import ObjectStore

N, D = 200, 64


@pytest.fixture
def xb(local_store: ObjectStore) -> np.ndarray:
    xb = sample_vectors(N, D, seed=5)
    publish(
        local_store, build_snapshot(local_store, snapshot_id(1), xb, np.arange(N, dtype="int64"))
    )
    return xb


def swaps_counted(state: ServiceState) -> float | None:
    return state.metrics.registry.get_sample_value("vsearch_snapshot_swaps_total")


def served_in_metrics(state: ServiceState, sid: str) -> float | None:
    return state.metrics.registry.get_sample_value("vsearch_snapshot_info", {"snapshot_id": sid})


def upsert(client: Any, item: int, x: np.ndarray) -> str:
    r = client.put("/v1/items", json={"items": [{"id": item, "vector": x.tolist()}]}, headers=AUTH)
    assert r.status_code == 200, r.json
    last_id: str = r.json["last_id"]
    return last_id


def test_swap_listeners_run_in_registration_order_before_the_new_snapshot_is_served(
    xb: np.ndarray, local_store: ObjectStore, make_app: AppFactory
) -> None:
    app = make_app(local_store)
    client, state = app.test_client(), app.extensions["vsearch"]
    calls: list[tuple[Any, ...]] = []

    def listener(name: str) -> Any:
        def on_swap(old: LoadedSnapshot | None, new: LoadedSnapshot) -> None:
            served = vector_query(client, xb[0], k=1).json["snapshot_id"]
            calls.append((name, old and old.snapshot_id, new.snapshot_id, served))
            # The metrics listener, registered by the app before this one, has run already.
            assert swaps_counted(state) == 2
            assert served_in_metrics(state, new.snapshot_id) == 1

        return on_swap

    state.registry.add_swap_listener(listener("first"))
    state.registry.add_swap_listener(listener("second"))
    publish(
        local_store,
        build_snapshot(
            local_store, snapshot_id(2), xb, np.arange(N, dtype="int64"), previous=snapshot_id(1)
        ),
    )
    assert state.replica.tick() == "swapped"

    # Both ran, in order, while requests were still answered from snapshot 1.
    old, new = snapshot_id(1), snapshot_id(2)
    assert calls == [("first", old, new, old), ("second", old, new, old)]
    assert vector_query(client, xb[0], k=1).json["snapshot_id"] == new
    assert swaps_counted(state) == 2
    assert served_in_metrics(state, old) is None  # the gauge names only the served snapshot


def test_constructor_listeners_run_before_added_ones(
    xb: np.ndarray, local_store: ObjectStore, tmp_path: Path
) -> None:
    order: list[str] = []
    metadata = open_metadata_store(f"sqlite:///{tmp_path}/metadata.sqlite3")
    registry = SnapshotRegistry(
        local_store,
        str(tmp_path / "cache"),
        metadata,
        encoder_info=None,
        memory_budget_bytes=0,
        swap_listeners=[
            lambda old, new: order.append("given 1"),
            lambda o, n: order.append("given 2"),
        ],
        release_listeners=[lambda snap: order.append("released")],
    )
    registry.add_swap_listener(lambda old, new: order.append("added"))
    try:
        assert registry.refresh() == "swapped"
        assert order == ["given 1", "given 2", "added"]
    finally:
        registry.close()
        metadata.close()
    assert order[-1] == "released"


def test_release_listeners_run_once_the_old_snapshot_is_released(
    xb: np.ndarray, local_store: ObjectStore, make_app: AppFactory
) -> None:
    app = make_app(local_store)
    client, state = app.test_client(), app.extensions["vsearch"]
    new_x = sample_vectors(2, D, seed=99)
    upsert(client, 10_000, new_x[0])
    folded = upsert(client, 10_001, new_x[1])
    assert len(state.replica.delta) == 2
    released: list[tuple[str, bool, int]] = []
    state.registry.add_release_listener(
        lambda snap: released.append((snap.snapshot_id, snap.closed, len(state.replica.delta)))
    )
    ids = np.concatenate([np.arange(N), [10_000, 10_001]]).astype("int64")
    publish(
        local_store,
        build_snapshot(
            local_store,
            snapshot_id(2),
            np.vstack([xb, new_x]),
            ids,
            watermark=folded,
            previous=snapshot_id(1),
        ),
    )

    with state.registry.lease() as old:
        assert state.replica.tick() == "swapped"
        # Leased: snapshot 1 stays open and the writes it lacks stay in the delta.
        assert released == [] and not old.closed
        assert len(state.replica.delta) == 2
    # The replica's listener (registered first) dropped the entries folded into snapshot 2.
    assert released == [(snapshot_id(1), True, 0)]
    hits = vector_query(client, new_x[0], k=1).json["hits"]
    assert [(h["id"], h["source"]) for h in hits] == [(10_000, "base")]


def test_the_delta_is_replayed_before_a_rollback_is_served(
    xb: np.ndarray, local_store: ObjectStore, make_app: AppFactory
) -> None:
    app = make_app(local_store)
    client, state = app.test_client(), app.extensions["vsearch"]
    new_x = sample_vectors(1, D, seed=98)
    folded = upsert(client, 10_000, new_x[0])
    ids = np.concatenate([np.arange(N), [10_000]]).astype("int64")
    publish(
        local_store,
        build_snapshot(
            local_store,
            snapshot_id(2),
            np.vstack([xb, new_x]),
            ids,
            watermark=folded,
            previous=snapshot_id(1),
        ),
    )
    assert state.replica.tick() == "swapped"
    assert len(state.replica.delta) == 0  # folded into snapshot 2, which is all that is served
    # A rollback replays the log up to what the tailer has read; later entries come from it.
    deadline = time.monotonic() + 5
    while state.replica._cursor != folded and time.monotonic() < deadline:
        time.sleep(0.01)

    seen: list[Any] = []
    state.registry.add_swap_listener(
        lambda old, new: seen.append(state.replica.delta.lookup(10_000, new.watermark))
    )
    rollback(local_store, to=snapshot_id(1))
    assert state.replica.tick() == "swapped"
    # The replica's listener ran first: the write is back in the delta before 1 is served.
    assert len(seen) == 1 and isinstance(seen[0], np.ndarray)
    hits = vector_query(client, new_x[0], k=1).json["hits"]
    assert [(h["id"], h["source"]) for h in hits] == [(10_000, "delta")]


def test_a_failing_swap_listener_stops_the_swap(
    xb: np.ndarray, local_store: ObjectStore, make_app: AppFactory
) -> None:
    app = make_app(local_store)
    client, state = app.test_client(), app.extensions["vsearch"]
    manifest = build_snapshot(
        local_store, snapshot_id(2), xb, np.arange(N, dtype="int64"), previous=snapshot_id(1)
    )
    publish(local_store, manifest)
    current = read_current(local_store)
    assert current is not None and current.snapshot_id == snapshot_id(2)

    def refuse(old: LoadedSnapshot | None, new: LoadedSnapshot) -> None:
        raise RuntimeError("not now")

    state.registry.add_swap_listener(refuse)
    loaded = state.registry.load(current)
    try:
        with pytest.raises(RuntimeError, match="not now"):
            state.registry.swap(loaded)
    finally:
        loaded.searcher.close()
    assert state.registry.current.snapshot_id == snapshot_id(1)
    assert vector_query(client, xb[0], k=1).json["snapshot_id"] == snapshot_id(1)
