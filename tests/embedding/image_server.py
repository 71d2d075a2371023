"""A real HTTP server on 127.0.0.1 serving good and bad images, for the URL-list tests.

It runs in a thread of the test process (``ThreadingHTTPServer``): the fetcher
talks to it over real TCP sockets exactly as it would to a web server.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.embedding import images

SLOW_SECONDS = 3.0
DRIP_SECONDS = 12.0


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def _send(self, body: bytes, ctype: str | None = "image/jpeg", status: int = 200) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path
        self.server.hits[path] = self.server.hits.get(path, 0) + 1
        if path.startswith("/ok/"):
            self._send(images.jpeg(64, 48, seed=int(path.split("/")[2].split(".")[0])))
        elif path == "/big.jpg":  # 1600x1200: stored shrunk to max_side
            self._send(images.jpeg(1600, 1200, seed=9))
        elif path == "/no-content-type.png":
            from PIL import Image

            self._send(images.png(Image.new("RGBA", (40, 30), (0, 0, 255, 128))), ctype=None)
        elif path == "/page.html":
            self._send(b"<html>hello</html>", ctype="text/html; charset=utf-8")
        elif path == "/truncated.jpg":
            self._send(images.truncated_jpeg())
        elif path == "/bomb.png":
            self._send(images.png_bomb(), ctype="image/png")
        elif path == "/huge.jpg":
            self._send(b"\xff\xd8" + b"\x00" * (3 << 20))
        elif path == "/slow.jpg":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            deadline = time.monotonic() + SLOW_SECONDS
            while time.monotonic() < deadline and not self.server.stopping.is_set():
                time.sleep(0.05)
        elif path == "/drip.jpg":  # a tarpit: one byte every 0.2 s, each one in time
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            deadline = time.monotonic() + DRIP_SECONDS
            while time.monotonic() < deadline and not self.server.stopping.is_set():
                try:
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                except OSError:  # the client gave up
                    return
                time.sleep(0.2)
        elif path == "/flaky.jpg":  # 503 once, then fine: a retry must get it
            if self.server.hits[path] == 1:
                self._send(b"busy", ctype="text/plain", status=503)
            else:
                self._send(images.jpeg(seed=5))
        elif path == "/redirect.jpg":
            self.send_response(302)
            self.send_header("Location", "/ok/7.jpg")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(b"not found", ctype="text/plain", status=404)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.hits: dict[str, int] = {}
        self.stopping = threading.Event()


@contextlib.contextmanager
def image_server(port: int = 0) -> Iterator[tuple[str, dict[str, int]]]:
    """(base URL, hit counts by path) of a running server (on ``port``, else a free one);
    stopped on exit."""
    server = _Server(port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.hits
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
