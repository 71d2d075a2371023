"""SSRF: image URLs may not reach loopback, metadata or private addresses, not even by redirect."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.service.conftest import AppFactory, HashEncoder
from vsearch.safe_fetch import FetchError, FetchRefused, allow_also, default_policy, fetch_url


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
