"""POST /v1/search through the Flask test client over a real published snapshot."""

from __future__ import annotations

import base64
from typing import Any

import faiss
import numpy as np
import pytest

from tests.fixtures.snapshots import build_snapshot, publish, sample_vectors, snapshot_id
from tests.service.conftest import AppFactory, BuiltSnapshot, HashEncoder, vector_query
from vsearch.storage import ObjectStore

N, D = 600, 64


@pytest.fixture
def flat(local_store: ObjectStore) -> tuple[ObjectStore, np.ndarray, np.ndarray]:
    xb = sample_vectors(N, D, seed=3)
    ids = np.arange(N, dtype="int64") * 7 + 100  # ids that are not row numbers
    publish(local_store, build_snapshot(local_store, snapshot_id(1), xb, ids, nshards=3))
    return local_store, xb, ids


def exact_top(xb: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(D))
    index.add_with_ids(xb, ids)
    _, found = index.search(q[None, :], k)
    return [int(i) for i in found[0]]


def test_vector_search_matches_exact_search_across_shards(flat: Any, make_app: AppFactory) -> None:
    store, xb, ids = flat
    client = make_app(store).test_client()
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = rng.standard_normal(D).astype("float32")
        q /= np.linalg.norm(q)
        r = vector_query(client, q, k=10)
        assert r.status_code == 200, r.json
        body = r.json
        assert [h["id"] for h in body["hits"]] == exact_top(xb, ids, q, 10)
        assert body["snapshot_id"] == snapshot_id(1)
        assert all(h["source"] == "base" for h in body["hits"])
        scores = [h["score"] for h in body["hits"]]
        assert scores == sorted(scores, reverse=True)
        hit = body["hits"][0]
        assert hit["metadata"] == {
            "id": hit["id"],
            "key": f"{snapshot_id(1)}/{hit['id']}",
            "snapshot": snapshot_id(1),
        }
        assert body["took_ms"] > 0


