"""Hot swap under load through the real server on 127.0.0.1: zero failed requests.

Each snapshot holds ids ``day * 1_000_000 + i``, so every response can be
checked against the snapshot it names.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.fixtures.snapshots import build_snapshot, publish, sample_vectors, snapshot_id
from vsearch.cli.service_process import http_json, running_service
from vsearch.storage import LocalStore

N, D, CLIENTS, MAX_REQUESTS = 2000, 64, 4, 4000


def snapshot(store: LocalStore, day: int) -> Any:
    ids = np.arange(N, dtype="int64") + day * 1_000_000
    return build_snapshot(store, snapshot_id(day), sample_vectors(N, D, seed=day), ids, nshards=2)


def test_current_moves_four_times_under_load_without_a_failed_request(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    manifests = {day: snapshot(store, day) for day in (1, 2, 3, 4)}
    publish(store, manifests[1])
    env = {
        "VSEARCH_STORE": str(store.root),
        "VSEARCH_DATA_DIR": str(tmp_path / "data"),
        "VSEARCH_WATCH_INTERVAL_S": "0.1",
        "VSEARCH_SERVICE_THREADS": "8",
        "VSEARCH_SERVICE_WORKERS": "1",
    }
    responses: list[tuple[int, Any]] = []
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    with running_service(env, log_path=tmp_path / "service.log") as base:

        def client(seed: int) -> None:
            rng = np.random.default_rng(seed)
            while not stop.is_set() and len(responses) < MAX_REQUESTS:
                q = rng.standard_normal(D).astype("float32")
                try:
                    status, body = http_json(
                        "POST", f"{base}/v1/search", {"vector": q.tolist(), "k": 5}, timeout=10
                    )
                except Exception as e:  # a refused or dropped connection is a failed request
                    with lock:
                        failures.append(repr(e))
                    continue
                with lock:
                    responses.append((status, body))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()

        def served() -> str:
            return str(http_json("GET", f"{base}/readyz")[1]["snapshot_id"])

        moves = [2, 3, 1, 4]  # 1 again: a rollback is just another swap
        seen_live = []
        try:
            time.sleep(0.5)
            for day in moves:
                publish(store, manifests[day])
                deadline = time.monotonic() + 30
                while served() != snapshot_id(day):
                    assert time.monotonic() < deadline, f"{snapshot_id(day)} never went live"
                    time.sleep(0.05)
                seen_live.append(served())
                time.sleep(0.4)  # keep searching on it
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    assert seen_live == [snapshot_id(d) for d in moves]
    assert failures == []
    assert len(responses) > 100
    bad = [(s, b) for s, b in responses if s != 200]
    assert bad == []
    by_snapshot: dict[str, int] = {}
    day_of = {m.snapshot_id: day for day, m in manifests.items()}
    for _, body in responses:
        sid = body["snapshot_id"]
        assert len(body["hits"]) == 5
        assert all(h["id"] // 1_000_000 == day_of[sid] for h in body["hits"]), body
        by_snapshot[sid] = by_snapshot.get(sid, 0) + 1
    assert set(by_snapshot) == {m.snapshot_id for m in manifests.values()}
