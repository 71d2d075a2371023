"""Operations: ``/healthz``, ``/readyz``, ``/metrics``, ``/v1/manifest``, ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.openapi import openapi_document
from service.registry import NotReady
from service.state import get_state

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """The process answers; says nothing about the snapshot (that is /readyz)."""
    return jsonify({"status": "ok"}), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """200 while a snapshot is served; says why when the newest one was refused, and what
    state the query encoder is in (vector and id queries never need it)."""
    state = get_state()
    registry = state.registry
    snap = registry.current
    delta = state.replica.delta
    body: dict[str, Any] = {
        "ready": snap is not None,
        "snapshot_id": snap.snapshot_id if snap else None,
        "delta_watermark": snap.manifest.delta_watermark if snap else None,
        "delta_items": len(delta) if delta is not None else 0,
        "refused": registry.refusal,
        "last_error": state.encoder_error or registry.last_error,
        "swaps": registry.swaps,
        "encoder": state.encoder.status(),
    }
    if snap is None:
        body["reason"] = state.encoder_error or registry.not_ready_reason()
        return jsonify(body), 503
    return jsonify(body), 200


@bp.get("/metrics")
def metrics() -> Response:
    state = get_state()
    return Response(
        generate_latest(state.metrics.registry), mimetype=CONTENT_TYPE_LATEST.split(";")[0]
    )


@bp.get("/v1/manifest")
def manifest() -> tuple[Response, int]:
    snap = get_state().registry.current
    if snap is None:
        raise NotReady(get_state().registry.not_ready_reason())
    return jsonify(snap.manifest.to_dict()), 200


@bp.get("/openapi.json")
def openapi() -> tuple[Response, int]:
    state = get_state()
    return jsonify(
        openapi_document(max_k=state.settings.max_k, max_items=state.settings.max_upsert_items)
    ), 200
