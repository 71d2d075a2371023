"""The access log: one line per request, and never a credential.

``VSEARCH_SERVICE_ACCESS_LOG``: ``-`` (stdout), a file path, or empty for none.
A line is ``client [time] "METHOD /path HTTP/1.1" status bytes duration_ms "user agent"``
(the fields of the gunicorn format the service used before). It is built from a fixed
list of fields, so what is not on that list cannot leak: no Authorization or X-API-Key
header, no HTTP Basic user (``curl -u KEY:`` puts the key there), no cookie, and no
query string or referer (where a pasted token would sit).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from logging.handlers import WatchedFileHandler
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def access_logger(target: str) -> logging.Logger:
    """The ``vsearch.access`` logger writing bare lines to ``target`` (``-``: stdout)."""
    logger = logging.getLogger("vsearch.access")
    logger.setLevel(logging.INFO)
    logger.propagate = False  # its own destination, not the error log's
    # A rotated file is reopened (logrotate moves it, the handler notices).
    handler = logging.StreamHandler(sys.stdout) if target == "-" else WatchedFileHandler(target)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    return logger


class AccessLog:
    """WSGI middleware that logs each request once its response has been sent."""

    def __init__(self, app: WSGIApp, logger: logging.Logger) -> None:
        self.app, self.logger = app, logger

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start = time.perf_counter()
        status = ["-"]

        def start_response_logged(code: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = code.split(" ", 1)[0]
            return start_response(code, headers, exc_info)

        body = self.app(environ, start_response_logged)
        return _Logged(body, lambda sent: self._log(environ, status[0], sent, start))

    def _log(self, environ: dict[str, Any], status: str, sent: int, start: float) -> None:
        self.logger.info(
            '%s [%s] "%s %s %s" %s %d %dms "%s"',
            environ.get("REMOTE_ADDR", "-"),
            time.strftime("%d/%b/%Y:%H:%M:%S %z"),
            environ.get("REQUEST_METHOD", "-"),
            environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
            environ.get("SERVER_PROTOCOL", "-"),
            status,
            sent,
            (time.perf_counter() - start) * 1000,
            environ.get("HTTP_USER_AGENT", "-"),
        )


class _Logged:
    """The response body, counted; the line is written when the server closes it."""

    def __init__(self, body: Iterable[bytes], done: Callable[[int], None]) -> None:
        self.body, self.done, self.sent = body, done, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.body:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.done(self.sent)
