"""Names whose name server never answers cannot hold every DNS lookup of the image fetcher.

No real silent name server can run in a test, so the resolver is a stub that blocks (as
``getaddrinfo`` does while a name server stays silent) until the test ends; names it
knows it answers at once. The fetches go through the real fetcher and the real lookup
pool (``vsearch.serving.dns_lookups``), to a real server on loopback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.snapshots import publish_series
from tests.service.conftest import AppFactory, HashEncoder
from tests.service.test_safe_fetch import Server, png_bytes
from vsearch.serving.safe_fetch import FetchError, TrustedHosts, fetch_url
from vsearch.storage import LocalStore

GOOD = "images.test"
TRUSTED = TrustedHosts.parse(GOOD)
DEADLINE_S = 3.0


class SilentNameServer:
    """A resolver: names under ``silent`` hang until ``release``, GOOD is 127.0.0.1."""

    def __init__(self, silent: tuple[str, ...]) -> None:
        self.silent, self.release = silent, threading.Event()
        self.waiting = 0

    def __call__(self, host: str, port: int) -> list[str]:
        if host.endswith(self.silent):
            self.waiting += 1
            self.release.wait(60)
            raise OSError(f"{host}: no answer")
        if host == GOOD:
            return ["127.0.0.1"]
        raise OSError(f"unknown host {host}")


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server({"/cat.png": (200, {"Content-Type": "image/png"}, png_bytes(), 0.0)})
    yield server
    server.close()


def hold_lookups(resolver: SilentNameServer, hosts: list[str], port: int) -> list[Exception]:
    """Fetch ``hosts`` at once in background threads; returns their errors as they come."""
    errors: list[Exception] = []

    def one(host: str) -> None:
        try:
            fetch_url(f"http://{host}:{port}/x.png", max_bytes=1 << 20, timeout_s=DEADLINE_S,
                      resolver=resolver)  # fmt: skip
        except FetchError as e:
            errors.append(e)

    for host in hosts:
        threading.Thread(target=one, args=(host,), daemon=True).start()
    deadline = time.monotonic() + 2
    while resolver.waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # every fetch has asked for its lookup
    return errors


def timed_good_fetch(resolver: SilentNameServer, port: int) -> tuple[float, bytes | Exception]:
    started = time.monotonic()
    try:
        result: bytes | Exception = fetch_url(
            f"http://{GOOD}:{port}/cat.png", max_bytes=1 << 20, timeout_s=DEADLINE_S,
            resolver=resolver, trusted=TRUSTED,
        ).data  # fmt: skip
    except FetchError as e:
        result = e
    return time.monotonic() - started, result


def test_one_silent_name_server_cannot_hold_every_lookup(server: Server) -> None:
    """Sixteen names under one silent domain (more than the 8 lookup threads): a good
    name still resolves at once, and the extra silent lookups are refused at once."""
    resolver = SilentNameServer(("tarpit.example",))
    try:
        hosts = [f"n{i}.tarpit.example" for i in range(16)]
        errors = hold_lookups(resolver, hosts, server.port)
        seconds, result = timed_good_fetch(resolver, server.port)
        assert result == png_bytes(), result
        assert seconds < 1.0, f"a good name waited {seconds:.1f}s behind silent lookups"
        assert len(errors) >= 8 and all("retry shortly" in str(e) for e in errors), errors
    finally:
        resolver.release.set()
        time.sleep(0.2)


def test_when_every_lookup_thread_is_held_a_lookup_is_refused_at_once(
    server: Server, make_app: AppFactory, tmp_path: Path
) -> None:
    """Silent name servers of many domains can hold every thread; then a lookup is
    refused at once (in the service: a 503 with Retry-After), not queued behind them."""
    store = LocalStore(tmp_path / "store")
    publish_series(store, [1], n=50)
    client = make_app(store, ENCODER=HashEncoder(), IMAGE_FETCH_ALLOW=GOOD).test_client()
    resolver = SilentNameServer(tuple(f"silent{i}.example" for i in range(8)))
    try:
        hosts = [f"n{j}.silent{i}.example" for i in range(8) for j in range(2)]
        hold_lookups(resolver, hosts, server.port)
        seconds, result = timed_good_fetch(resolver, server.port)
        assert isinstance(result, FetchError) and type(result).__name__ == "FetchBusy", result
        assert seconds < 1.0, f"a refused lookup took {seconds:.1f}s"
        answer = client.post("/v1/search", json={"image_url": f"http://{GOOD}/cat.png"})
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        assert answer.json["error"]["code"] == "image_fetch_busy"
    finally:
        resolver.release.set()
        time.sleep(0.2)
