"""Live delta through the app with a real Redis: visibility, tombstones, replicas, replay, swaps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.snapshots import build_snapshot, publish, sample_vectors, snapshot_id
from tests.service.conftest import AUTH, AppFactory, vector_query
from tests.service.redis_proc import KillableRedis
from vsearch.catalog import rollback
from vsearch.storage import ObjectStore

N, D = 400, 64


@pytest.fixture(scope="module")
def redis_server_for_delta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillableRedis]:
    server = KillableRedis(tmp_path_factory.mktemp("redis-delta"), appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server_for_delta: KillableRedis) -> str:
    import redis

    client = redis.Redis.from_url(redis_server_for_delta.url)
    client.flushdb()
    client.close()
    return redis_server_for_delta.url


@pytest.fixture
def base(local_store: ObjectStore) -> tuple[ObjectStore, np.ndarray]:
    xb = sample_vectors(N, D, seed=11)
    publish(
        local_store, build_snapshot(local_store, snapshot_id(1), xb, np.arange(N, dtype="int64"))
    )
    return local_store, xb


def redis_app(make_app: AppFactory, store: ObjectStore, url: str, name: str, **extra: Any) -> Any:
    return make_app(store, name=name, DELTA_LOG=url, METADATA_DB=url, **extra)


def new_vector(seed: int) -> np.ndarray:
    return sample_vectors(1, D, seed=10_000 + seed)[0]


def upsert(client: Any, item: int, x: np.ndarray, **meta: Any) -> Any:
    r = client.put(
        "/v1/items",
        json={"items": [{"id": item, "vector": x.tolist(), "metadata": meta}]},
        headers=AUTH,
    )
    assert r.status_code == 200, r.json
    return r.json


def delete(client: Any, *items: int) -> Any:
    r = client.post("/v1/items/delete", json={"ids": list(items)}, headers=AUTH)
    assert r.status_code == 200, r.json
    return r.json


def ids_of(r: Any) -> list[int]:
    assert r.status_code == 200, r.json
    return [h["id"] for h in r.json["hits"]]


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the timeout")
        time.sleep(0.02)


def test_an_upsert_is_found_by_the_very_next_search(
    base: Any, make_app: AppFactory, redis_url: str
) -> None:
    store, _ = base
    client = redis_app(make_app, store, redis_url, "a").test_client()
    x = new_vector(1)
    upsert(client, 10_001, x, caption="new")
    hit = vector_query(client, x, k=1).json["hits"][0]
    assert (hit["id"], hit["source"], hit["metadata"]) == (10_001, "delta", {"caption": "new"})


def test_a_delete_or_an_upsert_hides_the_base_copy(
    base: Any, make_app: AppFactory, redis_url: str
) -> None:
    store, xb = base
    client = redis_app(make_app, store, redis_url, "a").test_client()
    assert ids_of(vector_query(client, xb[5], k=3))[0] == 5
    delete(client, 5)
    assert 5 not in ids_of(vector_query(client, xb[5], k=50))
    upsert(client, 6, new_vector(2))  # replaces item 6's vector: the base copy must vanish
    found = vector_query(client, xb[6], k=50).json["hits"]
    assert all(not (h["id"] == 6 and h["source"] == "base") for h in found)
    assert vector_query(client, new_vector(2), k=1).json["hits"][0] == {
        "id": 6,
        "score": pytest.approx(1.0, abs=1e-5),
        "source": "delta",
        "metadata": {},
    }
    assert client.post("/v1/search", json={"id": 5}).status_code == 404


def test_a_second_replica_sees_writes_through_the_stream_and_a_restart_replays(
    base: Any, make_app: AppFactory, redis_url: str
) -> None:
    store, xb = base
    app_a = redis_app(make_app, store, redis_url, "a")
    a = app_a.test_client()
    b = redis_app(make_app, store, redis_url, "b").test_client()
    x = new_vector(3)
    upsert(a, 20_000, x)
    delete(a, 9)
    eventually(lambda: ids_of(vector_query(b, x, k=1)) == [20_000])
    eventually(lambda: 9 not in ids_of(vector_query(b, xb[9], k=20)))
    lag = app_a.extensions["vsearch"].metrics.visible_lag
    assert lag.labels("local")._sum.get() >= 0

    from service.app import close_app

    close_app(app_a)
    restarted = redis_app(make_app, store, redis_url, "a2").test_client()  # a fresh process's view
    assert ids_of(vector_query(restarted, x, k=1)) == [20_000]
    assert 9 not in ids_of(vector_query(restarted, xb[9], k=20))


def test_a_swap_to_a_higher_watermark_keeps_exactly_the_newer_entries(
    base: Any, make_app: AppFactory, redis_url: str
) -> None:
    store, xb = base
    app = redis_app(make_app, store, redis_url, "a")
    client, state = app.test_client(), app.extensions["vsearch"]
    old = [new_vector(10), new_vector(11)]
    newer = [new_vector(12), new_vector(13)]
    first = upsert(client, 30_000, old[0])
    folded = upsert(client, 30_001, old[1])["last_id"]
    delete(client, 3)
    upsert(client, 30_002, newer[0])
    upsert(client, 30_003, newer[1])
    assert first["last_id"] < folded

    # The compaction folds everything up to `folded` into snapshot 2 (item 3 still there).
    ids = np.concatenate([np.arange(N), [30_000, 30_001]]).astype("int64")
    snap2 = build_snapshot(
        store, snapshot_id(2), np.vstack([xb, old]), ids, watermark=folded, previous=snapshot_id(1)
    )
    publish(store, snap2)
    assert state.replica.tick() == "swapped"
    assert sorted(state.replica.delta._latest) == [3, 30_002, 30_003]
    r = vector_query(client, old[0], k=1).json
    assert r["snapshot_id"] == snapshot_id(2)
    assert [(h["id"], h["source"]) for h in r["hits"]] == [(30_000, "base")]
    assert [(h["id"], h["source"]) for h in vector_query(client, newer[0], k=1).json["hits"]] == [
        (30_002, "delta")
    ]
    assert 3 not in ids_of(vector_query(client, xb[3], k=20))

    # The log was not trimmed above snapshot 1's watermark (the rollback target of 2) ...
    assert len(state.replica.log.read()) == 5
    # ... so a rollback to it (watermark 0-0) brings the folded writes back from the log.
    rollback(store, to=snapshot_id(1))
    assert state.replica.tick() == "swapped"
    assert [(h["id"], h["source"]) for h in vector_query(client, old[0], k=1).json["hits"]] == [
        (30_000, "delta")
    ]


def test_writes_need_the_api_key(
    base: Any, make_app: AppFactory, redis_url: str, tmp_path: Path
) -> None:
    store, _ = base
    client = redis_app(make_app, store, redis_url, "a").test_client()
    body = {"ids": [1]}
    assert client.post("/v1/items/delete", json=body).status_code == 401
    assert (
        client.post("/v1/items/delete", json=body, headers={"X-API-Key": "wrong"}).status_code
        == 401
    )
    ok = client.post("/v1/items/delete", json=body, headers={"Authorization": "Bearer test-key"})
    assert ok.status_code == 200
    closed = make_app(store, name="nokey", API_KEY="").test_client()
    assert closed.post("/v1/items/delete", json=body, headers=AUTH).status_code == 403
