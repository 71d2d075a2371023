"""The image fetcher's one deadline holds inside the TLS handshake: a server that accepts
the connection and reads the ClientHello, then never answers it (or drips a ServerHello
record a byte at a time), cannot hold a fetch past its time limit."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from vsearch.serving.safe_fetch import FetchError, allow_also, fetch_url

LIMIT_S = 0.6
SLACK_S = 1.0  # scheduling on a busy CI box
HOLD_S = 6.0  # how long the server holds each connection before hanging up
# A TLS handshake record announcing 16 KiB: the client keeps reading until it is whole.
RECORD_HEAD = b"\x16\x03\x03\x40\x00"


class StalledTLSServer:
    """Accepts TCP on loopback, reads the client's first bytes (its ClientHello), then
    either says nothing (``drip=False``) or sends a handshake record's header and one byte
    of it every 50 ms (``drip=True``), for ``HOLD_S`` seconds, then hangs up."""

    def __init__(self, *, drip: bool) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.hellos: list[bytes] = []
        self.stop = threading.Event()
        self.drip = drip
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.hold, args=(conn,), daemon=True).start()

    def hold(self, conn: socket.socket) -> None:
        until = time.monotonic() + HOLD_S
        with conn:
            try:
                conn.settimeout(HOLD_S)
                self.hellos.append(conn.recv(4096))
                if self.drip:
                    conn.sendall(RECORD_HEAD)
                while not self.stop.wait(0.05) and time.monotonic() < until:
                    if self.drip:
                        conn.sendall(b"\x00")
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.fixture(params=["silent", "drip"])
def server(request: pytest.FixtureRequest) -> Iterator[StalledTLSServer]:
    s = StalledTLSServer(drip=request.param == "drip")
    yield s
    s.close()


def test_a_tls_handshake_that_never_completes_ends_at_the_deadline(
    server: StalledTLSServer,
) -> None:
    def resolver(host: str, port: int) -> list[str]:
        assert host == "images.test"
        return ["127.0.0.1"]

    t = time.monotonic()
    with pytest.raises(FetchError, match=f"took longer than {LIMIT_S:g}s"):
        fetch_url(
            f"https://images.test:{server.port}/img",
            max_bytes=4096,
            timeout_s=LIMIT_S,
            policy=allow_also({("127.0.0.1", server.port)}),
            resolver=resolver,
        )
    elapsed = time.monotonic() - t
    # The fetch got as far as the handshake (a ClientHello: a TLS handshake record)...
    assert len(server.hellos) == 1 and server.hellos[0][:1] == b"\x16", server.hellos
    # ...and gave up by its deadline, not when the server hung up.
    assert elapsed < LIMIT_S + SLACK_S < HOLD_S, elapsed
