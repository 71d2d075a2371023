"""``POST /v1/search``: one query (text, image, image URL, vector or id) -> the top k hits.

Hits carry their metadata or the search fails: with the metadata store down the
answer is 503 ``metadata_unavailable`` (and ``/readyz`` turns 503), never hits
silently stripped of what clients display.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, jsonify, request

from service.errors import ApiError
from service.input_vectors import input_vector
from service.inputs import SearchRequest, finite_or_none, parse_search
from service.registry import LoadedSnapshot
from service.state import ServiceState, get_state
from vsearch.metadata import MetadataUnavailable
from vsearch.search import nprobe_for_recall

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


def base_metadata(state: ServiceState, ids: list[int]) -> dict[int, Any]:
    """Metadata of base hits from the store; 503 while it cannot be reached."""
    try:
        return dict(state.metadata.get_many(ids))
    except MetadataUnavailable as e:
        state.metadata_check.failed(e)  # /readyz turns 503 now, not at its next ping
        raise ApiError(
            503, "metadata_unavailable", "the metadata store is unreachable; retry shortly"
        ) from e


@bp.post("/v1/search")
def search() -> tuple[Response, int]:
    state = get_state()
    observe = state.metrics.stage_seconds
    t0 = time.perf_counter()
    q = parse_search(request, max_k=state.settings.max_k, default_k=state.settings.default_k)
    t1 = time.perf_counter()
    with state.registry.lease() as snap:
        delta = state.replica.delta
        assert delta is not None  # created before the first snapshot is swapped in
        x = input_vector(q.kind, q.value, snap, embedder=state.embedder, delta=delta, what=q.kind)
        xq = x[None, :]
        t2 = time.perf_counter()
        nprobe = choose_nprobe(snap, q)
        timings: dict[str, float] = {}
        exclude = q.value if q.kind == "id" else None
        hits = snap.searcher.search(
            xq,
            q.k,
            nprobe=nprobe,
            delta=delta,
            watermark=snap.watermark,
            exclude=exclude,
            timings=timings,
        )
        t3 = time.perf_counter()
        meta = base_metadata(state, [h.id for h in hits if h.source == "base"])
        meta.update(delta.metadata([h.id for h in hits if h.source == "delta"]))
        snapshot_id = snap.snapshot_id
    t4 = time.perf_counter()
    for stage, seconds in (
        ("parse", t1 - t0),
        ("embed", t2 - t1),
        ("metadata", t4 - t3),
        ("total", t4 - t0),
    ):
        observe.labels("search", stage).observe(seconds)
    for stage, seconds in timings.items():
        observe.labels("search", stage).observe(seconds)
    body = {
        "hits": [
            {
                "id": h.id,
                "score": finite_or_none(h.score),
                "source": h.source,
                "metadata": meta.get(h.id),
            }
            for h in hits
        ],
        "snapshot_id": snapshot_id,
        "nprobe": nprobe,
        "took_ms": round((time.perf_counter() - t0) * 1000, 3),
    }
    return jsonify(body), 200
