"""Crash ledger: every acknowledged write survives a SIGKILL of the whole service mid-burst.

Client threads send bounded bursts of upserts and deletes (1-3 items a request, each
thread on its own items) to the real server (``running_service``: what ``vsearch serve``
runs) with two worker processes, and keep a ledger of what was acknowledged. Once
enough is, the server's master process and its workers are SIGKILLed — with the Redis
log, redis-server too (``appendfsync always``): the host dies. After a restart every
item is checked against the ledger: an acknowledged upsert is found with its version, an
acknowledged delete stays gone, nothing appears that was never written, and a request
cut off in flight took effect entirely or not at all. Twice: the second crash hits a
service that replayed the log after the first.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.snapshots import build_snapshot, publish, sample_vectors, snapshot_id
from tests.service.redis_proc import KillableRedis
from vsearch.cli.service_process import http_json, running_service, settings_env
from vsearch.config import Settings
from vsearch.storage import LocalStore

KEY = "ledger-key"
AUTH = {"X-API-Key": KEY}
N, D = 300, 64
THREADS, REQUESTS, KILL_AFTER = 4, 60, 80  # KILL_AFTER of THREADS x REQUESTS acknowledged
OWNED = 15  # base items per thread; each also writes OWNED new ones
BASE, GONE = ("base",), ("gone",)  # item states; an upsert is ("v", version)

State = tuple[Any, ...]


def version_vector(item: int, version: int) -> np.ndarray:
    x = np.random.default_rng([item, version]).standard_normal(D).astype("float32")
    return x / np.linalg.norm(x)


@dataclass
class Writer:
    """One client thread's items, its ledger of acknowledged states, and its cut-off request."""

    index: int
    acked: dict[int, State] = field(init=False)
    in_flight: dict[int, State] = field(default_factory=dict)  # sent, never answered
    sent: int = 0
    versions: int = 0

    def __post_init__(self) -> None:
        first = self.index * OWNED
        self.acked = {i: BASE for i in range(first, first + OWNED)}
        self.acked |= {100_000 + self.index * 1000 + j: GONE for j in range(OWNED)}

    def next_request(self, rng: np.random.Generator) -> tuple[str, str, Any, dict[int, State]]:
        """(method, path, body, the states it gives its items): 1-3 of this writer's items."""
        items = [int(i) for i in rng.choice(sorted(self.acked), rng.integers(1, 4), False)]
        live = [i for i in items if self.acked[i] != GONE]
        if live and rng.random() < 0.4:
            return "POST", "/v1/items/delete", {"ids": live}, dict.fromkeys(live, GONE)
        after: dict[int, State] = {}
        rows = []
        for i in items:
            self.versions += 1
            after[i] = ("v", self.versions)
            rows.append({"id": i, "vector": version_vector(i, self.versions).tolist(),
                         "metadata": {"item": i, "v": self.versions}})  # fmt: skip
        return "PUT", "/v1/items", {"items": rows}, after

    def run(self, url: str, acknowledged: list[int], killed: threading.Event) -> None:
        """Write until REQUESTS are acknowledged or the first one fails once ``killed``."""
        rng = np.random.default_rng([self.index, self.versions])
        while self.sent < REQUESTS:
            method, path, body, after = self.next_request(rng)
            try:
                status, answer = http_json(method, url + path, body, AUTH, timeout=30)
            except (OSError, HTTPException, ValueError):  # reset, refused, a truncated answer
                status, answer = 0, None
            if status != 200 and killed.is_set():
                self.in_flight = after  # cut off: applied entirely or not at all
                return
            if status == 503 and answer["error"]["code"] == "not_ready":
                time.sleep(0.01)  # the other worker is still loading: refused before the log
                continue
            assert status == 200, (status, answer)
            self.acked |= after
            self.sent += 1
            acknowledged.append(1)