def test_base64_vector_and_unnormalised_vector_give_the_same_hits(
    flat: Any, make_app: AppFactory
) -> None:
    store, xb, _ = flat
    client = make_app(store).test_client()
    q = xb[5] * 3.0
    b64 = base64.b64encode(q.astype("<f4").tobytes()).decode()
    a = vector_query(client, q).json["hits"]
    b = client.post("/v1/search", json={"vector": b64}).json["hits"]
    assert [h["id"] for h in a] == [h["id"] for h in b]
    assert a[0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_more_like_this_by_id_excludes_the_item(flat: Any, make_app: AppFactory) -> None:
    store, xb, ids = flat
    client = make_app(store).test_client()
    r = client.post("/v1/search", json={"id": int(ids[10]), "k": 5})
    assert r.status_code == 200, r.json
    assert [h["id"] for h in r.json["hits"]] == exact_top(xb, ids, xb[10], 6)[1:]
    assert client.post("/v1/search", json={"id": 5}).status_code == 404


def test_text_query_through_the_encoder_and_cache(flat: Any, make_app: AppFactory) -> None:
    store, xb, ids = flat
    encoder = HashEncoder()
    client = make_app(store, ENCODER=encoder).test_client()
    q = encoder.encode_texts(["a red bicycle"])[0]
    calls = encoder.calls
    first = client.post("/v1/search", json={"text": "a red bicycle", "k": 3})
    second = client.post("/v1/search", json={"text": "a red bicycle", "k": 3})
    assert first.status_code == 200, first.json
    assert [h["id"] for h in first.json["hits"]] == exact_top(xb, ids, q, 3)
    assert second.json["hits"] == first.json["hits"]
    assert encoder.calls == calls + 1  # the second query came from the in-memory cache


def test_text_without_an_encoder_is_a_400(flat: Any, make_app: AppFactory) -> None:
    client = make_app(flat[0]).test_client()
    r = client.post("/v1/search", json={"text": "cats"})
    assert r.status_code == 400 and r.json["error"]["code"] == "no_encoder"


BAD_BODIES: list[Any] = [
    {},
    {"vector": [0.1] * D, "text": "both"},
    {"vector": [0.1] * 3},
    {"vector": [0.0] * D},
    {"vector": ["a"] * D},
    {"vector": [True] * D},
    {"vector": "not base64!"},
    {"vector": base64.b64encode(b"abc").decode()},
    {"vector": [0.1] * D, "k": 0},
    {"vector": [0.1] * D, "k": 10_000},
    {"vector": [0.1] * D, "k": "5"},
    {"vector": [0.1] * D, "k": 2.5},
    {"vector": [0.1] * D, "nprobe": 4, "target_recall": 0.9},
    {"vector": [0.1] * D, "target_recall": 2},
    {"vector": [0.1] * D, "exact": "yes"},
    {"vector": [0.1] * D, "colour": "red"},
    {"id": -1},
    {"id": 2**64},
    {"id": "12"},
    {"text": ""},
    {"text": "x" * 5000},
    {"image": "%%%"},
    {"image_url": "ftp://example.com/a.jpg"},
    [1, 2, 3],
    "just a string",
    None,
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=[str(i) for i in range(len(BAD_BODIES))])
def test_bad_input_is_a_4xx_json_error(flat: Any, make_app: AppFactory, body: Any) -> None:
    client = make_app(flat[0]).test_client()
    r = client.post("/v1/search", json=body)
    assert 400 <= r.status_code < 500, (r.status_code, r.json)
    assert set(r.json["error"]) == {"code", "message"}


def test_malformed_json_oversized_body_and_wrong_method(flat: Any, make_app: AppFactory) -> None:
    client = make_app(flat[0], MAX_REQUEST_MB=0.01).test_client()
    r = client.post("/v1/search", data=b"{not json", content_type="application/json")
    assert r.status_code == 400 and r.json["error"]["code"]
    r = client.post("/v1/search", json={"vector": [0.1] * 5000})
    assert r.status_code == 413 and r.json["error"]["code"] == "request_entity_too_large"
    r = client.get("/v1/search")
    assert r.status_code == 405 and r.json["error"]["code"] == "method_not_allowed"
    assert client.get("/nope").json["error"]["code"] == "not_found"


def png(seed: int) -> bytes:
    import io

    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_image_queries_by_upload_and_base64_agree_and_images_can_be_upserted(
    flat: Any, make_app: AppFactory
) -> None:
    from tests.service.conftest import AUTH

    store, _, _ = flat
    client = make_app(store, ENCODER=HashEncoder()).test_client()
    image = png(1)
    by_b64 = client.post("/v1/search", json={"image": base64.b64encode(image).decode(), "k": 4})
    upload = client.post(
        "/v1/search",
        data={"image": (__import__("io").BytesIO(image), "q.png"), "k": "4"},
        content_type="multipart/form-data",
    )
    assert by_b64.status_code == 200 and upload.status_code == 200, (by_b64.json, upload.json)
    assert by_b64.json["hits"] == upload.json["hits"]
    item = {"id": 77_777, "image": base64.b64encode(image).decode(), "metadata": {"kind": "img"}}
    assert client.put("/v1/items", json={"items": [item]}, headers=AUTH).status_code == 200
    top = client.post("/v1/search", json={"image": base64.b64encode(image).decode(), "k": 1})
    assert top.json["hits"][0]["id"] == 77_777 and top.json["hits"][0]["source"] == "delta"
    bad = client.post("/v1/search", json={"image": base64.b64encode(b"not an image").decode()})
    assert bad.status_code == 400 and bad.json["error"]["code"] == "bad_image"


def test_deleting_more_than_the_overfetch_still_returns_the_exact_next_hits(
    flat: Any, make_app: AppFactory
) -> None:
    """Regression guard: the base over-fetch is capped (MAX_OVERFETCH) and must widen."""
    from tests.service.conftest import AUTH
    from vsearch.search import MAX_OVERFETCH

    store, xb, ids = flat
    client = make_app(store).test_client()
    q = xb[0]
    ranked = exact_top(xb, ids, q, N)
    deleted = ranked[: MAX_OVERFETCH + 50]
    r = client.post("/v1/items/delete", json={"ids": deleted}, headers=AUTH)
    assert r.status_code == 200
    hits = vector_query(client, q, k=10).json["hits"]
    assert [h["id"] for h in hits] == ranked[MAX_OVERFETCH + 50 : MAX_OVERFETCH + 60]


def test_upserts_bound_how_many_items_need_an_image_fetched_or_decoded(
    flat: Any, make_app: AppFactory
) -> None:
    from service.api.request_bodies import MAX_IMAGE_ITEMS
    from tests.service.conftest import AUTH

    client = make_app(flat[0], ENCODER=HashEncoder()).test_client()
    items = [
        {"id": i, "image_url": "http://example.invalid/x.jpg"} for i in range(MAX_IMAGE_ITEMS + 1)
    ]
    r = client.put("/v1/items", json={"items": items}, headers=AUTH)
    assert r.status_code == 400 and "at most" in r.json["error"]["message"]


def test_default_spec_shape_searches_with_nprobe_like_the_validator(
    built_snapshot: BuiltSnapshot, make_app: AppFactory
) -> None:
    """nprobe has to reach the IVF through IDMap, Refine and OPQ (a bare IVF parameter
    object makes IndexRefine throw), with the refine shortlist and the HNSW coarse
    quantizer's depth the validator measured the recall curve with."""
    from vsearch.index.structure import search_params

    store, manifest = built_snapshot.store, built_snapshot.manifest
    xb, ids = built_snapshot.xb, built_snapshot.ids
    assert manifest.index.factory.startswith("IDMap,OPQ") and "Refine" in manifest.index.factory
    client = make_app(store).test_client()
    shards = [faiss.deserialize_index(np.frombuffer(store.get(s.uri), "uint8"))
              for s in manifest.shards]  # fmt: skip
    queries = xb[[3, 300, 3000]] + 0.01
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for nprobe, q in zip([1, 4, manifest.index.nlist], queries, strict=True):
        r = vector_query(client, q, k=10, nprobe=nprobe)
        assert r.status_code == 200, r.json
        assert r.json["nprobe"] == nprobe
        expected = []
        for shard in shards:  # the validator's parameters, shard by shard, merged
            dist, found = shard.search(q[None, :], 10, params=search_params(shard, nprobe))
            expected += [(float(d), int(i)) for d, i in zip(dist[0], found[0], strict=True)]
        top = [i for _, i in sorted(expected, reverse=True)[:10]]
        assert [h["id"] for h in r.json["hits"]] == top
    exact = vector_query(client, xb[10], k=5, exact=True)
    assert exact.status_code == 200 and exact.json["hits"][0]["id"] == int(ids[10])
