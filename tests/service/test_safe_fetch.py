"""SSRF: image URLs may not reach loopback, metadata or private addresses, not even by redirect,
unless the operator trusts the host (VSEARCH_IMAGE_FETCH_ALLOW)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.service.conftest import AppFactory, HashEncoder
from vsearch.safe_fetch import (
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
