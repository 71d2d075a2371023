"""Request inputs to vectors: the one path from what a search or an upsert sends to what it uses.

An input is a ``(kind, value)`` pair as ``service.api.models`` gives it: ``vector``
(an array), ``image`` (bytes), ``image_url`` and ``text`` (str, through the
query embedder) or ``id`` (an item's stored vector, delta first). Whatever the
kind, the vector is checked against the snapshot's dimension and L2-normalised
when its encoder is; a bad one is a 400 naming the input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import ApiError
from service.queries.query_embedder import QueryEmbedder
from service.snapshots.snapshot_loader import LoadedSnapshot
from vsearch.search import DeltaIndex
from vsearch.search.stored_vectors import VectorsUnavailable


def input_vector(
    kind: str,
    value: Any,
    snap: LoadedSnapshot,
    *,
    embedder: QueryEmbedder,
    delta: DeltaIndex | None,
    what: str,
) -> np.ndarray:
    """The float32 vector for one input, ready to search ``snap`` or to be written next to it.

    ``what`` names the input in error messages (``"vector"``, ``"item 7"``); ``delta``
    is needed for ``id`` inputs only.
    """
    if kind == "vector":
        x = value
    elif kind == "id":
        if delta is None:
            raise ValueError("an id input needs the delta index")
        x = vector_of_item(snap, delta, value)
    elif kind == "text":
        x = embedder.text(value)
    elif kind == "image":
        x = embedder.image_bytes(value)
    elif kind == "image_url":
        x = embedder.image_url(value)
    else:
        raise ValueError(f"unknown input kind {kind!r}")
    return prepare_vector(np.asarray(x, "float32"), snap, what)


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
    for shard in snap.searcher.shards:
        try:
            x = shard.stored.vector(item)
        except VectorsUnavailable as e:
            raise ApiError(
                501, "id_queries_unsupported", f"snapshot {snap.snapshot_id}: {e}"
            ) from None
        if x is not None:
            return x
    raise ApiError(404, "item_not_found", f"item {item} is not in snapshot {snap.snapshot_id}")
