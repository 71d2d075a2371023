"""Fetch a user-supplied URL without letting it reach inside the network (SSRF).

Every hop (the URL and each redirect) is checked the same way:

1. only ``http`` and ``https``, no credentials in the URL;
2. the host name is resolved once, and *every* address it resolves to must pass
   the address policy — by default loopback, private, link-local, multicast,
   reserved, unspecified, shared (CGNAT) and cloud-metadata addresses are
   refused — unless the trusted hosts admit it. Both live in
   ``vsearch.serving.address_policy`` (re-exported here), which also says how an IPv6
   address that embeds an IPv4 address is judged;
3. the connection goes to an address that was checked (no second DNS lookup,
   so DNS rebinding between check and connect is impossible); TLS still
   verifies the certificate against the host name;
4. size (Content-Length and the bytes actually read) is bounded, and the time
   limit is one deadline for the whole fetch: every DNS lookup, connection, TLS
   handshake, header and body read of every hop ends by it, so a server that
   sends a byte at a time cannot hold the caller past it.

The path and query are sent percent-encoded as UTF-8 (``/café.jpg`` is fetched
as ``/caf%C3%A9.jpg``, as browsers do); a URL that cannot be encoded is refused.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, quote, urljoin, urlsplit

from vsearch.serving.address_policy import (
    METADATA_ADDRESSES,
    AddressPolicy,
    IPAddress,
    IPNetwork,
    TrustedHosts,
    allow_also,
    default_policy,
    destinations,
)

__all__ = [
    "METADATA_ADDRESSES",
    "AddressPolicy",
    "FetchError",
    "FetchRefused",
    "Fetched",
    "IPAddress",
    "IPNetwork",
    "Resolver",
    "TrustedHosts",
    "allow_also",
    "default_policy",
    "destinations",
    "fetch_url",
    "system_resolver",
]

Resolver = Callable[[str, int], list[str]]

_REDIRECTS = {301, 302, 303, 307, 308}
_NO_TRUSTED_HOSTS = TrustedHosts()


class FetchError(ValueError):
    """The URL could not be fetched; the message says why (safe to show the caller)."""


class FetchRefused(FetchError):
    """The URL, or a redirect, points somewhere the policy refuses."""


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Fetched:
    url: str  # the final URL, after redirects
    content_type: str
    data: bytes


class _DeadlinePassed(TimeoutError):
    """The fetch's time limit ran out (a TimeoutError, as a socket timeout is)."""


class _Deadline:
    """One time limit for a whole fetch: each blocking step may wait only what is left."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._at = time.monotonic() + timeout_s

    def remaining(self) -> float:
        left = self._at - time.monotonic()
        if left <= 0:
            raise _DeadlinePassed(f"took longer than {self.timeout_s:g}s")
        return left


# A socket timeout bounds each call, not the fetch: http.client's buffered reads call
# recv_into until a line or a buffer is full, so a server sending a byte every 0.5 s never
# trips a 5 s timeout. These sockets set the timeout to what is left before every call.
class _DeadlineSocket(socket.socket):
    deadline: _Deadline

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


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The TLS side (``recv``, ``recv_into`` and ``sendall`` go through these)."""

    deadline: _Deadline

    def do_handshake(self, block: bool = False) -> None:
        self.settimeout(self.deadline.remaining())
        super().do_handshake(block)

    def read(self, len: int = 1024, buffer: Any = None) -> bytes:
        self.settimeout(self.deadline.remaining())
        return super().read(len, buffer)

    def send(self, data: Any, flags: int = 0) -> int:
        self.settimeout(self.deadline.remaining())
        return super().send(data, flags)


def _connect(addresses: Sequence[str], port: int, deadline: _Deadline) -> socket.socket:
    """A connection to the first of ``addresses`` (every one checked) that accepts."""
    error: OSError = OSError("no address to connect to")
    for address in addresses:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        )[0]
        sock = _DeadlineSocket(family, kind, proto)
        sock.deadline = deadline
        try:
            sock.connect(sockaddr)
            return sock
        except _DeadlinePassed:
            sock.close()
            raise
        except OSError as e:
            sock.close()
            error = e
    raise error


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addresses: Sequence[str], deadline: _Deadline) -> None:
        super().__init__(host, port)
        self._addresses, self._deadline = addresses, deadline

    def connect(self) -> None:
        self.sock = _connect(self._addresses, self.port, self._deadline)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, addresses: Sequence[str], deadline: _Deadline) -> None:
        self._tls = ssl.create_default_context()
        self._tls.sslsocket_class = _DeadlineSSLSocket
        super().__init__(host, port, context=self._tls)
        self._addresses, self._deadline = addresses, deadline

    def connect(self) -> None:
        sock = _connect(self._addresses, self.port, self._deadline)
        tls = self._tls.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
        assert isinstance(tls, _DeadlineSSLSocket)
        tls.deadline = self._deadline
        self.sock = tls  # closed by close(), also when the handshake fails
        tls.do_handshake()


