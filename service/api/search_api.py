"""``POST /v1/search``: one query (text, image, image URL, vector or id) -> the top k hits.

Hits carry their metadata or the search fails: with the metadata store down the
answer is 503 ``metadata_unavailable`` (and ``/readyz`` turns 503), never hits
silently stripped of what clients display.
"""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
from flask import Blueprint, Response, request

from service.api.models import SearchRequest
from service.api.request_bodies import finite_or_none
from service.api.request_vectors import input_vector
from service.errors import ApiError
from service.snapshots.registry import LoadedSnapshot
from service.state import ServiceState, get_state
from vsearch.search import Hit, nprobe_for_recall
from vsearch.serving.metadata_store import MetadataUnavailable

bp = Blueprint("search", __name__)


def choose_nprobe(snap: LoadedSnapshot, q: SearchRequest) -> int | None:
    nlist = snap.searcher.nlist
    if nlist is None:
        return None  # exact (flat) shards: nothing to probe
    if q.exact:
        return nlist
    if q.nprobe is not None:
        return min(q.nprobe, nlist)
    default = snap.manifest.index.default_nprobe
    if q.target_recall is not None:
        return nprobe_for_recall(snap.manifest.recall.curve, q.target_recall, default or 1)
    return default


def base_metadata(state: ServiceState, ids: list[int]) -> dict[int, str | bytes]:
    """Metadata of base hits from the store, as stored JSON text; 503 while it cannot be
    reached."""
    try:
        return state.metadata.get_raw(ids)
    except MetadataUnavailable as e:
        state.metadata_check.failed(e)  # /readyz turns 503 now, not at its next ping
        raise ApiError(
            503, "metadata_unavailable", "the metadata store is unreachable; retry shortly"
        ) from e


@bp.post("/v1/search")
def search() -> Response:
    state = get_state()
    stages = state.metrics.search_stages
    t0 = time.perf_counter()
    q = SearchRequest.read(request, max_k=state.settings.max_k, default_k=state.settings.default_k)
    t1 = time.perf_counter()
    with state.registry.lease() as snap:
        delta = state.replica.delta
        assert delta is not None  # created before the first snapshot is swapped in
        x = input_vector(q.kind, q.value, snap, embedder=state.embedder, delta=delta, what=q.kind)
        t2 = time.perf_counter()
        nprobe = choose_nprobe(snap, q)
        timings: dict[str, float] = {}
        exclude = q.value if q.kind == "id" else None
        hits = snap.searcher.search(
            x[None, :],
            q.k,
            nprobe=nprobe,
            delta=delta,
            watermark=snap.watermark,
            exclude=exclude,
            timings=timings,
        )
        t3 = time.perf_counter()
        base = base_metadata(state, [h.id for h in hits if h.source == "base"])
        ours = delta.metadata([h.id for h in hits if h.source == "delta"])
        snapshot_id = snap.snapshot_id
    t4 = time.perf_counter()
    body = answer(hits, base, ours, snapshot_id, nprobe, t0)
    for stage, seconds in (
        ("parse", t1 - t0),
        ("embed", t2 - t1),
        ("metadata", t4 - t3),
        ("total", t4 - t0),
        *timings.items(),
    ):
        stages[stage].observe(seconds)
    return Response(body, 200, mimetype="application/json")


def answer(
    hits: list[Hit],
    base: dict[int, str | bytes],
    delta: dict[int, dict[str, Any] | None],
    snapshot_id: str,
    nprobe: int | None,
    t0: float,
) -> bytes:
    """The JSON answer (the document's SearchResult): base metadata spliced in as the store
    holds it (orjson.Fragment), never parsed here; no model is built per search."""

    def meta(h: Hit) -> Any:
        if h.source == "delta":
            return delta.get(h.id)
        text = base.get(h.id)
        return None if text is None else orjson.Fragment(text)

    body: dict[str, Any] = {
        "hits": [
            {"id": h.id, "score": finite_or_none(h.score), "source": h.source, "metadata": meta(h)}
            for h in hits
        ],
        "snapshot_id": snapshot_id,
        "nprobe": nprobe,
        "took_ms": round((time.perf_counter() - t0) * 1000, 3),
    }
    try:
        return orjson.dumps(body)
    except TypeError:  # a lone surrogate in delta metadata: orjson writes valid UTF-8 only
        for h, row in zip(hits, body["hits"], strict=True):
            if isinstance(row["metadata"], orjson.Fragment):
                row["metadata"] = json.loads(base[h.id])
        return json.dumps(body).encode()
