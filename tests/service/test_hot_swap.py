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

N, D, CLIENTS = 2000, 64, 4
PER_SNAPSHOT = 20  # answers each live snapshot must give under load before the next swap
DEADLINE_S = 60  # only a hung service runs into it: nothing waits for it to pass


def snapshot(store: LocalStore, day: int) -> Any:
    ids = np.arange(N, dtype="int64") + day * 1_000_000
    return build_snapshot(store, snapshot_id(day), sample_vectors(N, D, seed=day), ids, nshards=2)


class Load:
    """Clients searching until ``stop``; every answer recorded in order, every failure
    kept. ``wait_for_answers(sid, n, since)`` blocks until ``n`` answers from snapshot
    ``sid`` arrived after the first ``since`` (a condition, not a sleep)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.responses: list[tuple[int, Any]] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.changed = threading.Condition()
        self.threads = [threading.Thread(target=self.client, args=(i,)) for i in range(CLIENTS)]

    def client(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not self.stop.is_set():
            q = rng.standard_normal(D).astype("float32")
            try:
                status, body = http_json(
                    "POST", f"{self.base}/v1/search", {"vector": q.tolist(), "k": 5}, timeout=10
                )
            except Exception as e:  # a refused or dropped connection is a failed request
                with self.changed:
                    self.failures.append(repr(e))
                    self.changed.notify_all()
                continue
            with self.changed:
                self.responses.append((status, body))
                self.changed.notify_all()

    def answered(self) -> int:
        with self.changed:
            return len(self.responses)

    def wait_for_answers(self, sid: str, n: int, since: int) -> None:
        def enough() -> bool:
            new = self.responses[since:]
            if self.failures or any(status != 200 for status, _ in new):
                return True  # the assertions after the run say what went wrong
            return sum(1 for _, b in new if _sid(b) == sid) >= n

        with self.changed:
            assert self.changed.wait_for(enough, DEADLINE_S), f"{sid}: no {n} answers under load"


def _sid(body: Any) -> Any:
    return body.get("snapshot_id") if isinstance(body, dict) else None


def test_current_moves_four_times_under_load_without_a_failed_request(tmp_path: Path) -> None:
    """Each swap is awaited on the service's own word (``/readyz`` names the snapshot),
    load runs throughout, and each live snapshot answers searches before the next swap."""
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
    moves = [2, 3, 1, 4]  # 1 again: a rollback is just another swap
    seen_live = []
    with running_service(env, log_path=tmp_path / "service.log") as base:
        load = Load(base)

        def served() -> str:
            return str(http_json("GET", f"{base}/readyz")[1]["snapshot_id"])

        for t in load.threads:
            t.start()
        try:
            load.wait_for_answers(snapshot_id(1), PER_SNAPSHOT, since=0)
            for day in moves:
                publish(store, manifests[day])
                deadline = time.monotonic() + DEADLINE_S
                while served() != snapshot_id(day):  # polling the service, with a deadline
                    assert time.monotonic() < deadline, f"{snapshot_id(day)} never went live"
                    time.sleep(0.05)
                seen_live.append(served())
                load.wait_for_answers(snapshot_id(day), PER_SNAPSHOT, since=load.answered())
        finally:
            load.stop.set()
            for t in load.threads:
                t.join(30)
    assert seen_live == [snapshot_id(d) for d in moves]
    assert load.failures == []
    bad = [(s, b) for s, b in load.responses if s != 200]
    assert bad == []
    by_snapshot: dict[str, int] = {}
    day_of = {m.snapshot_id: day for day, m in manifests.items()}
    for _, body in load.responses:
        sid = body["snapshot_id"]
        assert len(body["hits"]) == 5
        assert all(h["id"] // 1_000_000 == day_of[sid] for h in body["hits"]), body
        by_snapshot[sid] = by_snapshot.get(sid, 0) + 1
    assert set(by_snapshot) == {m.snapshot_id for m in manifests.values()}
    assert min(by_snapshot.values()) >= PER_SNAPSHOT, by_snapshot
