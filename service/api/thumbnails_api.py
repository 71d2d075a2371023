"""``GET /v1/items/{id}/thumbnail``: an item's thumbnail, base or delta, as search sees it.

Delta items come first, as in search: a deleted item has no thumbnail, an
upserted one has the one its newest log entry carries; a base item's comes from
its snapshot's packs (``service.snapshots.thumbnail_store``). The snapshot is leased as
for a search. Answers carry an ``ETag`` (the pack's sha256 and offset, or the
delta entry's id: both name immutable bytes) and ``Cache-Control: public,
max-age=60``; a request whose ``If-None-Match`` matches gets 304.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Response, request

from service.errors import ApiError
from service.snapshots.snapshot_loader import LoadedSnapshot
from service.state import ServiceState, get_state
from vsearch.embedding import thumbnails
from vsearch.search import DeltaIndex
from vsearch.storage import ObjectNotFound, StoreError

bp = Blueprint("thumbnails", __name__)
MAX_AGE_S = 60


def _not_found(item: int, why: str) -> ApiError:
    return ApiError(404, "thumbnail_not_found", f"item {item}: {why}")


@dataclass(frozen=True)
class _Source:
    """Where one thumbnail's bytes are: a delta-log entry, or a range of a pack."""

    etag: str
    entry: str | None = None
    pack: str = ""
    offset: int = 0
    length: int = 0
    crc: int = 0


def _locate(snap: LoadedSnapshot, delta: DeltaIndex, item: int) -> _Source:
    where = delta.thumbnail_entry(item, snap.watermark)
    if where == "deleted":
        raise _not_found(item, "was deleted")
    if where == "none":
        raise _not_found(item, "was upserted without an image")
    if where != "absent":
        return _Source(f"d-{where}", entry=where)
    found = snap.thumbnails.locate(item) if snap.thumbnails is not None else None
    if found is None:
        in_base = any(item in shard.stored for shard in snap.searcher.shards)
        raise _not_found(item, "has no thumbnail" if in_base else f"is not in {snap.snapshot_id}")
    pack, offset, length, crc = found
    return _Source(f"{pack.sha256[:24]}-{offset}-{length}", None, pack.uri, offset, length, crc)


def _read(state: ServiceState, item: int, src: _Source) -> bytes:
    if src.entry is not None:
        try:
            data = state.replica.log.thumbnail(src.entry)
        except Exception as e:  # the delta log (Redis, SQLite) is down
            state.delta_log_check.failed(e)
            raise ApiError(503, "thumbnail_unavailable", f"the delta log: {e}") from e
        if data is None:  # trimmed since: folded into a newer snapshot
            raise _not_found(item, "its delta entry was folded into a newer snapshot; retry")
        return data
    try:
        data = state.store.get_range(src.pack, src.offset, src.length)
        return thumbnails.checked(data, src.crc, f"item {item} in {src.pack}")
    except thumbnails.ThumbnailCorrupt as e:
        raise ApiError(503, "thumbnail_unavailable", str(e)) from None
    except (ObjectNotFound, StoreError, OSError) as e:
        raise ApiError(503, "thumbnail_unavailable", f"the store: {e}") from None


@bp.get("/v1/items/<item>/thumbnail")
def thumbnail(item: str) -> Response:
    state = get_state()
    if not item.isdecimal() or len(item) > 19 or int(item) >= 2**63:
        raise ApiError(400, "invalid_id", "an item id is an integer in [0, 2**63)")
    item_id = int(item)
    with state.registry.lease() as snap:
        delta = state.replica.delta
        assert delta is not None  # created before the first snapshot is swapped in
        src = _locate(snap, delta, item_id)
    if request.if_none_match.contains(src.etag):
        return _answer(Response(status=304), src.etag)
    data = state.thumbnail_cache.get(src.etag)
    if data is None:
        data = _read(state, item_id, src)
        state.thumbnail_cache.put(src.etag, data)
    return _answer(Response(data, 200, mimetype=thumbnails.content_type(data)), src.etag)


def _answer(response: Response, etag: str) -> Response:
    response.set_etag(etag)
    response.headers["Cache-Control"] = f"public, max-age={MAX_AGE_S}"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
