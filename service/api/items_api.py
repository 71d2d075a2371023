"""Writes: ``PUT /v1/items`` (upsert) and ``POST /v1/items/delete``, behind the API key.

A write is appended to the delta log (durable once acknowledged) and applied
to this replica's delta index before the response: the next search here sees
it. Other replicas see it when their tailer reads it from the log.
"""

from __future__ import annotations

import time

import numpy as np
from flask import Blueprint, Response, jsonify, request

from service.api.auth import require_api_key
from service.api.models import DeleteRequest, UpsertRequest, WriteResult
from service.api.request_vectors import input_vector, prepare_vector
from service.errors import ApiError
from service.snapshots.registry import NotReady
from service.state import ServiceState, get_state
from vsearch.delta import DeltaEntry, DeltaWrite

bp = Blueprint("items", __name__)


def _append(state: ServiceState, writes: list[DeltaWrite]) -> list[DeltaEntry]:
    try:
        return state.replica.write(writes)
    except Exception as e:  # the log (Redis, SQLite) is down or refused the write
        state.delta_log_check.failed(e)
        raise ApiError(503, "delta_log_unavailable", f"the delta log refused the write: {e}") from e


def _answer(
    state: ServiceState, entries: list[DeltaEntry], started: float, endpoint: str
) -> tuple[Response, int]:
    state.metrics.stage_seconds.labels(endpoint, "total").observe(time.perf_counter() - started)
    body = WriteResult(
        written=len(entries),
        entry_ids=[e.id for e in entries],
        last_id=entries[-1].id if entries else None,
    )
    return jsonify(body.model_dump()), 200


@bp.put("/v1/items")
def upsert() -> tuple[Response, int]:
    state = get_state()
    started = time.perf_counter()
    require_api_key(state, request)
    items = UpsertRequest.read(request, max_items=state.settings.max_upsert_items).items
    with state.registry.lease() as snap:
        writes = []
        for item in items:  # vectors, images or image URLs: never an id
            what, thumb = f"item {item.id}", None
            if item.kind in ("image", "image_url"):  # an image also gives a thumbnail
                raw, thumb = state.embedder.item_image(item.kind, item.value)
                x = prepare_vector(np.asarray(raw, "float32"), snap, what)
            else:
                x = input_vector(
                    item.kind, item.value, snap, embedder=state.embedder, delta=None, what=what
                )
            writes.append(DeltaWrite("upsert", item.id, x, item.metadata, thumbnail=thumb))
    return _answer(state, _append(state, writes), started, "upsert")


@bp.post("/v1/items/delete")
def delete() -> tuple[Response, int]:
    state = get_state()
    started = time.perf_counter()
    require_api_key(state, request)
    ids = DeleteRequest.read(request, max_items=state.settings.max_upsert_items).ids
    if state.registry.current is None:  # writes become visible only once a snapshot serves
        raise NotReady(state.registry.not_ready_reason())
    writes = [DeltaWrite("delete", i) for i in dict.fromkeys(ids)]
    return _answer(state, _append(state, writes), started, "delete")
