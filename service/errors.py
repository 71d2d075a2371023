"""JSON errors: ``{"error": {"code", "message"}}`` for every failure, 4xx for every bad input.

A 5xx other than 503 (not ready, dependency down) or 501 (feature not built in)
is a bug; it is logged with its traceback and answered without internals.
"""

from __future__ import annotations

import logging
import re

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from service.snapshots.refusal import NotReady

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer of ``status``; ``retry_after`` (seconds) is sent as ``Retry-After``."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(e: ApiError) -> tuple[Response, int]:
        response, status = error_response(e.status, e.code, e.message)
        if e.retry_after is not None:
            response.headers["Retry-After"] = str(e.retry_after)
        return response, status

    @app.errorhandler(NotReady)
    def not_ready(e: NotReady) -> tuple[Response, int]:
        return error_response(503, "not_ready", str(e))

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> tuple[Response, int]:
        status = e.code or 500
        response, _ = error_response(status, _snake(e.name), e.description or e.name)
        if status == 405 and e.get_response().headers.get("Allow"):
            response.headers["Allow"] = e.get_response().headers["Allow"]
        return response, status

    @app.errorhandler(Exception)
    def unexpected(e: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error (logged)")