_LOOKUPS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="safe-fetch-dns")


def _resolve(resolver: Resolver, host: str, port: int, deadline: _Deadline) -> list[str]:
    """``resolver(host, port)``, waited for only until the deadline: getaddrinfo has no
    timeout of its own, and a slow name server is as easy to arrange as a slow web server."""
    left = deadline.remaining()
    lookup = _LOOKUPS.submit(resolver, host, port)
    try:
        return lookup.result(timeout=left)
    except TimeoutError:
        lookup.cancel()
        raise _DeadlinePassed(f"resolving {host!r} took too long") from None


# Printable ASCII that may stay as it is in a request target (the WHATWG URL standard's
# path and query percent-encode sets); everything else is sent as %XX of its UTF-8 bytes.
_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"#<>?`{}')
_QUERY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "\"#<>'")


def _request_target(parts: SplitResult) -> str:
    """The path and query of ``parts`` as sent on the request line: ASCII, percent-encoded.

    Raises FetchRefused when they cannot be encoded (lone surrogates).
    """
    try:
        path = quote(parts.path or "/", safe=_PATH_SAFE)
        query = quote(parts.query, safe=_QUERY_SAFE)
    except UnicodeError:
        raise FetchRefused("the URL's path or query is not valid Unicode") from None
    return f"{path}?{query}" if query else path


def _location(value: str) -> str:
    """A Location header as text: http.client reads headers as Latin-1, servers send UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _check_hop(
    url: str, policy: AddressPolicy, resolver: Resolver, trusted: TrustedHosts, deadline: _Deadline
) -> tuple[SplitResult, str, int, list[str]]:
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:  # "http://[::1", "http://h:99999"
        raise FetchRefused(f"not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise FetchRefused(f"only http and https URLs are fetched, not {parts.scheme or 'none'!r}")
    if parts.username is not None or parts.password is not None:
        raise FetchRefused("URLs with credentials are refused")
    host = parts.hostname
    if not host:
        raise FetchRefused("the URL has no host")
    try:
        addresses = _resolve(resolver, host, port, deadline)
    except _DeadlinePassed:
        raise
    except (OSError, UnicodeError):
        raise FetchError(f"cannot resolve host {host!r}") from None
    if not addresses:
        raise FetchError(f"host {host!r} resolves to no address")
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if trusted.admits(host, ip):
            continue
        reason = policy(ip, port)
        if reason is not None:
            raise FetchRefused(f"{host} resolves to {ip}, {reason}")
    return parts, host, port, addresses


def fetch_url(
    url: str,
    *,
    max_bytes: int,
    timeout_s: float,
    max_redirects: int = 3,
    policy: AddressPolicy = default_policy,
    resolver: Resolver = system_resolver,
    trusted: TrustedHosts = _NO_TRUSTED_HOSTS,
) -> Fetched:
    """GET ``url`` under the rules in the module docstring; raise FetchError otherwise.

    ``timeout_s`` bounds the whole fetch, redirects included. ``trusted`` admits its
    hosts beside what ``policy`` allows, on every hop.
    """
    deadline = _Deadline(timeout_s)
    try:
        for _hop in range(max_redirects + 1):
            parts, host, port, addresses = _check_hop(url, policy, resolver, trusted, deadline)
            target = _request_target(parts)
            cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
            conn = cls(host, port, addresses, deadline)
            try:
                conn.request("GET", target, headers={"User-Agent": "vsearch", "Accept": "image/*"})
                resp = conn.getresponse()
                if resp.status in _REDIRECTS:
                    location = resp.getheader("Location")
                    if not location:
                        raise FetchError(f"redirect {resp.status} without a Location")
                    url = urljoin(url, _location(location))
                    continue
                if resp.status != 200:
                    raise FetchError(f"the image URL answered HTTP {resp.status}")
                content_type = resp.getheader("Content-Type", "")
                return Fetched(url, content_type, _read(resp, max_bytes))
            finally:
                conn.close()
    except TimeoutError:  # the deadline, whichever step reached it
        raise FetchError(f"fetching the image URL took longer than {timeout_s:g}s") from None
    except (OSError, http.client.HTTPException, UnicodeError) as e:  # SSLError: an OSError
        raise FetchError(f"fetching the image URL failed: {type(e).__name__}") from None
    raise FetchRefused(f"more than {max_redirects} redirects")


def _read(resp: http.client.HTTPResponse, max_bytes: int) -> bytes:
    length = resp.getheader("Content-Length", "")
    if re.fullmatch(r"[0-9]+", length) and int(length) > max_bytes:
        raise FetchError(f"the image is {length} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    while chunk := resp.read(min(1 << 16, max_bytes + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"the image is larger than the limit of {max_bytes} bytes")
    return b"".join(chunks)
