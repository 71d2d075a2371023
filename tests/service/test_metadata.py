"""Metadata stores: idempotent loads from a snapshot's files, checksums, both backends;
answers carry the stored text as written."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.snapshots import build_snapshot, publish, sample_vectors, snapshot_id
from tests.service.conftest import AppFactory
from tests.service.redis_proc import KillableRedis
from vsearch.manifest import MetadataInfo
from vsearch.serving.metadata_store import (
    MetadataError,
    MetadataStore,
    MetadataUnavailable,
    load_snapshot_metadata,
    open_metadata_store,
)
from vsearch.storage import ObjectStore


@pytest.fixture(params=["sqlite", "redis"])
def meta_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        store = open_metadata_store(f"sqlite://{tmp_path}/meta.sqlite3")
        yield store
        store.close()
        return
    server = KillableRedis(tmp_path / "redis", appendonly=False)
    server.start()
    try:
        store = open_metadata_store(server.url)
        yield store
        store.close()
    finally:
        server.stop()


def test_load_is_idempotent_and_rows_come_back(
    local_store: ObjectStore, meta_store: MetadataStore
) -> None:
    ids = np.arange(50, dtype="int64") + 7
    m = build_snapshot(local_store, snapshot_id(1), sample_vectors(50, 64, 1), ids)
    assert load_snapshot_metadata(local_store, m, meta_store) == 50
    assert load_snapshot_metadata(local_store, m, meta_store) == 0
    got = meta_store.get_many([7, 56, 999])
    assert sorted(got) == [7, 56]
    assert got[7] == {"id": 7, "key": f"{m.snapshot_id}/7", "snapshot": m.snapshot_id}


def test_a_file_that_fails_its_checksum_writes_nothing(
    local_store: ObjectStore, meta_store: MetadataStore
) -> None:
    m = build_snapshot(
        local_store, snapshot_id(1), sample_vectors(10, 64, 1), np.arange(10, dtype="int64")
    )
    ref = m.metadata.files[0]
    data = local_store.get(ref.uri).replace(b'"key"', b'"kex"')
    local_store.put(ref.uri, io.BytesIO(data))
    with pytest.raises(MetadataError, match="sha256"):
        load_snapshot_metadata(local_store, m, meta_store)
    assert meta_store.get_many(list(range(10))) == {}
    assert not meta_store.is_loaded(m.snapshot_id)


def test_a_redis_store_that_cannot_be_reached_raises_metadata_unavailable(tmp_path: Path) -> None:
    """What the service turns into 503 metadata_unavailable (never a raw redis error: a 500)."""
    server = KillableRedis(tmp_path / "redis", appendonly=True)
    server.start()
    store = open_metadata_store(server.url)
    try:
        store.ping()
        store.put_many([(1, '{"id": 1}')])
        server.kill()
        with pytest.raises(MetadataUnavailable, match="unreachable"):
            store.get_many([1])
        with pytest.raises(MetadataUnavailable):
            store.ping()
        server.start()
        store.ping()
        assert store.get_many([1]) == {1: {"id": 1}}
    finally:
        store.close()
        server.stop()


def test_a_reachable_store_answers_pings(meta_store: MetadataStore) -> None:
    meta_store.ping()


# Valid JSON that any re-serialisation (json or orjson, parse then dump) would rewrite:
# key order kept, but the spacing, the escape, the numbers' spelling would change.
STORED_AS_WRITTEN = (
    '{"title":  "caf\\u00e9",  "id": %d, "w": 1.0, "h": 1.50e2, "tags": [ "a" ,"b" ],'
    ' "nested": {"z": 1, "a": -0.0}}'
)


def test_search_answers_splice_hit_metadata_byte_for_byte_as_the_snapshot_wrote_it(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    """Metadata is stored as its JSON text and spliced into answers unparsed
    (``orjson.Fragment`` in service/api/search_api.py): parsing and dumping it again per
    hit would cost time on every search and change the text."""
    xb, ids = sample_vectors(20, 64, 1), np.arange(20, dtype="int64")
    m = build_snapshot(local_store, snapshot_id(1), xb, ids, nshards=1)
    lines = "".join(STORED_AS_WRITTEN % i + "\n" for i in ids).encode()
    info = local_store.put(m.metadata.files[0].uri, io.BytesIO(lines))
    assert info.sha256 is not None
    ref = dataclasses.replace(m.metadata.files[0], sha256=info.sha256, bytes=info.size)
    publish(local_store, dataclasses.replace(m, metadata=MetadataInfo((ref,), len(ids))))
    client = make_app(local_store).test_client()
    r = client.post("/v1/search", json={"vector": [float(v) for v in xb[3]], "k": 2})
    assert r.status_code == 200 and r.json["hits"][0]["id"] == 3, r.json
    assert r.json["hits"][0]["metadata"]["title"] == "café"
    for hit in r.json["hits"]:
        assert (STORED_AS_WRITTEN % hit["id"]).encode() in r.data, r.data
