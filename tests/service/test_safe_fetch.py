"""SSRF: image URLs may not reach loopback, metadata or private addresses, not even by redirect
or through an IPv6 form embedding an IPv4 address, unless the operator trusts the host
(VSEARCH_IMAGE_FETCH_ALLOW); the time limit holds against servers that answer a byte at a
time; non-ASCII paths are fetched percent-encoded."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import re
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import AppFactory, HashEncoder
from vsearch.serving.safe_fetch import (
    FetchError,
    FetchRefused,
    TrustedHosts,
    allow_also,
    default_policy,
    fetch_url,
)


class Server:
    """A loopback HTTP server that counts the requests it gets."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes, float]]) -> None:
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits.append(self.path)
                status, headers, body, delay = routes.get(self.path, (404, {}, b"", 0.0))
                time.sleep(delay)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def target() -> Iterator[Server]:
    server = Server({"/secret": (200, {"Content-Type": "image/png"}, b"internal data", 0.0)})
    yield server
    server.close()


@pytest.fixture
def first_hop(target: Server) -> Iterator[Server]:
    server = Server(
        {
            "/img": (200, {"Content-Type": "image/png"}, b"PNGDATA", 0.0),
            "/to-loopback": (302, {"Location": target.url("/secret")}, b"", 0.0),
            "/to-metadata": (
                301,
                {"Location": "http://169.254.169.254/latest/meta-data/"},
                b"",
                0.0,
            ),
            "/relative": (302, {"Location": "/img"}, b"", 0.0),
            "/big": (200, {}, b"x" * 5000, 0.0),
            "/slow": (200, {}, b"late", 2.0),
        }
    )
    yield server
    server.close()


def fetch(url: str, **kw: Any) -> Any:
    return fetch_url(
        url, max_bytes=kw.pop("max_bytes", 4096), timeout_s=kw.pop("timeout_s", 2.0), **kw
    )


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "[::1]", "2130706433", "0.0.0.0", "[::ffff:127.0.0.1]"],
)
def test_loopback_in_any_spelling_is_refused_before_connecting(target: Server, host: str) -> None:
    with pytest.raises(FetchRefused):
        fetch(f"http://{host}:{target.port}/secret")
    assert target.hits == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://user:pw@example.com/",
    ],
)
def test_metadata_private_and_odd_urls_are_refused(url: str) -> None:
    with pytest.raises(FetchRefused):
        fetch(url)


def test_a_redirect_to_loopback_is_refused_even_from_an_allowed_first_hop(
    first_hop: Server, target: Server
) -> None:
    policy = allow_also({("127.0.0.1", first_hop.port)})
    assert fetch(first_hop.url("/img"), policy=policy).data == b"PNGDATA"  # the first hop is fine
    assert fetch(first_hop.url("/relative"), policy=policy).url == first_hop.url("/img")
    with pytest.raises(FetchRefused, match="loopback"):
        fetch(first_hop.url("/to-loopback"), policy=policy)
    with pytest.raises(FetchRefused, match="metadata"):
        fetch(first_hop.url("/to-metadata"), policy=policy)
    assert target.hits == []


def test_size_and_time_are_bounded(first_hop: Server) -> None:
    policy = allow_also({("127.0.0.1", first_hop.port)})
    with pytest.raises(FetchError, match="limit"):
        fetch(first_hop.url("/big"), policy=policy, max_bytes=1000)
    t = time.monotonic()
    with pytest.raises(FetchError):
        fetch(first_hop.url("/slow"), policy=policy, timeout_s=0.3)
    assert time.monotonic() - t < 1.5


def test_the_resolved_address_is_the_one_connected_to(first_hop: Server) -> None:
    """A name that resolves to the allowed address is fetched from it, with no second lookup."""
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    policy = allow_also({("127.0.0.1", first_hop.port)})
    url = f"http://images.example:{first_hop.port}/img"
    assert fetch(url, policy=policy, resolver=resolver).data == b"PNGDATA"
    assert lookups == ["images.example"]
    assert default_policy.__name__ == "default_policy"


