"""Which addresses a user-supplied URL may reach (SSRF), for ``vsearch.serving.safe_fetch``.

An address policy says why an address must not be contacted, or None. The default
(``default_policy``) refuses loopback, private, link-local, multicast, reserved,
unspecified, shared (CGNAT) and cloud-metadata addresses. An IPv6 address that
embeds an IPv4 address (IPv4-mapped, 6to4, NAT64, Teredo, IPv4-compatible) is
judged by the IPv4 address it leads to, by the same rules (``destinations``).

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

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AddressPolicy = Callable[[IPAddress, int], str | None]

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052, the well-known prefix
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215, local-use
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291, deprecated


def destinations(ip: IPAddress) -> list[tuple[IPAddress, str]]:
    """The addresses a connection to ``ip`` reaches, each with the form that embeds it ("").

    A connection to an IPv6 address that embeds an IPv4 address ends at that IPv4
    address (the kernel for IPv4-mapped, a relay for 6to4 and Teredo, a gateway for
    NAT64), so that address is what is judged. Local-use NAT64 and IPv4-compatible
    addresses are judged as themselves too: both are reserved, never public.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        return [(ip, "")]
    if ip.ipv4_mapped is not None:
        return [(ip.ipv4_mapped, "IPv4-mapped")]
    if ip.sixtofour is not None:
        return [(ip.sixtofour, "6to4")]
    if ip.teredo is not None:
        server, client = ip.teredo
        return [(server, "Teredo server"), (client, "Teredo client")]
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    if ip in _NAT64:
        return [(low32, "NAT64")]
    if ip in _NAT64_LOCAL:  # the IPv4 bits sit at the end for a /96 prefix, the usual one
        return [(low32, "local-use NAT64"), (ip, "")]
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are not IPv4-compatible
        return [(low32, "IPv4-compatible"), (ip, "")]
    return [(ip, "")]


def _refusal(ip: IPAddress) -> str | None:
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


def default_policy(ip: IPAddress, port: int) -> str | None:
    """Why ``ip`` must not be contacted, or None when every address it reaches is public."""
    for target, form in destinations(ip):
        reason = _refusal(target)
        if reason is not None:
            return f"{reason} ({form} of {target})" if form else reason
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
        """Whether ``ip``, an address ``host`` resolved to, is trusted: never when it is or
        embeds a never-fetched address; when ``host`` is listed; when ``ip`` or every
        address it reaches (``destinations``) is in a listed network."""
        reached = [target for target, _ in destinations(ip)]
        if any(a in METADATA_ADDRESSES or a.is_unspecified or a.is_multicast for a in reached):
            return False
        if _normal_host(host) in self.names:
            return True
        return any(ip in net for net in self.networks) or all(
            any(a in net for net in self.networks) for a in reached
        )
