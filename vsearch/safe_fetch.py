"""Fetch a user-supplied URL without letting it reach inside the network (SSRF).

Every hop (the URL and each redirect) is checked the same way:

1. only ``http`` and ``https``, no credentials in the URL;
2. the host name is resolved once, and *every* address it resolves to must pass
   the address policy — by default loopback, private, link-local, multicast,
   reserved, unspecified, shared (CGNAT) and cloud-metadata addresses are
   refused, IPv4-mapped IPv6 included — unless the trusted hosts admit it (below);
3. the connection goes to an address that was checked (no second DNS lookup,
   so DNS rebinding between check and connect is impossible); TLS still
   verifies the certificate against the host name;
4. size (Content-Length and the bytes actually read) and total time are bounded.

Trusted hosts (``TrustedHosts``, the service's ``image_fetch_allow``) let an
operator admit internal image servers: a host *name* in the list may resolve to
private addresses (matched exactly, case-insensitively: no wildcards, no
subdomains), and a *CIDR* admits every address in it, whatever name led there.
Any other name still has to resolve to public addresses, so a public name
pointed at an internal address is refused unless that address is in a listed
CIDR. Cloud-metadata, unspecified and multicast addresses are never admitted.

The policy is a callable so that tests can allow one loopback server as a first
hop while everything else stays refused.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
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


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def default_policy(ip: IPAddress, port: int) -> str | None:
    """Why ``ip`` must not be contacted, or None when it is a public address."""
    ip = _unmapped(ip)
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


_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def _normal_host(host: str) -> str:
    return host.strip().lower().removesuffix(".")


@dataclass(frozen=True)
class TrustedHosts:
    """Host names and networks admitted beside public addresses; see the module docstring."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> TrustedHosts:
        """From a comma-separated list: ``images.internal, 10.0.0.0/8, 192.168.4.20``.

        A bare address is a one-address network. Raises ValueError, naming the
        entry, for anything else: wildcards, schemes, ports, host bits set in a CIDR.
        """
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in spec.split(","):
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=True))
                continue
            except ValueError as e:
                if "/" in entry:
                    raise ValueError(f"{entry!r} is neither a host name nor a CIDR: {e}") from None
            name = _normal_host(entry)
            if len(name) > 253 or not _HOST_NAME.fullmatch(name):
                raise ValueError(
                    f"{entry!r} is neither a host name nor a CIDR (give exact names: "
                    "no wildcards, schemes or ports)"
                )
            names.add(name)
        return cls(frozenset(names), tuple(networks))

    def admits(self, host: str, ip: IPAddress) -> bool:
        """Whether ``ip``, an address ``host`` resolved to, is trusted."""
        ip = _unmapped(ip)
        if ip in METADATA_ADDRESSES or ip.is_unspecified or ip.is_multicast:
            return False
        if _normal_host(host) in self.names:
            return True
        return any(ip in network for network in self.networks)


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Fetched:
    url: str  # the final URL, after redirects
    content_type: str
    data: bytes


def _connect(addresses: Sequence[str], port: int, timeout: float | None) -> socket.socket:
    """A connection to the first of ``addresses`` (every one checked) that accepts."""
    error: OSError = OSError("no address to connect to")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as e:
            error = e
    raise error


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addresses: Sequence[str], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = _connect(self._addresses, self.port, self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, addresses: Sequence[str], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._addresses = addresses

    def connect(self) -> None:
        sock = _connect(self._addresses, self.port, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _check_hop(
    url: str, policy: AddressPolicy, resolver: Resolver, trusted: TrustedHosts
) -> tuple[Any, str, int, list[str]]:
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
    trusted: TrustedHosts = TrustedHosts(),
) -> Fetched:
    """GET ``url`` under the rules in the module docstring; raise FetchError otherwise.

    ``trusted`` admits its hosts beside what ``policy`` allows, on every hop.
    """
    deadline = time.monotonic() + timeout_s
    for _hop in range(max_redirects + 1):
        parts, host, port, addresses = _check_hop(url, policy, resolver, trusted)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"fetching took longer than {timeout_s:g}s")
        cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        conn = cls(host, port, addresses, remaining)
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