def test_the_search_api_answers_a_refused_url_with_a_400(
    first_hop: Server, target: Server, local_store: Any, make_app: AppFactory
) -> None:
    from tests.fixtures.snapshots import publish_series

    publish_series(local_store, [1], n=50)
    policy = allow_also({("127.0.0.1", first_hop.port)})
    client = make_app(local_store, ENCODER=HashEncoder(), FETCH_POLICY=policy).test_client()
    for url in (target.url("/secret"), first_hop.url("/to-loopback"), "http://169.254.169.254/"):
        r = client.post("/v1/search", json={"image_url": url})
        assert r.status_code == 400 and r.json["error"]["code"] == "image_url_refused", r.json
    assert target.hits == []


# --- trusted hosts (VSEARCH_IMAGE_FETCH_ALLOW) ---


def png_bytes(seed: int = 0) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype="uint8")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def image_server() -> Iterator[Server]:
    server = Server({"/cat.png": (200, {"Content-Type": "image/png"}, png_bytes(), 0.0)})
    yield server
    server.close()


def resolving(table: dict[str, str]) -> Any:
    """A resolver answering from ``table``; any other host fails to resolve."""

    def resolver(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"unknown host {host}")
        return [table[host]]

    return resolver


def test_trusted_hosts_parse_exact_names_addresses_and_cidrs() -> None:
    trusted = TrustedHosts.parse(" Images.Internal. , 10.0.0.0/8,192.168.4.20, [::1] ,")
    assert trusted.names == {"images.internal"}
    assert [str(n) for n in trusted.networks] == ["10.0.0.0/8", "192.168.4.20/32", "::1/128"]
    assert TrustedHosts.parse("") == TrustedHosts() == TrustedHosts.parse(" , ")


@pytest.mark.parametrize(
    "entry",
    ["*.internal", "http://images.internal", "images.internal:8080", "10.0.0.1/8", "a b", "é.x"],
)
def test_trusted_hosts_refuse_anything_but_exact_names_and_cidrs(entry: str) -> None:
    with pytest.raises(ValueError, match="neither a host name nor a CIDR"):
        TrustedHosts.parse(f"images.internal,{entry}")


def test_a_trusted_name_may_resolve_to_a_private_address_and_no_other_name_may(
    image_server: Server,
) -> None:
    """The check is still on the address resolved once and connected to; only the name in the
    list lifts the private-address rule, not a subdomain, a suffix trick or another name."""
    loopback = "127.0.0.1"
    resolver = resolving(
        {
            "images.internal.": loopback,  # urlsplit lower-cases the host, keeps the dot
            "cdn.images.internal": loopback,
            "images.internal.evil.example": loopback,
            "evil.example": loopback,
        }
    )
    trusted = TrustedHosts.parse("images.internal")
    url = f"http://IMAGES.internal.:{image_server.port}/cat.png"
    assert fetch(url, resolver=resolver, trusted=trusted).data == png_bytes()
    for host in ("cdn.images.internal", "images.internal.evil.example", "evil.example"):
        with pytest.raises(FetchRefused, match="loopback"):
            fetch(f"http://{host}:{image_server.port}/cat.png", resolver=resolver, trusted=trusted)
    assert image_server.hits == ["/cat.png"]


def test_a_trusted_cidr_admits_its_addresses_whatever_the_name(image_server: Server) -> None:
    resolver = resolving({"anything.example": "127.0.0.1", "elsewhere.example": "127.0.0.2"})
    trusted = TrustedHosts.parse("127.0.0.1/32")
    url = f"http://anything.example:{image_server.port}/cat.png"
    assert fetch(url, resolver=resolver, trusted=trusted).data == png_bytes()
    with pytest.raises(FetchRefused, match=r"127\.0\.0\.2, a loopback"):
        fetch(f"http://elsewhere.example:{image_server.port}/", resolver=resolver, trusted=trusted)


