"""What a snapshot must pass before it is swapped in, and how a failure is remembered.

Regressions from a review of the service, each on real faiss files in a real local store:

- a crafted IVF shard (quantizer larger than nlist) passed sha256, ntotal and dim,
  went live and answered 500 to every search: the canary now refuses it;
- a 45-byte shard whose header claims gigabytes took the worker's memory with it:
  shards are now read first in a child process capped at the memory budget;
- out of memory, a malformed manifest, an unknown manifest field and a missing shard
  were transient (retried with a traceback every poll): they are refusals now.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import resource
import struct
from datetime import UTC, datetime
from typing import Any

import faiss
import numpy as np
import pytest

from tests.fixtures.snapshots import build_snapshot, publish, sample_vectors, snapshot_id
from tests.service.conftest import AppFactory, vector_query
from vsearch.catalog import CURRENT_KEY, Pointer, manifest_key
from vsearch.manifest import Manifest
from vsearch.storage import ObjectStore

D, N = 64, 1000


def serving(store: ObjectStore, make_app: AppFactory, **config: Any) -> tuple[Any, Any, Any]:
    """An app serving snapshot 1 (flat shards): (client, state, xb)."""
    xb = sample_vectors(N, D, seed=1)
    publish(store, build_snapshot(store, snapshot_id(1), xb, np.arange(N, dtype="int64")))
    app = make_app(store, **config)
    return app.test_client(), app.extensions["vsearch"], xb


def with_shard(store: ObjectStore, m: Manifest, j: int, data: bytes) -> Manifest:
    """``m`` with shard ``j`` replaced by ``data`` (a matching sha256: only the content lies)."""
    info = store.put(m.shards[j].uri, data)
    assert info.sha256 is not None
    shards = list(m.shards)
    shards[j] = dataclasses.replace(shards[j], sha256=info.sha256, bytes=info.size)
    return dataclasses.replace(m, shards=tuple(shards))


def assert_refused_and_still_serving(
    client: Any, state: Any, xb: np.ndarray, expected: str, outcome: str | None = None
) -> dict[str, Any]:
    """Snapshot 2 refused (``outcome``: the first poll's, when the caller made it), not
    retried, ``expected`` in the reason, snapshot 1 still serving."""
    assert (outcome or state.replica.tick()) == "refused"
    assert state.replica.tick() == "unchanged"  # remembered until CURRENT moves
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["snapshot_id"] == snapshot_id(1)
    refused: dict[str, Any] = ready.json["refused"]
    assert refused["snapshot_id"] == snapshot_id(2) and expected in refused["reason"], refused
    assert ready.json["last_error"] is None
    r = vector_query(client, xb[7], k=3)
    assert r.status_code == 200 and r.json["snapshot_id"] == snapshot_id(1)
    assert r.json["hits"][0]["id"] == 7
    return refused


def crafted_ivf(xb: np.ndarray, ids: np.ndarray) -> bytes:
    """An IVF64 whose coarse quantizer holds 128 centroids: it reads, then every search that
    probes one of the extra lists fails inside faiss."""
    index = faiss.index_factory(D, "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(xb)
    index.add_with_ids(xb, ids)
    ivf = faiss.extract_index_ivf(index)
    quantizer = faiss.IndexFlatIP(D)
    quantizer.add(
        np.vstack([faiss.downcast_index(ivf.quantizer).reconstruct_n(0, 64), xb[::15][:64]])
    )
    ivf.quantizer, ivf.own_fields = quantizer, False
    data = faiss.serialize_index(index).tobytes()
    assert (
        faiss.extract_index_ivf(faiss.deserialize_index(faiss.serialize_index(index))).nlist == 64
    )
    return data


def test_an_index_that_reads_but_cannot_search_is_refused_by_the_canary(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    client, state, xb = serving(local_store, make_app)
    xb2 = sample_vectors(N, D, seed=2)
    ids2 = np.arange(N, dtype="int64") + 2_000_000
    m = build_snapshot(local_store, snapshot_id(2), xb2, ids2, nshards=1)
    m = with_shard(local_store, m, 0, crafted_ivf(xb2, ids2))
    ivf = dataclasses.replace(m.index, factory="IVF64,Flat", nlist=64, default_nprobe=8)
    publish(local_store, dataclasses.replace(m, index=ivf))
    refused = assert_refused_and_still_serving(client, state, xb, "canary")
    reason = refused["reason"]
    assert reason.startswith("canary: searching stored item 2000") and "at nprobe 8" in reason
    assert "Invalid key=" in reason and len(reason) < 300, reason  # faiss's reason, no C++


def flat_header_claiming(nbytes: int) -> bytes:
    """A 45-byte IndexFlatIP file whose codes vector claims ``nbytes`` bytes.

    The codes are mapped from the file, so faiss checks the claim against the file's size.
    """
    header = faiss.serialize_index(faiss.IndexFlatIP(D)).tobytes()
    assert len(header) == 45
    return header[:-8] + struct.pack("<Q", nbytes // 4)  # the count is of floats


def id_map_header_claiming(nbytes: int) -> bytes:
    """A 90-byte IDMap,Flat file whose id map claims ``nbytes`` bytes.

    The id map is copied out of the file: faiss allocates what it claims, then reads.
    """
    header = faiss.serialize_index(faiss.IndexIDMap(faiss.IndexFlatIP(D))).tobytes()
    assert len(header) == 90
    return header[:-8] + struct.pack("<Q", nbytes // 8)  # the count is of int64 ids


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.parametrize(
    ("shard", "expected"),
    [
        (id_map_header_claiming(1 << 30), ("memory", "budget")),
        (flat_header_claiming(1 << 30), ("unreadable index", "read error")),
    ],
    ids=["copied-part", "mapped-part"],
)
def test_a_lying_header_cannot_allocate_beyond_the_budget_in_the_worker(
    local_store: ObjectStore, make_app: AppFactory, shard: bytes, expected: tuple[str, str]
) -> None:
    client, state, xb = serving(local_store, make_app, MEMORY_BUDGET_BYTES=64 << 20)
    m = build_snapshot(local_store, snapshot_id(2), xb, np.arange(N, dtype="int64"), nshards=1)
    publish(local_store, with_shard(local_store, m, 0, shard))
    before = peak_rss()
    outcome = state.replica.tick()
    grown = peak_rss() - before
    assert grown < 256 << 20, f"the worker allocated {grown >> 20} MiB for a {len(shard)}-byte file"
    refused = assert_refused_and_still_serving(client, state, xb, "shards[0]", outcome)
    assert all(word in refused["reason"] for word in expected), refused


def test_out_of_memory_is_a_refusal_not_a_retry(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    """The default budget (half the RAM): a header claiming four times the RAM (below
    faiss's own 1 TiB cap per vector) runs out of memory; that is final for this CURRENT."""
    client, state, xb = serving(local_store, make_app)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    m = build_snapshot(local_store, snapshot_id(2), xb, np.arange(N, dtype="int64"), nshards=1)
    claim = min(4 * ram, (1 << 40) - (1 << 30))
    publish(local_store, with_shard(local_store, m, 0, id_map_header_claiming(claim)))
    refused = assert_refused_and_still_serving(client, state, xb, "shards[0]")
    assert "memory" in refused["reason"], refused


def write_current(store: ObjectStore, sid: str, manifest_bytes: bytes) -> None:
    """Point CURRENT at ``manifest_bytes`` as snapshot ``sid`` by hand, at a new time
    (publish_snapshot would refuse a malformed manifest)."""
    store.put(manifest_key(sid), manifest_bytes)
    sha = hashlib.sha256(manifest_bytes).hexdigest()
    pointer = Pointer(sid, manifest_key(sid), sha, datetime.now(UTC).isoformat())
    store.put(CURRENT_KEY, pointer.to_json())


def unknown_field(store: ObjectStore, m: Manifest) -> str:
    write_current(store, m.snapshot_id, json.dumps({**m.to_dict(), "shard_count": 2}).encode())
    return "shard_count"


def not_json(store: ObjectStore, m: Manifest) -> str:
    write_current(store, m.snapshot_id, b'{"schema_version": 1,')
    return "manifest manifests/"


def missing_shard(store: ObjectStore, m: Manifest) -> str:
    publish(store, m)
    store.delete(m.shards[1].uri)
    return "shards[1]"


def missing_metadata(store: ObjectStore, m: Manifest) -> str:
    publish(store, m)
    store.delete(m.metadata.files[0].uri)
    return "metadata"


BAD_MANIFESTS = {
    "unknown field": unknown_field,
    "not JSON": not_json,
    "missing shard": missing_shard,
    "missing metadata file": missing_metadata,
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_a_bad_manifest_or_missing_object_is_refused_once_with_one_log_line(
    local_store: ObjectStore, make_app: AppFactory, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, state, xb = serving(local_store, make_app)
    m = build_snapshot(local_store, snapshot_id(2), xb, np.arange(N, dtype="int64") + 5)
    expected = BAD_MANIFESTS[case](local_store, m)
    with caplog.at_level(logging.INFO, logger="service.snapshots.registry"):
        assert_refused_and_still_serving(client, state, xb, expected)
    errors = [
        r for r in caplog.records if r.name == "service.snapshots.registry" and r.levelno >= 30
    ]
    assert len(errors) == 1 and errors[0].exc_info is None, [r.getMessage() for r in errors]

    fixed = build_snapshot(local_store, snapshot_id(3), xb, np.arange(N, dtype="int64") + 9)
    publish(local_store, fixed)  # CURRENT moves: served, and the refusal is gone
    assert state.replica.tick() == "swapped"
    assert client.get("/readyz").json["refused"] is None


def test_a_refusal_is_tried_again_only_when_current_changes(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    """Remembered per CURRENT (snapshot, manifest sha256, update time): the same pointer is
    not retried, a rewritten one is."""
    client, state, xb = serving(local_store, make_app)
    m = build_snapshot(local_store, snapshot_id(2), xb, np.arange(N, dtype="int64") + 5)
    shard = local_store.get(m.shards[1].uri)
    missing_shard(local_store, m)
    assert state.replica.tick() == "refused"
    local_store.put(m.shards[1].uri, shard)
    assert state.replica.tick() == "unchanged"
    write_current(local_store, m.snapshot_id, local_store.get(manifest_key(m.snapshot_id)))
    assert state.replica.tick() == "swapped"
    assert client.get("/readyz").json["refused"] is None
