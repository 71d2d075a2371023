"""Redis down (metadata store and delta log): searches and writes answer 503 with a reason,
never 500, ``/readyz`` turns 503 from a cached ping, and all of it recovers when Redis is
back, without restarting the service. A real redis-server, SIGKILLed and restarted.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.snapshots import build_snapshot, publish, sample_vectors, snapshot_id
from tests.service.conftest import AUTH, AppFactory, vector_query
from tests.service.redis_proc import KillableRedis
from vsearch.storage import ObjectStore

N, D = 200, 64


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[KillableRedis]:
    server = KillableRedis(tmp_path / "redis", appendonly=True)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.proc.send_signal(signal.SIGCONT)  # in case a test stopped it
    server.stop()


@pytest.fixture
def on_redis(
    local_store: ObjectStore, make_app: AppFactory, redis_server: KillableRedis
) -> tuple[Any, np.ndarray]:
    """A test client of an app whose metadata store and delta log are ``redis_server``."""
    xb = sample_vectors(N, D, seed=21)
    publish(local_store, build_snapshot(local_store, snapshot_id(1), xb, np.arange(N)))
    app = make_app(local_store, DELTA_LOG=redis_server.url, METADATA_DB=redis_server.url)
    return app.test_client(), xb


def eventually(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met within the timeout"
        time.sleep(0.05)


def upsert(client: Any, item: int, x: np.ndarray) -> Any:
    body = {"items": [{"id": item, "vector": x.tolist(), "metadata": {"v": 1}}]}
    return client.put("/v1/items", json=body, headers=AUTH)


def test_redis_killed_searches_and_readyz_answer_503_then_recover_when_it_restarts(
    on_redis: tuple[Any, np.ndarray], redis_server: KillableRedis
) -> None:
    """Regression: with Redis down every search was a 500 (the metadata store's
    ConnectionError went unhandled) while /readyz stayed 200, so the load balancer kept
    sending traffic to a replica that could answer nothing."""
    client, xb = on_redis
    hit = vector_query(client, xb[3], k=1).json["hits"][0]
    assert (hit["id"], hit["metadata"]["key"]) == (3, f"{snapshot_id(1)}/3")
    assert client.get("/readyz").status_code == 200

    redis_server.kill()
    r = vector_query(client, xb[3], k=1)
    assert r.status_code == 503, r.json
    assert r.json["error"]["code"] == "metadata_unavailable"
    ready = client.get("/readyz")
    assert ready.status_code == 503, ready.json
    assert ready.json["ready"] is False
    assert ready.json["dependencies"]["metadata"] == {
        "ok": False,
        "error": "metadata store unreachable (ConnectionError)",
    }
    assert "metadata" in ready.json["reason"]
    w = upsert(client, 5000, xb[4])
    assert (w.status_code, w.json["error"]["code"]) == (503, "delta_log_unavailable")
    # Id queries need no metadata for their input, but their hits do: 503 as well.
    assert client.post("/v1/search", json={"id": 7}).status_code == 503

    redis_server.start()  # same port, same AOF
    eventually(lambda: client.get("/readyz").status_code == 200, timeout=10)
    assert client.get("/readyz").json["dependencies"] == {
        "metadata": {"ok": True, "error": None},
        "delta_log": {"ok": True, "error": None},
    }
    hit = vector_query(client, xb[3], k=1).json["hits"][0]
    assert (hit["id"], hit["metadata"]["key"]) == (3, f"{snapshot_id(1)}/3")
    x = sample_vectors(1, D, seed=99)[0]
    assert upsert(client, 5001, x).status_code == 200
    assert vector_query(client, x, k=1).json["hits"][0]["id"] == 5001


def test_readyz_pings_redis_at_most_once_a_second_however_often_it_is_asked(
    on_redis: tuple[Any, np.ndarray], redis_server: KillableRedis
) -> None:
    import redis

    client, _ = on_redis
    admin = redis.Redis.from_url(redis_server.url)
    try:
        assert client.get("/readyz").status_code == 200  # connections opened
        time.sleep(1.0)
        admin.config_resetstat()
        started = time.monotonic()
        for _ in range(50):
            assert client.get("/readyz").status_code == 200
        elapsed = time.monotonic() - started
        pings = admin.info("commandstats").get("cmdstat_ping", {}).get("calls", 0)
    finally:
        admin.close()
    # Two dependencies (metadata store, delta log) on this one Redis: at most one ping each
    # per started second, not 100.
    assert pings <= 2 * (int(elapsed) + 1), (pings, elapsed)


def test_a_hanging_redis_costs_a_search_seconds_not_minutes(
    on_redis: tuple[Any, np.ndarray], redis_server: KillableRedis
) -> None:
    """SIGSTOP: connections open but nothing answers. Searches fail within the metadata
    store's 2 s timeout, not after redis-py's default ten retries."""
    client, xb = on_redis
    assert redis_server.proc is not None
    assert vector_query(client, xb[1], k=1).status_code == 200
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        r = vector_query(client, xb[1], k=1)
        took = time.monotonic() - started
        assert (r.status_code, r.json["error"]["code"]) == (503, "metadata_unavailable")
        assert took < 4, took
        assert client.get("/readyz").status_code == 503  # marked down by the failed search
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    eventually(lambda: client.get("/readyz").status_code == 200, timeout=10)
    assert vector_query(client, xb[1], k=1).status_code == 200