def test_trust_never_reaches_metadata_addresses_or_redirects_elsewhere(
    first_hop: Server, target: Server
) -> None:
    resolver = resolving(
        {
            "images.internal": "169.254.169.254",
            "hop.internal": "127.0.0.1",
            "127.0.0.1": "127.0.0.1",
        }
    )
    trusted = TrustedHosts.parse("images.internal, hop.internal, 169.254.0.0/16")
    with pytest.raises(FetchRefused, match="metadata"):
        fetch("http://images.internal/latest/meta-data/", resolver=resolver, trusted=trusted)
    # A trusted host's redirect to a loopback URL whose host is not trusted is refused.
    hop = f"http://hop.internal:{first_hop.port}"
    assert fetch(f"{hop}/img", resolver=resolver, trusted=trusted).data == b"PNGDATA"
    with pytest.raises(FetchRefused, match=r"127\.0\.0\.1 resolves to 127\.0\.0\.1, a loopback"):
        fetch(f"{hop}/to-loopback", resolver=resolver, trusted=trusted)
    assert target.hits == []


def test_the_search_api_fetches_from_trusted_hosts_only(
    image_server: Server, local_store: Any, make_app: AppFactory
) -> None:
    """VSEARCH_IMAGE_FETCH_ALLOW through /v1/search: refused by default, fetched when the
    network or the host name is listed, still refused for a loopback URL of another host."""
    from tests.fixtures.snapshots import publish_series

    publish_series(local_store, [1], n=50)
    by_ip = image_server.url("/cat.png")
    by_name = f"http://localhost:{image_server.port}/cat.png"

    def search(app_name: str, allow: str | None, url: str) -> Any:
        config = {} if allow is None else {"IMAGE_FETCH_ALLOW": allow}
        app = make_app(local_store, app_name, ENCODER=HashEncoder(), **config)
        return app.test_client().post("/v1/search", json={"image_url": url, "k": 3})

    r = search("default", None, by_ip)
    assert r.status_code == 400 and r.json["error"]["code"] == "image_url_refused", r.json
    assert image_server.hits == []

    r = search("cidr", "127.0.0.1/32", by_ip)
    assert r.status_code == 200 and len(r.json["hits"]) == 3, r.json
    assert image_server.hits == ["/cat.png"]

    r = search("name", "localhost", by_name)
    assert r.status_code == 200 and len(r.json["hits"]) == 3, r.json
    r = search("name-other-url", "localhost", by_ip)
    assert r.status_code == 400 and r.json["error"]["code"] == "image_url_refused", r.json
    assert "loopback" in r.json["error"]["message"]
    assert image_server.hits == ["/cat.png", "/cat.png"]


def test_an_invalid_allow_list_stops_the_app_from_starting(
    local_store: Any, make_app: AppFactory
) -> None:
    from vsearch.config import ConfigError

    with pytest.raises(ConfigError, match=r"image_fetch_allow: '\*\.internal'"):
        make_app(local_store, IMAGE_FETCH_ALLOW="images.internal,*.internal")


# --- one deadline for the whole fetch ---


