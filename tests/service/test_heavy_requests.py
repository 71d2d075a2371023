"""Slow image URLs and large uploads cannot take the service from vector searches.

The app runs under the service's own server (waitress, 8 request threads, as deployed)
on loopback, in this process. Attackers send, sixteen at once and over and over,
searches whose ``image_url`` points at a host dripping a byte every 0.2 s (trusted, as a
slow public host would be admitted), or 36-megapixel PNG uploads (under the 40 MP cap,
about a second of decoding each). Meanwhile a victim sends vector searches one after
another: every one must be answered 200, none later than ``VICTIM_BOUND_S``, and the
attackers' extra requests get a quick 503 with a JSON reason and ``Retry-After``.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service.app import close_app, create_app
from service.server import build_server, listen
from tests.embedding.image_server import image_server
from tests.fixtures.snapshots import DIM, publish_series, sample_vectors
from tests.service.conftest import API_KEY, HashEncoder
from vsearch.config import Settings
from vsearch.storage import LocalStore

ATTACKERS = 16
ATTACK_S = 5.0
VICTIM_BOUND_S = 1.0  # an idle search takes milliseconds; a held thread, seconds
BUSY_BOUND_S = 1.0  # how fast a refused heavy request must be answered


@contextlib.contextmanager
def serving(app: Flask, threads: int = 8) -> Iterator[int]:
    """``app`` behind the service's waitress server on a free loopback port."""
    sock = listen("127.0.0.1:0")
    server = build_server(app, sock, Settings.load(service_threads=threads))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        server.close()
        server.task_dispatcher.shutdown()


def post(port: int, body: dict[str, Any], timeout: float = 30) -> tuple[int, float, Any]:
    """(status, seconds, response headers and JSON body) of one search on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.request("POST", "/v1/search", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        return response.status, time.monotonic() - started, (response.headers, data)
    finally:
        conn.close()


def attack_while_victim_searches(port: int, body: dict[str, Any]) -> tuple[list, list]:
    """Attackers send ``body`` in a loop while a victim sends vector searches; returns
    (victim's (status, seconds)), (attackers' (status, seconds, (headers, body)))."""
    stop = threading.Event()
    attacks: list[tuple[int, float, Any]] = []

    def attacker() -> None:
        while not stop.is_set():
            try:
                attacks.append(post(port, body))
            except OSError as e:
                attacks.append((0, 0.0, e))

    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(ATTACKERS)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the attack is under way
    victim: list[tuple[int, float]] = []
    deadline = time.monotonic() + ATTACK_S
    for x in sample_vectors(1000, DIM, seed=5):
        if time.monotonic() > deadline:
            break
        try:
            status, seconds, _ = post(port, {"vector": x.tolist(), "k": 5}, timeout=15)
        except OSError:
            status, seconds = 0, 15.0
        victim.append((status, seconds))
    stop.set()
    for t in threads:
        t.join(30)
    return victim, attacks


def assert_victim_served(victim: list[tuple[int, float]]) -> None:
    assert len(victim) >= 5
    assert all(status == 200 for status, _ in victim), victim
    slowest = max(seconds for _, seconds in victim)
    assert slowest < VICTIM_BOUND_S, f"a vector search waited {slowest:.2f}s behind the attack"


def assert_busy_refusals(attacks: list[tuple[int, float, Any]], code: str) -> None:
    refused = [a for a in attacks if a[0] == 503]
    assert refused, f"no request was refused: {[a[0] for a in attacks][:20]}"
    for _, seconds, (headers, data) in refused:
        assert seconds < BUSY_BOUND_S
        assert json.loads(data)["error"]["code"] == code
        assert int(headers["Retry-After"]) >= 1


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    store = LocalStore(tmp_path / "store")
    publish_series(store, [1], n=200)
    app = create_app(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "STORE_OBJECT": store,
            "API_KEY": API_KEY,
            "ENCODER": HashEncoder(),
            "WATCH_INTERVAL_S": 0,
            "LOAD_ON_START": "sync",
            "START_THREADS": False,
            "QUERY_CACHE": "off",
            "IMAGE_FETCH_ALLOW": "127.0.0.1",
            "IMAGE_FETCH_TIMEOUT_S": 3,
            "SERVICE_THREADS": 8,
            "IMAGE_FETCH_CONCURRENCY": 2,
            "IMAGE_DECODE_CONCURRENCY": 1,
        }
    )
    yield app
    close_app(app)


def test_slow_image_urls_take_no_thread_from_vector_searches(app: Flask) -> None:
    with image_server() as (base, _), serving(app) as port:
        victim, attacks = attack_while_victim_searches(port, {"image_url": f"{base}/drip.jpg"})
        assert_victim_served(victim)
        assert_busy_refusals(attacks, "image_fetch_busy")
        # The fetches that ran were given up at their deadline, as a 400 naming why.
        assert {a[0] for a in attacks} <= {400, 503}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/readyz")
        assert conn.getresponse().status == 200


def big_png(width: int = 6000, height: int = 6000) -> bytes:
    """36 megapixels (under the 40 MP cap) that compress to ~100 KB: every one is
    decoded in full, a second or so of a core."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


def test_large_uploads_take_no_thread_from_vector_searches(app: Flask) -> None:
    body = {"image": base64.b64encode(big_png()).decode()}
    with serving(app) as port:
        victim, attacks = attack_while_victim_searches(port, body)
        assert_victim_served(victim)
        assert_busy_refusals(attacks, "image_decode_busy")
        assert any(a[0] == 200 for a in attacks)  # the uploads that got the slot were served
