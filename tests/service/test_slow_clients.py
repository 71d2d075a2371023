"""Slow and idle clients cannot starve the service: the real server on loopback.

Regression: under gunicorn's gthread worker (1 worker x 8 threads) each request was read
on a request thread, so 8 slowloris or slow-body connections, or a few hundred silent
ones, took every thread and a victim client got no answer at all. The service's server
(service/server.py, waitress) reads requests on its I/O loop and hands threads only
complete ones. bench/slow_clients.py measures the same attack against each candidate.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import resource
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tests.fixtures.snapshots import DIM, publish_series, sample_vectors
from vsearch.cli.service_process import running_service
from vsearch.storage import LocalStore

SLOWLORIS, SLOW_BODY, IDLE = 64, 64, 2000
VICTIM_TIMEOUT_S = 2.0
P99_CEILING_S = 2.0  # the bound when 10 x the idle p99 is tighter


class Attackers:
    """Connections held open from a background event loop: slowloris headers and bodies
    one byte every 0.5 s, and silent ones; a connection the server closes is reopened."""

    def __init__(self, host: str, port: int, slowloris: int, slow_body: int, idle: int) -> None:
        self.host, self.port = host, port
        self.counts = (slowloris, slow_body, idle)
        self.opened = 0
        self.stop = threading.Event()

    async def _hold(self, head: bytes, drip: bytes) -> None:
        counted = False
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            if not counted:
                self.opened, counted = self.opened + 1, True
            try:
                writer.write(head)
                if not drip:  # silent: wait, without waking up, until the server hangs up
                    await reader.read()
                while drip and not self.stop.is_set() and not reader.at_eof():
                    writer.write(drip)
                    await writer.drain()
                    await asyncio.sleep(0.5)
            except OSError:
                pass
            finally:
                writer.close()

    async def _main(self) -> None:
        self.loop, self.task = asyncio.get_running_loop(), asyncio.current_task()
        slowloris, slow_body, idle = self.counts
        headers = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
        body = b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n{"
        await asyncio.gather(
            *[self._hold(headers, b"a") for _ in range(slowloris)],
            *[self._hold(body, b" ") for _ in range(slow_body)],
            *[self._hold(b"", b"") for _ in range(idle)],
        )

    def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(self._main())  # which cancels and awaits every attacker at the end

    def __enter__(self) -> Attackers:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while self.opened < sum(self.counts) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # every slow client has sent its first bytes
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.loop.call_soon_threadsafe(self.task.cancel)  # connects still waiting, too
        self.thread.join(10)


def victim(port: int, n: int, budget_s: float) -> list[float]:
    """Seconds for each of ``n`` searches on fresh connections; NaN when not answered
    (refused, timed out, an error status, or not sent within ``budget_s``)."""
    bodies = [json.dumps({"vector": x.tolist(), "k": 5}) for x in sample_vectors(n, DIM, seed=3)]
    out: list[float] = []
    deadline = time.monotonic() + budget_s
    for body in bodies:
        if time.monotonic() > deadline:
            out.append(math.nan)
            continue
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=VICTIM_TIMEOUT_S)
        t = time.perf_counter()
        try:
            conn.request("POST", "/v1/search", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            out.append(time.perf_counter() - t if response.status == 200 else math.nan)
        except OSError:
            out.append(math.nan)
        finally:
            conn.close()
    return out


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port of the service (1 worker x 8 threads, the defaults) over a small snapshot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SLOWLORIS + SLOW_BODY + IDLE + 1024
    if soft < wanted:  # the server raises its own; this process holds the attackers' ends
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    tmp = tmp_path_factory.mktemp("slow-clients")
    store = LocalStore(tmp / "store")
    publish_series(store, [1], n=200)
    env = {
        "VSEARCH_STORE": str(store.root),
        "VSEARCH_DATA_DIR": str(tmp / "data"),
        "VSEARCH_WATCH_INTERVAL_S": "0",
        "VSEARCH_SERVICE_WORKERS": "1",
        "VSEARCH_SERVICE_THREADS": "8",
    }
    try:
        with running_service(env, log_path=tmp / "service.log") as base:
            yield int(base.rsplit(":", 1)[1])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_victim_is_answered_while_slow_and_idle_clients_hold_connections(
    service: int,
) -> None:
    idle = victim(service, 20, budget_s=20)
    assert not np.isnan(idle).any(), f"unanswered without any attack: {idle}"
    with Attackers("127.0.0.1", service, SLOWLORIS, SLOW_BODY, IDLE) as attack:
        assert attack.opened == SLOWLORIS + SLOW_BODY + IDLE
        attacked = victim(service, 30, budget_s=10)
    lost = int(np.isnan(attacked).sum())
    assert lost == 0, f"{lost} of {len(attacked)} searches unanswered under attack"
    idle_p99, p99 = np.percentile(idle, 99), np.percentile(attacked, 99)
    bound = max(10 * idle_p99, P99_CEILING_S)
    assert p99 < bound, f"p99 {p99 * 1000:.0f} ms under attack, idle {idle_p99 * 1000:.1f} ms"


def test_a_body_above_max_request_mb_is_refused_before_it_is_sent(service: int) -> None:
    """The 413 comes back on the headers alone: the server does not wait for 17 MB."""
    with socket.create_connection(("127.0.0.1", service), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n" % (17 * 2**20)
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:200]
    assert json.loads(body)["error"]["code"] == "request_entity_too_large"
