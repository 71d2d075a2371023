"""The search page (``GET /``) and what it reads about the service (``GET /v1/info``).

Plain HTML, CSS and JavaScript from ``service/static/``: no build step, nothing
fetched from elsewhere (a Content-Security-Policy of ``'self'`` says so to the
browser). The page calls the public API only: ``/v1/info``, ``/v1/search`` and
``/v1/items/{id}/thumbnail``; the write endpoints are not on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, send_from_directory

from service.api.models import EncoderAbility, Info, Recall, SnapshotInfo
from service.errors import ApiError
from service.snapshots.registry import NotReady
from service.state import get_state
from vsearch.manifest import Manifest

bp = Blueprint("page", __name__)
STATIC = Path(__file__).resolve().parents[1] / "static"
_FILES = {"app.js", "style.css"}
_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)


def _static(name: str, max_age: int) -> Response:
    response = send_from_directory(STATIC, name, max_age=max_age)
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/")
def page() -> Response:
    return _static("index.html", 0)


@bp.get("/static/<name>")
def static_file(name: str) -> Response:
    if name not in _FILES:
        raise ApiError(404, "not_found", f"no static file {name!r}")
    return _static(name, 300)


@bp.get("/v1/info")
def info() -> Response:
    """What a client shows and needs to ask well: the live snapshot (id, vectors, recall,
    whether it has thumbnails), the delta, the encoder (can it embed text?), the limits."""
    state = get_state()
    snap = state.registry.current
    info = Info(
        snapshot=None if snap is None else _snapshot(snap.manifest),
        delta_upserts=state.replica.delta.upserts if state.replica.delta else 0,
        encoder=_encoder(state),
        max_k=state.settings.max_k,
        default_k=state.settings.default_k,
    )
    if snap is None:
        info.not_ready = state.registry.not_ready_reason()
    # exclude_unset: not_ready is there only while no snapshot serves
    return jsonify(info.model_dump(by_alias=True, exclude_unset=True))


def _snapshot(m: Manifest) -> SnapshotInfo:
    return SnapshotInfo(
        snapshot_id=m.snapshot_id,
        created_at=m.created_at,
        vectors=m.ntotal,
        recall=Recall.model_validate({
            "image_to_image@10": m.recall.image_to_image_at_10,
            "text_to_image@10": m.recall.text_to_image_at_10,
        }),
        thumbnails=m.thumbnails.count if m.thumbnails else 0,
        encoder=m.encoder.name,
    )  # fmt: skip


def _encoder(state: Any) -> EncoderAbility:
    """Which queries the encoder takes: images, and text only with a text tower."""
    try:
        enc = state.embedder.encoder()
    except NotReady as e:
        return EncoderAbility(images=False, text=False, reason=str(e))
    except ApiError as e:
        if e.code == "encoder_loading":  # not known yet: the page asks again later
            return EncoderAbility(images=True, text=None, reason=e.message)
        return EncoderAbility(images=False, text=False, reason=e.message)
    if not enc.has_text:
        return EncoderAbility(images=True, text=False, reason=f"{enc.info.name} embeds images only")
    return EncoderAbility(images=True, text=True, reason=None)