def service_pids(other_children: set[int]) -> list[int]:
    """The server ``running_service`` started (this process's one other child) and its
    worker processes (``service.server`` forks them after binding)."""
    parents, commands = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # after "(comm)": the state, then the parent's pid
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
            if state == "Z":  # a finished child of an earlier test, not yet reaped
                continue
            parents[int(stat.parent.name)] = int(ppid)
            commands[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
    (server,) = [
        p
        for p, pp in parents.items()
        if pp == os.getpid() and p not in other_children and b"service.server" in commands[p]
    ]
    return [server, *(p for p, pp in parents.items() if pp == server)]


def search(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST /v1/search; with two workers one may still be loading: ask again."""
    deadline = time.monotonic() + 30
    while True:
        status, answer = http_json("POST", url + "/v1/search", body)
        if status != 503 or answer["error"]["code"] != "not_ready":
            return status, answer
        assert time.monotonic() < deadline, answer
        time.sleep(0.05)


def observed_state(url: str, item: int, candidates: set[State], base: np.ndarray) -> State:
    """Which of ``candidates`` the service shows for ``item``; anything else fails."""
    status, answer = search(url, {"id": item, "k": 1})
    if status == 404:
        return GONE
    assert status == 200, answer
    for state in candidates - {GONE}:
        x = base[item] if state == BASE else version_vector(item, state[1])
        hit = search(url, {"vector": x.tolist(), "k": 1})[1]["hits"][0]
        version = (hit["metadata"] or {}).get("v")
        if hit["id"] == item and (
            (state == BASE and hit["source"] == "base")
            or (state != BASE and hit["source"] == "delta" and version == state[1])
        ):
            return state
    raise AssertionError(f"item {item} is present but in none of the states {candidates}")


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KillableRedis | None]:
    if request.param == "sqlite":
        yield None
        return
    server = KillableRedis(tmp_path / "redis", appendonly=True, appendfsync="always")
    server.start()
    yield server
    server.stop()


def crash_mid_burst(url: str, writers: list[Writer], backend: KillableRedis | None) -> int:
    """Run every writer's burst; SIGKILL the service (and Redis) once KILL_AFTER requests are
    acknowledged. Returns how many were."""
    acknowledged: list[int] = []
    errors: list[BaseException] = []
    killed = threading.Event()

    def run(w: Writer) -> None:
        try:
            w.run(url, acknowledged, killed)
        except BaseException as e:  # an unexpected answer: the test fails below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    while len(acknowledged) < KILL_AFTER and any(t.is_alive() for t in threads):
        time.sleep(0.005)
    pids = service_pids({backend.proc.pid} if backend and backend.proc else set())
    killed.set()  # from here on a failed request is one the crash cut off; writers go on
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    if backend is not None:
        backend.kill()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(pids) == 3  # the server and both workers
    if backend is not None:
        backend.start()  # same port, same AOF
    return len(acknowledged)


def check_ledger(url: str, writers: list[Writer], xb: np.ndarray) -> None:
    """Every item as the ledger says (a cut-off batch: all or nothing), no phantom; then
    the ledger takes what was observed, for the next round."""
    shown: dict[int, State] = {}
    for w in writers:
        for item, acked in w.acked.items():
            allowed = {acked} | ({w.in_flight[item]} if item in w.in_flight else set())
            shown[item] = observed_state(url, item, allowed, xb)
        cut_off = {shown[i] == s for i, s in w.in_flight.items()}
        assert len(cut_off) <= 1, f"writer {w.index}: a batch half applied"
    rng = np.random.default_rng(0)
    for _ in range(10):  # every hit of broad queries is an item in the state just observed
        q = rng.standard_normal(D).astype("float32")
        _, found = search(url, {"vector": q.tolist(), "k": 100})
        for hit in found["hits"]:
            state = shown.get(hit["id"], BASE if hit["id"] < N else None)
            assert state not in (None, GONE), hit
            assert (hit["source"] == "base") == (state == BASE), (hit, state)
            if state != BASE:
                assert hit["metadata"] == {"item": hit["id"], "v": state[1]}, (hit, state)
    for w in writers:
        w.acked |= {i: shown[i] for i in w.in_flight}
        w.in_flight, w.sent = {}, 0


def test_acknowledged_writes_survive_a_sigkill_of_the_server_and_workers_mid_burst(
    tmp_path: Path, backend: KillableRedis | None
) -> None:
    store = LocalStore(tmp_path / "store")
    xb = sample_vectors(N, D, seed=7)
    publish(store, build_snapshot(store, snapshot_id(1), xb, np.arange(N, dtype="int64")))
    logs = {"delta_log": backend.url, "metadata_db": backend.url} if backend else {}
    settings = Settings.load(
        environ={}, data_dir=str(tmp_path / "data"), store=str(store.root), api_key=KEY,
        watch_interval_s=0, service_threads=4, **logs,
    )  # fmt: skip
    env = {**settings_env(settings), "VSEARCH_SERVICE_WORKERS": "2"}
    writers = [Writer(t) for t in range(THREADS)]
    for crash in range(2):
        with running_service(env, log_path=tmp_path / "service.log") as url:
            if crash:
                check_ledger(url, writers, xb)
            acknowledged = crash_mid_burst(url, writers, backend)
        assert KILL_AFTER <= acknowledged < THREADS * REQUESTS  # killed mid-burst
        assert any(w.in_flight for w in writers)  # writers were cut off
    with running_service(settings_env(settings), log_path=tmp_path / "service.log") as url:
        check_ledger(url, writers, xb)
