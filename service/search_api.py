"""``POST /v1/search``: one query (text, image, image URL, vector or id) -> the top k hits."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify, request

from service.errors import ApiError
from service.inputs import SearchRequest, finite_or_none, parse_search
from service.registry import LoadedSnapshot
from service.state import ServiceState, get_state
from vsearch.search import DeltaIndex, nprobe_for_recall

bp = Blueprint("search", __name__)


def prepare_vector(x: np.ndarray, snap: LoadedSnapshot, what: str) -> np.ndarray:
    """Check the dimension; L2-normalise when the snapshot's encoder does."""
    if x.shape != (snap.dim,):
        raise ApiError(
            400, "wrong_dimension", f"{what} has {x.size} values; the index has dim {snap.dim}"
        )
    x = np.ascontiguousarray(x, "float32")
    if snap.manifest.encoder.normalized:
        norm = float(np.linalg.norm(x))
        if not np.isfinite(norm) or norm == 0:
            raise ApiError(400, "invalid_vector", f"{what} has zero (or overflowing) length")
        x = x / norm
    return x


def vector_of_item(snap: LoadedSnapshot, delta: DeltaIndex, item: int) -> np.ndarray:
    """The stored vector of ``item`` (delta first, then the base shards), for ``id`` queries."""
    found = delta.lookup(item, snap.watermark)
    if isinstance(found, np.ndarray):
        return found
    if found == "deleted":
        raise ApiError(404, "item_not_found", f"item {item} was deleted")
    for info, shard in zip(snap.manifest.shards, snap.searcher.shards, strict=True):
        if info.id_range[0] <= item <= info.id_range[1]:
            try:
                return np.asarray(shard.index.reconstruct(item), "float32")
            except RuntimeError:
                continue
    raise ApiError(404, "item_not_found", f"item {item} is not in snapshot {snap.snapshot_id}")


def query_vector(
    state: ServiceState, snap: LoadedSnapshot, delta: DeltaIndex, q: SearchRequest
) -> np.ndarray:
    if q.kind == "vector":
        x = q.value
    elif q.kind == "id":
        x = vector_of_item(snap, delta, q.value)
    elif q.kind == "text":
        x = state.embedder.text(q.value)
    elif q.kind == "image":
        x = state.embedder.image_bytes(q.value)
    else:
        x = state.embedder.image_url(q.value)
    return prepare_vector(np.asarray(x, "float32"), snap, q.kind)


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
        xq = query_vector(state, snap, delta, q)[None, :]
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
        meta: dict[int, Any] = state.metadata.get_many([h.id for h in hits if h.source == "base"])
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
