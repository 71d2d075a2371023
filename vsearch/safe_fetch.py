"""Fetch a user-supplied URL without letting it reach inside the network (SSRF).

Every hop (the URL and each redirect) is checked the same way:

1. only ``http`` and ``https``, no credentials in the URL;
2. the host name is resolved once, and *every* address it resolves to must pass
   the address policy — by default loopback, private, link-local, multicast,
   reserved, unspecified, shared (CGNAT) and cloud-metadata addresses are
   refused, IPv4-mapped IPv6 included;
3. the connection goes to the address that was checked (no second DNS lookup,
   so DNS rebinding between check and connect is impossible); TLS still
   verifies the certificate against the host name;
4. size (Content-Length and the bytes actually read) and total time are bounded.

The policy is a callable so that tests can allow one loopback server as a first
hop while everything else stays refused.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress, int], str | None]
Resolver = Callable[[str, int], list[str]]

_REDIRECTS = {301, 302, 303, 307, 308}
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)


class FetchError(ValueError):
    """The URL could not be fetched; the message says why (safe to show the caller)."""


class FetchRefused(FetchError):
    """The URL, or a redirect, points somewhere the policy refuses."""


def default_policy(ip: IPAddress, port: int) -> str | None:
    """Why ``ip`` must not be contacted, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for attribute, reason in (
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_unspecified", "an unspecified address"),
        ("is_reserved", "a reserved address"),
        ("is_private", "a private address"),
    ):
        if getattr(ip, attribute):
            return reason
    if not ip.is_global:
        return "not a globally routable address"
    return None


def allow_also(
    allowed: set[tuple[str, int]], base: AddressPolicy = default_policy
) -> AddressPolicy:
    """``base``, except that the exact (address, port) pairs in ``allowed`` pass."""

    def policy(ip: IPAddress, port: int) -> str | None:
        return None if (str(ip), port) in allowed else base(ip, port)

    return policy


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Fetched:
    url: str  # the final URL, after redirects
    content_type: str
    data: bytes


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _check_hop(url: str, policy: AddressPolicy, resolver: Resolver) -> tuple[Any, str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchRefused(f"only http and https URLs are fetched, not {parts.scheme or 'none'!r}")
    if parts.username is not None or parts.password is not None:
        raise FetchRefused("URLs with credentials are refused")
    host = parts.hostname
    if not host:
        raise FetchRefused("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise FetchRefused("the URL has an invalid port") from None
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError):
        raise FetchError(f"cannot resolve host {host!r}") from None
    if not addresses:
        raise FetchError(f"host {host!r} resolves to no address")
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        reason = policy(ip, port)
        if reason is not None:
            raise FetchRefused(f"{host} resolves to {ip}, {reason}")
    return parts, host, port, addresses[0]


def fetch_url(
    url: str,
    *,
    max_bytes: int,
    timeout_s: float,
    max_redirects: int = 3,
    policy: AddressPolicy = default_policy,
    resolver: Resolver = system_resolver,
) -> Fetched:
    """GET ``url`` under the rules in the module docstring; raise FetchError otherwise."""
    deadline = time.monotonic() + timeout_s
    for _hop in range(max_redirects + 1):
        parts, host, port, address = _check_hop(url, policy, resolver)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"fetching took longer than {timeout_s:g}s")
        cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        conn = cls(host, port, address, remaining)
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path, headers={"User-Agent": "vsearch", "Accept": "image/*"})
            resp = conn.getresponse()
            if resp.status in _REDIRECTS:
                location = resp.getheader("Location")
                if not location:
                    raise FetchError(f"redirect {resp.status} without a Location")
                url = urljoin(url, location)
                continue
            if resp.status != 200:
                raise FetchError(f"the image URL answered HTTP {resp.status}")
            return Fetched(
                url, resp.getheader("Content-Type", ""), _read(resp, conn, max_bytes, deadline)
            )
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            raise FetchError(f"fetching the image URL failed: {type(e).__name__}") from None
        finally:
            conn.close()
    raise FetchRefused(f"more than {max_redirects} redirects")


def _read(
    resp: http.client.HTTPResponse,
    conn: http.client.HTTPConnection,
    max_bytes: int,
    deadline: float,
) -> bytes:
    length = resp.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise FetchError(f"the image is {length} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("fetching the image took too long")
        if conn.sock is not None:
            conn.sock.settimeout(remaining)
        chunk = resp.read(min(1 << 16, max_bytes + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"the image is larger than the limit of {max_bytes} bytes")
