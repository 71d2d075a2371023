"""Fetch a user-supplied URL without letting it reach inside the network (SSRF).

Every hop (the URL and each redirect) is checked the same way:

1. only ``http`` and ``https``, no credentials in the URL;
2. the host name is resolved once, and *every* address it resolves to must pass
   the address policy — by default loopback, private, link-local, multicast,
   reserved, unspecified, shared (CGNAT) and cloud-metadata addresses are
   refused — unless the trusted hosts admit it. Both live in
   ``vsearch.serving.address_policy`` (re-exported here), which also says how an IPv6
   address that embeds an IPv4 address is judged. Lookups run on a small pool
   (``vsearch.serving.dns_lookups``) where names of one silent name server cannot hold
   every thread, and a lookup finding none free is refused at once (``FetchBusy``);
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
from dataclasses import dataclass
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
from vsearch.serving.deadline_http import Deadline, DeadlinePassed, PinnedHTTP, PinnedHTTPS
from vsearch.serving.dns_lookups import LookupPool, LookupsBusy, Resolver

__all__ = [
    "METADATA_ADDRESSES",
    "AddressPolicy",
    "FetchBusy",
    "FetchError",
    "FetchRefused",
    "Fetched",
    "IPAddress",
    "IPNetwork",
    "LookupPool",
    "Resolver",
    "TrustedHosts",
    "allow_also",
    "default_policy",
    "destinations",
    "fetch_url",
    "system_resolver",
]

_REDIRECTS = {301, 302, 303, 307, 308}
_NO_TRUSTED_HOSTS = TrustedHosts()


class FetchError(ValueError):
    """The URL could not be fetched; the message says why (safe to show the caller)."""


class FetchBusy(FetchError):
    """Refused for now, not for what the URL is: every slot it needs is taken (a 503)."""


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


LOOKUPS = LookupPool(workers=8)


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
    url: str,
    policy: AddressPolicy,
    resolver: Resolver,
    trusted: TrustedHosts,
    deadline: Deadline,
    lookups: LookupPool,
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
        addresses = lookups.resolve(resolver, host, port, deadline)
    except DeadlinePassed:
        raise
    except LookupsBusy as e:
        raise FetchBusy(f"cannot resolve {host!r} now: {e}; retry shortly") from None
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
    lookups: LookupPool = LOOKUPS,
) -> Fetched:
    """GET ``url`` under the rules in the module docstring; raise FetchError otherwise.

    ``timeout_s`` bounds the whole fetch, redirects included. ``trusted`` admits its
    hosts beside what ``policy`` allows, on every hop.
    """
    deadline = Deadline(timeout_s)
    try:
        for _hop in range(max_redirects + 1):
            parts, host, port, addresses = _check_hop(
                url, policy, resolver, trusted, deadline, lookups
            )
            target = _request_target(parts)
            cls = PinnedHTTPS if parts.scheme == "https" else PinnedHTTP
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
