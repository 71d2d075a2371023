"""HTTP connections held to one deadline, to addresses checked beforehand.

``vsearch.serving.safe_fetch`` resolves and checks a host's addresses, then connects
only to those (``PinnedHTTP``/``PinnedHTTPS``: no second DNS lookup, TLS still verified
against the host name). Every blocking step of a fetch waits only what is left of its
one ``Deadline``.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any


class DeadlinePassed(TimeoutError):
    """The fetch's time limit ran out (a TimeoutError, as a socket timeout is)."""


class Deadline:
    """One time limit for a whole fetch: each blocking step may wait only what is left."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._at = time.monotonic() + timeout_s

    def remaining(self) -> float:
        left = self._at - time.monotonic()
        if left <= 0:
            raise DeadlinePassed(f"took longer than {self.timeout_s:g}s")
        return left


# A socket timeout bounds each call, not the fetch: http.client's buffered reads call
# recv_into until a line or a buffer is full, so a server sending a byte every 0.5 s never
# trips a 5 s timeout. These sockets set the timeout to what is left before every call.
class DeadlineSocket(socket.socket):
    deadline: Deadline

    def connect(self, *args: Any) -> None:
        self.settimeout(self.deadline.remaining())
        super().connect(*args)

    def recv(self, *args: Any) -> bytes:
        self.settimeout(self.deadline.remaining())
        return super().recv(*args)

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        self.settimeout(self.deadline.remaining())
        return super().recv_into(*args, **kwargs)

    def send(self, *args: Any) -> int:
        self.settimeout(self.deadline.remaining())
        return super().send(*args)

    def sendall(self, *args: Any) -> None:
        self.settimeout(self.deadline.remaining())
        super().sendall(*args)


class DeadlineSSLSocket(ssl.SSLSocket):
    """The TLS side (``recv``, ``recv_into`` and ``sendall`` go through these)."""

    deadline: Deadline

    def do_handshake(self, block: bool = False) -> None:
        self.settimeout(self.deadline.remaining())
        super().do_handshake(block)

    def read(self, len: int = 1024, buffer: Any = None) -> bytes:
        self.settimeout(self.deadline.remaining())
        return super().read(len, buffer)

    def send(self, data: Any, flags: int = 0) -> int:
        self.settimeout(self.deadline.remaining())
        return super().send(data, flags)


def connect_first(addresses: Sequence[str], port: int, deadline: Deadline) -> socket.socket:
    """A connection to the first of ``addresses`` (every one checked) that accepts."""
    error: OSError = OSError("no address to connect to")
    for address in addresses:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        )[0]
        sock = DeadlineSocket(family, kind, proto)
        sock.deadline = deadline
        try:
            sock.connect(sockaddr)
            return sock
        except DeadlinePassed:
            sock.close()
            raise
        except OSError as e:
            sock.close()
            error = e
    raise error


class PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addresses: Sequence[str], deadline: Deadline) -> None:
        super().__init__(host, port)
        self._addresses, self._deadline = addresses, deadline

    def connect(self) -> None:
        self.sock = connect_first(self._addresses, self.port, self._deadline)


class PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, addresses: Sequence[str], deadline: Deadline) -> None:
        self._tls = ssl.create_default_context()
        self._tls.sslsocket_class = DeadlineSSLSocket
        super().__init__(host, port, context=self._tls)
        self._addresses, self._deadline = addresses, deadline

    def connect(self) -> None:
        sock = connect_first(self._addresses, self.port, self._deadline)
        tls = self._tls.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
        assert isinstance(tls, DeadlineSSLSocket)
        tls.deadline = self._deadline
        self.sock = tls  # closed by close(), also when the handshake fails
        tls.do_handshake()
