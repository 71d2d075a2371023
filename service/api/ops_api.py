"""Operations: ``/healthz``, ``/readyz``, ``/metrics``, ``/v1/manifest``, ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.auth import has_api_key
from service.api.openapi import openapi_json
from service.snapshots.registry import NotReady
from service.state import get_state

bp = Blueprint("ops", __name__)

REDACTED = "<redacted>"


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """The process answers; says nothing about the snapshot (that is /readyz)."""
    return jsonify({"status": "ok"}), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """200 while a snapshot is served and the metadata store answers (searches need both);
    says why when the newest snapshot was refused, what state the query encoder is in
    (vector and id queries never need it) and which dependency is down."""
    state = get_state()
    registry = state.registry
    snap = registry.current
    delta = state.replica.delta
    metadata_down = state.metadata_check.status()
    body: dict[str, Any] = {
        "ready": snap is not None and metadata_down is None,
        "snapshot_id": snap.snapshot_id if snap else None,
        "delta_watermark": snap.manifest.delta_watermark if snap else None,
        "delta_items": len(delta) if delta is not None else 0,
        "refused": registry.refusal,
        "last_error": state.encoder_error or registry.last_error,
        # The store's copy of a served shard no longer matches the verified cached one:
        # this replica serves the manifest's bytes, a replica without the cache would refuse.
        "store_warnings": list(registry.store_warnings),
        "swaps": registry.swaps,
        "encoder": state.encoder.status(),
        # Writes need the delta log, but it does not decide readiness: it is shared by every
        # replica, so taking this one out would fail the searches it can still answer.
        "dependencies": {
            "metadata": _dependency(metadata_down),
            "delta_log": _dependency(state.delta_log_check.status()),
        },
    }
    if snap is None:
        body["reason"] = state.encoder_error or registry.not_ready_reason()
        return jsonify(body), 503
    if metadata_down is not None:
        body["reason"] = f"{metadata_down}: searches answer 503 metadata_unavailable"
        return jsonify(body), 503
    return jsonify(body), 200


def _dependency(error: str | None) -> dict[str, Any]:
    return {"ok": error is None, "error": error}


@bp.get("/metrics")
def metrics() -> Response:
    state = get_state()
    return Response(
        generate_latest(state.metrics.registry), mimetype=CONTENT_TYPE_LATEST.split(";")[0]
    )


@bp.get("/v1/manifest")
def manifest() -> Response:
    """The live manifest; without the API key its ``lineage.sources`` are redacted (they can
    name local paths and buckets). A wrong key is a 401, not a silently redacted answer."""
    state = get_state()
    snap = state.registry.current
    if snap is None:
        raise NotReady(state.registry.not_ready_reason())
    body = snap.manifest.to_dict()
    if not has_api_key(state, request):
        body = redact_manifest(body)
    response = jsonify(body)
    response.headers["Vary"] = "Authorization, X-API-Key"  # caches must not mix the two
    return response


def redact_manifest(body: dict[str, Any]) -> dict[str, Any]:
    """The manifest for anonymous readers: each lineage source replaced, the count kept."""
    lineage = dict(body["lineage"])
    lineage["sources"] = [REDACTED] * len(lineage.get("sources") or ())
    return {**body, "lineage": lineage}


@bp.get("/openapi.json")
def openapi() -> tuple[Response, int]:
    state = get_state()
    settings = state.settings
    document = openapi_json(
        max_k=settings.max_k, default_k=settings.default_k, max_items=settings.max_upsert_items
    )
    return Response(document, mimetype="application/json"), 200
