"""The API key: writes need it (``require_api_key``), ``/v1/manifest`` reads more with it
(``has_api_key``). Sent as ``X-API-Key`` or ``Authorization: Bearer``; compared in
constant time."""

from __future__ import annotations

import hmac

from flask import Request

from service.errors import ApiError
from service.state import ServiceState


def presented_api_key(req: Request) -> str:
    """The key a request presents (X-API-Key, or Authorization: Bearer); "" for none."""
    given = req.headers.get("X-API-Key", "")
    auth = req.headers.get("Authorization", "")
    if not given and auth.startswith("Bearer "):
        given = auth[len("Bearer ") :]
    return given


def has_api_key(state: ServiceState, req: Request) -> bool:
    """True with the valid key, False with none; a wrong key (or any key while none is
    configured) is a 401."""
    given = presented_api_key(req)
    if not given:
        return False
    expected = state.settings.api_key
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(
            401, "unauthorized", "the API key is not valid (send none for the public view)"
        )
    return True


def require_api_key(state: ServiceState, req: Request) -> None:
    expected = state.settings.api_key
    if not expected:
        raise ApiError(403, "writes_disabled", "writes are disabled: no API key is configured")
    given = presented_api_key(req)
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "a valid API key is required (X-API-Key or Bearer)")
