"""GET /v1/items/{id}/thumbnail on a snapshot of real photos: base and delta items,
ETag/304, cache headers, JSON 404s and 400s, ranged reads, the bounded cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.snapshots.thumbnail_store import ThumbnailCache
from tests.embedding import images
from tests.fixtures.photos import PhotoSnapshot
from tests.service.conftest import API_KEY, AppFactory
from vsearch.storage import LocalStore

AUTH = {"X-API-Key": API_KEY}


class RangeCountingStore(LocalStore):
    """The photo store, counting whole reads and ranged reads of thumbnail packs (an
    in-process spy over the real local store: there is no server to count at)."""

    def __init__(self, root: Any) -> None:
        super().__init__(root)
        self.pack_gets = 0
        self.ranged: list[tuple[str, int, int]] = []

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self.ranged.append((key, offset, length))
        return super().get_range(key, offset, length)

    def get_with_info(self, key: str) -> Any:  # get() and whole reads come through here
        self.pack_gets += key.endswith(".thumbs")
        return super().get_with_info(key)


@pytest.fixture
def client(photo_snapshot: PhotoSnapshot, make_app: AppFactory) -> Any:
    return make_app(photo_snapshot.store).test_client()


def test_a_base_item_thumbnail_with_cache_headers(
    photo_snapshot: PhotoSnapshot, client: Any
) -> None:
    key, jpeg = next(iter(photo_snapshot.photos.items()))
    r = client.get(f"/v1/items/{photo_snapshot.id_of(key)}/thumbnail")
    assert r.status_code == 200 and r.mimetype == "image/webp"
    assert r.headers["Cache-Control"] == "public, max-age=60"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    w, h = images.size_of(r.data)
    ow, oh = images.size_of(jpeg)
    assert max(w, h) == 160 and abs(w / h - ow / oh) < 0.05
    etag = r.headers["ETag"]
    again = client.get(f"/v1/items/{photo_snapshot.id_of(key)}/thumbnail",
                       headers={"If-None-Match": etag})  # fmt: skip
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    other = client.get(
        f"/v1/items/{photo_snapshot.id_of(list(photo_snapshot.photos)[1])}/thumbnail"
    )
    assert other.headers["ETag"] != etag and other.data != r.data


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/items/12345/thumbnail", 404, "thumbnail_not_found"),
        ("/v1/items/abc/thumbnail", 400, "invalid_id"),
        ("/v1/items/-1/thumbnail", 400, "invalid_id"),
        ("/v1/items/1.5/thumbnail", 400, "invalid_id"),
        (f"/v1/items/{2**63}/thumbnail", 400, "invalid_id"),
        (f"/v1/items/{'9' * 400}/thumbnail", 400, "invalid_id"),
        ("/v1/items/%C3%A9/thumbnail", 400, "invalid_id"),
    ],
)
def test_bad_and_unknown_ids_get_a_json_reason(
    client: Any, path: str, status: int, code: str
) -> None:
    r = client.get(path)
    assert r.status_code == status and r.json["error"]["code"] == code, r.data


def test_delta_items_come_first(photo_snapshot: PhotoSnapshot, client: Any) -> None:
    keys = list(photo_snapshot.photos)
    base_id = photo_snapshot.id_of(keys[2])
    base_thumb = client.get(f"/v1/items/{base_id}/thumbnail").data
    # An upsert with an image gets a thumbnail of its own, served before the base one.
    photo = images.jpeg(900, 300, seed=7)
    r = client.put("/v1/items", headers=AUTH, json={"items": [
        {"id": 777, "image_b64": _b64(photo), "metadata": {"caption": "new"}},
        {"id": base_id, "image_b64": _b64(photo)},
    ]})  # fmt: skip
    assert r.status_code == 200, r.json
    new = client.get("/v1/items/777/thumbnail")
    assert new.status_code == 200 and images.size_of(new.data) == (160, 53)
    assert new.headers["ETag"].startswith('"d-')
    replaced = client.get(f"/v1/items/{base_id}/thumbnail")
    assert replaced.data == new.data and replaced.data != base_thumb
    # A vector upsert has no image: no thumbnail, and the base one is no longer it.
    x = np.ones(photo_snapshot.manifest.encoder.dim, "float32").tolist()
    r = client.put("/v1/items", headers=AUTH, json={"items": [{"id": base_id, "vector": x}]})
    assert r.status_code == 200
    r = client.get(f"/v1/items/{base_id}/thumbnail")
    assert r.status_code == 404 and "without an image" in r.json["error"]["message"]
    # Deleted: gone, base or delta.
    client.post("/v1/items/delete", headers=AUTH, json={"ids": [777, base_id]})
    for item in (777, base_id):
        r = client.get(f"/v1/items/{item}/thumbnail")
        assert r.status_code == 404 and "deleted" in r.json["error"]["message"]


def test_one_thumbnail_is_one_ranged_read_then_cached(
    photo_snapshot: PhotoSnapshot, make_app: AppFactory
) -> None:
    store = RangeCountingStore(photo_snapshot.store.root)
    client = make_app(store, THUMBNAIL_CACHE_MB=1).test_client()
    store.pack_gets = 0
    ids = [photo_snapshot.id_of(k) for k in list(photo_snapshot.photos)[:5]]
    for item in ids:
        assert client.get(f"/v1/items/{item}/thumbnail").status_code == 200
    assert store.pack_gets == 0 and len(store.ranged) == 5
    assert all(length < 20_000 for _, _, length in store.ranged)
    for item in ids:  # from the in-memory cache now
        assert client.get(f"/v1/items/{item}/thumbnail").status_code == 200
    assert len(store.ranged) == 5


def test_the_cache_is_bounded_by_bytes() -> None:
    cache = ThumbnailCache(max_bytes=10)
    cache.put("a", b"1234")
    cache.put("b", b"5678")
    assert cache.get("a") == b"1234"  # a is now the most recent
    cache.put("c", b"9abc")
    assert cache.get("b") is None and cache.get("a") == b"1234" and cache.nbytes == 8
    cache.put("big", b"x" * 11)  # larger than the cache: not kept
    assert cache.get("big") is None and cache.nbytes == 8


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
