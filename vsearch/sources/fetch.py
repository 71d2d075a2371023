"""Downloading one image over HTTP, carefully: the URL-list source's side facing servers.

Every way a download can go wrong ends in ``FetchFailed`` with a short reason
(``http-404``, ``timeout``, ``connection-error``, ``too-large``,
``content-type:text/html``, or an ``ImageRejected`` reason such as ``truncated``
or ``too-many-pixels``); the caller records it and goes on. Connection errors,
timeouts, 429 and 5xx are retried with exponential backoff; other failures are
final at once.
"""

from __future__ import annotations

import io
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import urllib3
from PIL import Image

from vsearch.imaging import DEFAULT_MAX_PIXELS, ImageRejected, decode_image, encode_jpeg

log = logging.getLogger(__name__)

_ACCEPTED_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


class FetchFailed(Exception):
    def __init__(self, reason: str, detail: str = "", *, retryable: bool = False) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.retryable = retryable


class FetchUnavailable(ConnectionError):
    """No image of a shard could be downloaded, every one for a network reason: the network
    (or every server) is down, so the shard is not stored and a later try fetches it."""


@dataclass(frozen=True)
class FetchOptions:
    concurrency: int = 16
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    total_timeout_s: float = 30.0  # per attempt: a server dribbling bytes cannot hold a worker
    retries: int = 2
    backoff_s: float = 0.5
    max_bytes: int = 20 << 20
    max_side: int | None = 512  # longer side of the stored image; None keeps the original size
    max_pixels: int = DEFAULT_MAX_PIXELS
    jpeg_quality: int = 90
    user_agent: str = "vsearch-fetch/0.1"


@dataclass(frozen=True)
class Fetched:
    jpeg: bytes
    width: int
    height: int
    original_width: int
    original_height: int


class Fetcher:
    """A pooled HTTP client sized for ``options.concurrency`` threads."""

    def __init__(self, options: FetchOptions) -> None:
        self.options = options
        self.http = urllib3.PoolManager(
            num_pools=max(4, options.concurrency),
            maxsize=options.concurrency,
            headers={"User-Agent": options.user_agent},
            timeout=urllib3.Timeout(connect=options.connect_timeout_s, read=options.read_timeout_s),
            retries=urllib3.Retry(
                total=None, connect=0, read=0, status=0, other=0, redirect=5,
                raise_on_redirect=True, raise_on_status=False,
            ),
        )  # fmt: skip

    def fetch(self, url: str) -> Fetched:
        """The image at ``url`` as a JPEG no larger than ``max_side``; raises FetchFailed."""
        return self.to_jpeg(self.download(url))

    def download(self, url: str) -> bytes:
        if not url.startswith(("http://", "https://")):
            raise FetchFailed("bad-url", url[:100])
        attempt = 0
        while True:
            try:
                return self._download_once(url)
            except FetchFailed as e:
                if not e.retryable or attempt >= self.options.retries:
                    raise
                delay = self.options.backoff_s * (2**attempt) * (0.5 + random.random())
                log.debug("retrying %s in %.2fs after %s", url, delay, e)
                time.sleep(delay)
                attempt += 1

    def _download_once(self, url: str) -> bytes:
        opts = self.options
        try:
            response = self.http.request("GET", url, preload_content=False)
        except urllib3.exceptions.MaxRetryError as e:
            raise _from_urllib3(e.reason or e) from None
        except urllib3.exceptions.HTTPError as e:
            raise _from_urllib3(e) from None
        try:
            status = response.status
            if status != 200:
                retry = status == 429 or status >= 500
                raise FetchFailed(f"http-{status}", url[:100], retryable=retry)
            ctype = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype and not ctype.startswith(_ACCEPTED_TYPES):
                raise FetchFailed(f"content-type:{ctype[:40]}")
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > opts.max_bytes:
                raise FetchFailed("too-large", f"Content-Length {length} > {opts.max_bytes}")
            return self._read_body(response)
        finally:
            response.release_conn()

    def _read_body(self, response: Any) -> bytes:
        """The body, within ``total_timeout_s``. ``read1`` returns what has arrived (a stream
        of 64 KiB chunks waits for each to fill, and a server dripping bytes resets the read
        timeout with each), and each socket wait is cut to what is left of the deadline."""
        opts = self.options
        deadline = time.monotonic() + opts.total_timeout_s
        chunks, size = [], 0
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FetchFailed("timeout", f"body took over {opts.total_timeout_s}s",
                                      retryable=True)  # fmt: skip
                _limit_wait(response, min(opts.read_timeout_s, left))
                chunk = response.read1(64 << 10)
                if not chunk:
                    break
                size += len(chunk)
                if size > opts.max_bytes:
                    raise FetchFailed("too-large", f"more than {opts.max_bytes} bytes")
                chunks.append(chunk)
        except urllib3.exceptions.HTTPError as e:
            raise _from_urllib3(e) from None
        return b"".join(chunks)

    def to_jpeg(self, data: bytes) -> Fetched:
        """Validate by decoding; keep a small-enough JPEG as it is, re-encode anything else."""
        opts = self.options
        try:
            image = decode_image(data, max_pixels=opts.max_pixels, max_side=opts.max_side)
            with Image.open(io.BytesIO(data)) as header:
                original, fmt = header.size, header.format
        except ImageRejected as e:
            raise FetchFailed(e.reason, e.detail) from None
        keep = fmt == "JPEG" and image.size == original and not _has_rotation(data)
        jpeg = data if keep else encode_jpeg(image, quality=opts.jpeg_quality)
        return Fetched(jpeg, image.width, image.height, original[0], original[1])


def _limit_wait(response: Any, seconds: float) -> None:
    """Let the next socket read of ``response`` wait at most ``seconds``."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def _has_rotation(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as im:
        return im.getexif().get(0x0112, 1) not in (1, None)


def _from_urllib3(error: BaseException) -> FetchFailed:
    timeouts = (urllib3.exceptions.TimeoutError, urllib3.exceptions.ReadTimeoutError)
    # NewConnectionError (refused, unreachable) subclasses ConnectTimeoutError: test it first.
    if isinstance(error, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ProtocolError):
        return FetchFailed("connection-error", str(error)[:200], retryable=True)
    if isinstance(error, timeouts):
        return FetchFailed("timeout", str(error)[:200], retryable=True)
    if isinstance(error, urllib3.exceptions.LocationParseError):
        return FetchFailed("bad-url", str(error)[:200])
    if isinstance(error, urllib3.exceptions.MaxRetryError):  # too many redirects
        return FetchFailed("too-many-redirects", str(error)[:200])
    return FetchFailed("connection-error", str(error)[:200], retryable=True)