class DripServer:
    """A loopback server answering every request with ``response``: ``at_once`` bytes at once,
    then one byte every ``interval`` seconds, as a server holding a fetch open would."""

    def __init__(
        self,
        response: bytes,
        *,
        at_once: int = 0,
        interval: float = 0.05,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.request_lines: list[bytes] = []
        stop = self._stop = threading.Event()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(OSError):
                    sock = self.request
                    if tls is not None:
                        sock = tls.wrap_socket(sock, server_side=True)
                    head = b""
                    while b"\r\n\r\n" not in head:
                        chunk = sock.recv(4096)
                        if not chunk:
                            return
                        head += chunk
                    outer.request_lines.append(head.split(b"\r\n", 1)[0])
                    sock.sendall(response[:at_once])
                    for i in range(at_once, len(response)):
                        if stop.wait(interval):
                            return
                        sock.sendall(response[i : i + 1])

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


def response_bytes(body: bytes, *, pad: int = 0, extra: bytes = b"") -> tuple[bytes, int]:
    """A 200 answer with ``body``, and where its body starts (``pad``: a long header)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
    if pad:
        head += b"X-Pad: " + b"p" * pad + b"\r\n"
    head += extra or b"Content-Length: %d\r\n" % len(body)
    head += b"Connection: close\r\n\r\n"
    return head + body, len(head)


@contextlib.contextmanager
def drip(response: bytes, **kw: Any) -> Iterator[DripServer]:
    server = DripServer(response, **kw)
    try:
        yield server
    finally:
        server.close()


def self_signed(tmp_path: Path, host: str) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for ``host`` and the certificate to trust (SSL_CERT_FILE)."""
    from cryptography import x509  # a dependency of moto (dev extra)
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem, key_pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_pem, key_pem)
    return context, cert_pem


LIMIT_S = 0.6
SLACK_S = 1.0  # scheduling on a busy CI box; each drip below would run 5 s or more


def fetch_timed(url: str, port: int, **kw: Any) -> float:
    """Seconds until fetching ``url`` (allowed to the loopback ``port``) fails on the limit."""
    t = time.monotonic()
    with pytest.raises(FetchError, match=f"took longer than {LIMIT_S:g}s"):
        fetch(url, policy=allow_also({("127.0.0.1", port)}), timeout_s=LIMIT_S, **kw)
    return time.monotonic() - t


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_server_sending_a_byte_at_a_time_cannot_outlast_the_time_limit(where: str) -> None:
    """Regression: a socket timeout bounds each recv, and http.client's buffered reads recv
    until a line or a buffer is full; one byte every 0.5 s held a fetch 54.6 s against 5 s."""
    response, body_at = response_bytes(b"x" * 100, pad=100)
    with drip(response, at_once=body_at if where == "body" else 0) as server:
        elapsed = fetch_timed(f"http://127.0.0.1:{server.port}/img", server.port)
    assert elapsed < LIMIT_S + SLACK_S
    assert server.request_lines == [b"GET /img HTTP/1.1"]


