"""The delta log is trimmed below the oldest watermark a replica still needs, after real
compactions (the ``compact`` stage, then ``complete_snapshot``) and swaps; what a replica
still needs for itself or for a rollback one step back stays. SQLite and Redis logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask

from service.app import close_app, create_app
from tests.fixtures.snapshots import build_snapshot, publish, sample_vectors, snapshot_id
from tests.index.snapshots import SID, planned
from tests.service.redis_proc import KillableRedis
from vsearch import stages
from vsearch.catalog import manifest_key, read_current, rollback
from vsearch.config import Settings
from vsearch.delta import DeltaLog, DeltaWrite, open_delta_log
from vsearch.delta.watermarks import LOG_ORIGIN
from vsearch.storage import LocalStore

KEY = {"X-API-Key": "trim-key"}
FIRST, SECOND = "20260301T060000Z-c", "20260301T120000Z-c"


@pytest.fixture(params=["sqlite", "redis"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    extra: dict[str, Any] = {}
    server = None
    if request.param == "redis":
        server = KillableRedis(tmp_path / "redis", appendonly=False)
        server.start()
        extra["delta_log"] = server.url
    yield Settings.load(
        environ={}, data_dir=str(tmp_path / "data"), api_key=KEY["X-API-Key"], **extra
    )
    if server is not None:
        server.stop()


@pytest.fixture
def log(settings: Settings) -> Iterator[DeltaLog]:
    opened = open_delta_log(settings.delta_log)
    yield opened
    opened.close()


@pytest.fixture
def replicas() -> Iterator[dict[str, Flask]]:
    """Replicas by name (``start`` adds one), closed at the end."""
    apps: dict[str, Flask] = {}
    yield apps
    for app in apps.values():
        close_app(app)


def start(apps: dict[str, Flask], name: str, settings: Settings, store: LocalStore) -> Any:
    """Replica ``name`` (its own shard cache, no watcher: the test ticks it); its Replica."""
    apps[name] = create_app({
        "SETTINGS": settings, "STORE_OBJECT": store, "LOAD_ON_START": "sync",
        "WATCH_INTERVAL_S": 0, "REPLICA_ID": name,
        "CACHE_DIR": f"{settings.data_dir}/cache-{name}",
    })  # fmt: skip
    return apps[name].extensions["vsearch"].replica


def write(app: Flask, path: str, body: dict[str, Any]) -> list[str]:
    r = app.test_client().open(path, method="PUT" if "delete" not in path else "POST",
                               json=body, headers=KEY)  # fmt: skip
    assert r.status_code == 200, r.json
    return list(r.json["entry_ids"])


def fresh(item: int, d: int) -> np.ndarray:
    """The vector item ``item`` is upserted with: random, so its nearest neighbour is itself."""
    x = np.random.default_rng(item).standard_normal(d).astype("float32")
    return x / np.linalg.norm(x)


def upserts(items: list[int], d: int) -> dict[str, Any]:
    return {"items": [{"id": i, "vector": fresh(i, d).tolist(), "metadata": {"n": i}}
                      for i in items]}  # fmt: skip


def compact_and_publish(store: LocalStore, sid: str, settings: Settings) -> str:
    stages.compact(store, sid, settings=settings)
    stages.complete_snapshot(store, sid, validate_options={"target_recall": 0.9},
                             settings=settings)  # fmt: skip
    live = read_current(store)
    assert live is not None and live.snapshot_id == sid
    return live.delta_watermark


def hits(app: Flask, x: np.ndarray) -> list[tuple[int, str]]:
    r = app.test_client().post("/v1/search", json={"vector": x.tolist(), "k": 10, "exact": True})
    assert r.status_code == 200, r.json
    return [(h["id"], h["source"]) for h in r.json["hits"]]


def test_two_compactions_trim_the_log_to_the_oldest_watermark_still_needed(
    settings: Settings, log: DeltaLog, replicas: dict[str, Flask], tmp_path: Path
) -> None:
    """Regression: ``retain_from`` was never set, so every replica recorded "0-0" as its
    served watermark and nothing was ever trimmed (55 of 55 entries after two compactions)."""
    store = LocalStore(settings.store)
    xb, ids = planned(store, tmp_path / "vectors", n=2000, nfiles=2)
    stages.build_index(store, SID, train_options={"nq": 100, "factory": "IDMap,IVF16,Flat"},
                       validate_options={"target_recall": 0.9}, settings=settings)  # fmt: skip
    a = start(replicas, "a", settings, store)
    gone = int(ids[0])
    d = xb.shape[1]
    batch1 = write(replicas["a"], "/v1/items", upserts([91, 92, 93], d))
    batch1 += write(replicas["a"], "/v1/items/delete", {"ids": [gone]})
    w1 = compact_and_publish(store, FIRST, settings)
    assert w1 == batch1[-1]
    assert a.tick() == "swapped"
    b = start(replicas, "b", settings, store)  # serves FIRST from the start
    # FIRST's rollback target is the build (watermark 0-0): the whole log is still needed.
    assert log.oldest_served() == LOG_ORIGIN
    assert [e.id for e in log.read()] == batch1

    batch2 = write(replicas["b"], "/v1/items", upserts([94, 95], d))
    batch2 += write(replicas["b"], "/v1/items/delete", {"ids": [91]})
    w2 = compact_and_publish(store, SECOND, settings)
    assert w2 == batch2[-1]
    assert a.tick() == "swapped"
    # a serves SECOND (needs w1 for a rollback to FIRST), b still FIRST (needs everything).
    assert log.oldest_served() == LOG_ORIGIN
    assert [e.id for e in log.read()] == batch1 + batch2

    assert b.tick() == "swapped"
    # Both serve SECOND: entries below w1 go. The entry at w1 stays (MINID keeps it): a
    # replica replaying "after w1" finds the log starting at its watermark, not past it.
    assert log.oldest_served() == w1
    assert [e.id for e in log.read()] == [w1, *batch2]
    assert log.first_id() == w1

    # A rollback to FIRST replays what SECOND folded in: still in the log.
    rollback(store, to=FIRST)
    assert a.tick() == "swapped"
    assert hits(replicas["a"], fresh(94, d))[0] == (94, "delta")
    assert 91 not in [i for i, _ in hits(replicas["a"], fresh(91, d))]  # deleted after FIRST
    assert hits(replicas["a"], fresh(92, d))[0] == (92, "base")  # folded into FIRST
    assert gone not in [i for i, _ in hits(replicas["a"], xb[0])]
    assert log.oldest_served() == LOG_ORIGIN  # a serves FIRST again: nothing more goes
    assert [e.id for e in log.read()] == [w1, *batch2]


class UnreachableManifest(LocalStore):
    """A local store whose ``unreachable`` key cannot be read, as while the store is down."""

    unreachable: str | None = None

    def get(self, key: str) -> bytes:
        if key == self.unreachable:
            raise OSError(f"{key}: store unreachable")
        return super().get(key)


def test_while_the_rollback_target_cannot_be_read_the_whole_log_is_kept(tmp_path: Path) -> None:
    store = UnreachableManifest(tmp_path / "store")
    settings = Settings.load(environ={}, data_dir=str(tmp_path / "data"))
    xb, ids = sample_vectors(100, 64, seed=1), np.arange(100, dtype="int64")
    publish(store, build_snapshot(store, snapshot_id(1), xb, ids))
    app = create_app({"SETTINGS": settings, "STORE_OBJECT": store, "LOAD_ON_START": "sync",
                      "WATCH_INTERVAL_S": 0, "REPLICA_ID": "a"})  # fmt: skip
    try:
        replica = app.extensions["vsearch"].replica
        written = [e.id for e in replica.write([DeltaWrite("delete", i) for i in range(6)])]
        for day, (mark, previous) in enumerate([(2, 1), (4, 2)], start=2):
            m = build_snapshot(store, snapshot_id(day), xb, ids, watermark=written[mark],
                               previous=snapshot_id(previous))  # fmt: skip
            publish(store, m)
            store.unreachable = manifest_key(snapshot_id(2)) if day == 3 else None
            assert replica.tick() == "swapped"
        # Serving day 3, whose rollback target (day 2) could not be read: keep everything.
        assert replica.log.oldest_served() == LOG_ORIGIN
        assert len(replica.log.read()) == 6
        store.unreachable = None
        assert replica.tick() == "unchanged"  # the watcher asks again
        assert replica.log.oldest_served() == written[2]
        assert [e.id for e in replica.log.read()] == written[2:]
    finally:
        close_app(app)