def test_the_limit_holds_over_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS goes through the same deadline (the TLS socket's reads and handshake), and a
    server that answers at once is fetched with its certificate checked against the name."""
    context, cert = self_signed(tmp_path, "images.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what create_default_context trusts
    resolver = resolving({"images.test": "127.0.0.1"})
    response, body_at = response_bytes(b"x" * 100)
    with drip(response, at_once=len(response), tls=context) as server:
        url = f"https://images.test:{server.port}/img"
        policy = allow_also({("127.0.0.1", server.port)})
        assert fetch(url, policy=policy, resolver=resolver).data == b"x" * 100
    with drip(response, at_once=body_at, tls=context) as server:
        url = f"https://images.test:{server.port}/img"
        elapsed = fetch_timed(url, server.port, resolver=resolver)
    assert elapsed < LIMIT_S + SLACK_S


def test_redirects_and_dns_share_the_one_limit(first_hop: Server) -> None:
    """Each hop answering in time is no way around the limit, nor is a slow name server."""
    routes = {"/loop": (302, {"Location": "/loop"}, b"", 0.25)}
    server = Server(routes)
    try:
        elapsed = fetch_timed(server.url("/loop"), server.port, max_redirects=10)
    finally:
        server.close()
    assert elapsed < LIMIT_S + SLACK_S

    def slow_resolver(host: str, port: int) -> list[str]:
        time.sleep(3.0)
        return ["127.0.0.1"]

    url = f"http://images.example:{first_hop.port}/img"
    elapsed = fetch_timed(url, first_hop.port, resolver=slow_resolver)
    assert elapsed < LIMIT_S + SLACK_S


def test_the_search_api_answers_a_dripping_image_url_within_the_limit(
    local_store: Any, make_app: AppFactory
) -> None:
    from tests.fixtures.snapshots import publish_series

    publish_series(local_store, [1], n=50)
    response, body_at = response_bytes(png_bytes())
    with drip(response, at_once=body_at) as server:
        policy = allow_also({("127.0.0.1", server.port)})
        app = make_app(
            local_store, ENCODER=HashEncoder(), FETCH_POLICY=policy, IMAGE_FETCH_TIMEOUT_S=LIMIT_S
        )
        t = time.monotonic()
        r = app.test_client().post(
            "/v1/search", json={"image_url": f"http://127.0.0.1:{server.port}/cat.png"}
        )
        elapsed = time.monotonic() - t
    assert r.status_code == 400 and r.json["error"]["code"] == "image_url_unreachable", r.json
    assert "took longer than" in r.json["error"]["message"]
    assert elapsed < LIMIT_S + SLACK_S


# --- IPv6 forms that embed an IPv4 address ---


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("2002:7f00:1::", r"a loopback address \(6to4 of 127\.0\.0\.1\)"),
        ("2002:a9fe:a9fe::1", r"a cloud metadata address \(6to4 of 169\.254\.169\.254\)"),
        ("2002:c0a8:101::", r"a private address \(6to4 of 192\.168\.1\.1\)"),
        ("::ffff:127.0.0.1", r"a loopback address \(IPv4-mapped of 127\.0\.0\.1\)"),
        ("::ffff:10.0.0.1", r"a private address \(IPv4-mapped of 10\.0\.0\.1\)"),
        ("64:ff9b::7f00:1", r"a loopback address \(NAT64 of 127\.0\.0\.1\)"),
        ("64:ff9b::a9fe:a9fe", r"a cloud metadata address \(NAT64 of 169\.254\.169\.254\)"),
        ("64:ff9b:1::a00:1", r"a private address \(local-use NAT64 of 10\.0\.0\.1\)"),
        ("64:ff9b:1::808:808", r"^a reserved address$"),  # local-use: never public
        # Teredo: server 65.54.227.120, client 127.0.0.1 (stored inverted: 0x80fffffe)
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", r"a loopback address \(Teredo client of 127"),
        ("2001:0:a00:1::", r"a private address \(Teredo server of 10\.0\.0\.1\)"),
        ("::7f00:1", r"a loopback address \(IPv4-compatible of 127\.0\.0\.1\)"),
        ("::a9fe:a9fe", r"a cloud metadata address \(IPv4-compatible of 169\.254\.169\.254"),
        ("::1", r"^a loopback address$"),
    ],
)
def test_an_embedded_ipv4_address_is_judged_as_itself(address: str, reason: str) -> None:
    """Regression: 2002:7f00:1:: (6to4 of 127.0.0.1) passed as a public address."""
    found = default_policy(ipaddress.ip_address(address), 80)
    assert found is not None and re.search(reason, found), found


@pytest.mark.parametrize(
    "address",
    [
        "2002:808:808::1",  # 6to4 of 8.8.8.8
        "64:ff9b::808:808",  # NAT64 (DNS64 networks) of 8.8.8.8
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, server and client (8.8.8.8) public
        "::ffff:8.8.8.8",
        "2606:4700::1111",  # an ordinary public IPv6 address
    ],
)
def test_an_embedded_public_ipv4_address_passes(address: str) -> None:
    assert default_policy(ipaddress.ip_address(address), 443) is None


def test_a_6to4_loopback_address_is_refused_before_connecting(target: Server) -> None:
    resolver = resolving({"evil.example": "2002:7f00:1::"})
    with pytest.raises(FetchRefused, match=r"2002:7f00:1::, a loopback address \(6to4"):
        fetch(f"http://evil.example:{target.port}/secret", resolver=resolver)
    assert target.hits == []


def test_trust_follows_the_embedded_address_and_never_reaches_metadata() -> None:
    """A listed CIDR admits the addresses embedding one of its own; no listing (a name, or
    the whole 6to4 or NAT64 range) admits a metadata address, however embedded."""
    trusted = TrustedHosts.parse("10.0.0.0/8, images.internal, 2002::/16, 64:ff9b::/96")
    admitted = ["::ffff:10.1.2.3", "64:ff9b::a01:203", "2002:a01:203::1", "2002:7f00:1::"]
    for address in admitted:
        assert trusted.admits("any.example", ipaddress.ip_address(address)), address
    assert not TrustedHosts.parse("10.0.0.0/8").admits("x", ipaddress.ip_address("2002:7f00:1::"))
    for address in ("2002:a9fe:a9fe::", "64:ff9b::a9fe:a9fe", "::ffff:169.254.169.254"):
        for host in ("images.internal", "any.example"):
            assert not trusted.admits(host, ipaddress.ip_address(address)), (host, address)


# --- URLs beyond ASCII, and URLs that are not URLs ---


def test_a_non_ascii_path_and_query_are_fetched_percent_encoded() -> None:
    """Regression: http.client refuses non-ASCII request targets (UnicodeEncodeError, a 500
    through the service); browsers send the UTF-8 bytes percent-encoded, and so do we."""
    response, _ = response_bytes(b"PNGDATA")
    with drip(response, at_once=len(response)) as server:
        policy = allow_also({("127.0.0.1", server.port)})
        base = f"http://127.0.0.1:{server.port}"
        fetched = fetch(f"{base}/café/été 1.jpg?q=naïve&x=%41#frag", policy=policy)
        assert fetched.data == b"PNGDATA"
        assert fetch(f"{base}/a%2Fb/100%", policy=policy).data == b"PNGDATA"
    assert server.request_lines == [
        b"GET /caf%C3%A9/%C3%A9t%C3%A9%201.jpg?q=na%C3%AFve&x=%41 HTTP/1.1",
        b"GET /a%2Fb/100% HTTP/1.1",  # what is already encoded, or a stray %, stays as sent
    ]


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/\ud800.jpg", "http://127.0.0.1/x?q=\udfff", "http://[::1/", "http://[x]/"],
)
def test_a_url_that_cannot_be_sent_is_refused(url: str) -> None:
    with pytest.raises(FetchRefused, match=r"not valid Unicode|not a valid URL"):
        fetch(url, policy=lambda ip, port: None)


def test_a_non_ascii_redirect_is_followed_as_its_utf8_bytes() -> None:
    """Servers send Location in UTF-8; http.client hands headers over read as Latin-1."""
    image, _ = response_bytes(b"PNGDATA")
    with drip(image, at_once=len(image)) as server:
        location = f"http://127.0.0.1:{server.port}/café.jpg"
        redirect = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
        with drip(redirect.encode(), at_once=len(redirect.encode())) as first:
            policy = allow_also({("127.0.0.1", server.port), ("127.0.0.1", first.port)})
            fetched = fetch(f"http://127.0.0.1:{first.port}/old", policy=policy)
    assert fetched.data == b"PNGDATA" and fetched.url == location
    assert server.request_lines == [b"GET /caf%C3%A9.jpg HTTP/1.1"]


def test_a_content_length_of_digits_beyond_ascii_is_ignored() -> None:
    """Regression: "\xb2" (superscript two, read as Latin-1) passed str.isdigit() and int()
    raised ValueError: a 500 through the service. The body is read to the end instead."""
    response, _ = response_bytes(b"PNGDATA", extra=b"Content-Length: \xb2\r\n")
    with drip(response, at_once=len(response)) as server:
        policy = allow_also({("127.0.0.1", server.port)})
        assert fetch(f"http://127.0.0.1:{server.port}/", policy=policy).data == b"PNGDATA"
