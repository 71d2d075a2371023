"""Shard build: one populated copy of the trained index per shard.

``build_shard`` is the partition worker of this stage: Airflow maps it over
shards, the CLI loops over it and the tests call it — the same function. A
vector goes to shard ``shard_of(id, nshards)`` (a hash of the id), so the
assignment does not depend on which partition or snapshot the id comes from.
Each shard reads every partition and keeps its own ids; memory stays at one
partition plus the shard's index.
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypedDict

import numpy as np

from vsearch.canonical_json import fingerprint as json_fingerprint
from vsearch.index.layout import (
    shard_key,
    shard_of,
    shard_record_key,
    trained_key,
)
from vsearch.index.partition_vectors import inventory, iter_vectors
from vsearch.index.structure import get_index, put_index, refine_store_bytes
from vsearch.index.trained_record import read_trained_record
from vsearch.storage import ObjectNotFound, ObjectStore, get_json, put_json

log = logging.getLogger(__name__)

EMPTY_ID_RANGE = [-1, -1]  # an empty shard holds no id


class ShardResult(TypedDict):
    """A built shard: the fields of a ``vsearch.manifest.ShardInfo``."""

    uri: str  # the shard's key
    sha256: str
    bytes: int
    ntotal: int
    id_range: list[int]  # [min, max]; [-1, -1] when empty


class DuplicateIds(ValueError):
    """The same id appears more than once in the snapshot's embeddings."""


def build_shard(store: ObjectStore, snapshot_id: str, shard: int, nshards: int) -> ShardResult:
    """Add the shard's vectors to a copy of the trained index and write it.

    Returns the fields of a ``vsearch.manifest.ShardInfo``: ``uri``, ``sha256``,
    ``bytes``, ``ntotal``, ``id_range`` ([min, max], [-1, -1] when empty).
    """
    if not 0 <= shard < nshards:
        raise ValueError(f"shard must be in [0, {nshards}), got {shard}")
    trained = read_trained_record(store, snapshot_id)
    inv = inventory(store, snapshot_id)
    inputs = {"trained": trained.sha256, "partitions": inv.fingerprint(), "nshards": nshards}
    fingerprint = json_fingerprint(inputs)
    key, record_key = shard_key(snapshot_id, shard), shard_record_key(snapshot_id, shard)
    record = get_json(store, record_key)
    if record and record["input_fingerprint"] == fingerprint and _intact(store, record):
        log.info("%s: already built from the same inputs", key)
        return ShardResult(
            uri=record["uri"],
            sha256=record["sha256"],
            bytes=record["bytes"],
            ntotal=record["ntotal"],
            id_range=record["id_range"],
        )

    index = get_index(store, trained_key(snapshot_id))
    if index.ntotal:
        raise ValueError(f"{trained_key(snapshot_id)} is not empty ({index.ntotal} vectors)")
    started = time.perf_counter()
    seen: list[np.ndarray] = []
    for xb, ids in iter_vectors(store, inv):
        mine = shard_of(ids, nshards) == shard
        if mine.any():
            index.add_with_ids(xb[mine], ids[mine])
            seen.append(ids[mine])
    all_ids = np.concatenate(seen) if seen else np.zeros(0, dtype=np.int64)
    _check_unique(all_ids, snapshot_id)
    seconds = time.perf_counter() - started
    info = put_index(store, key, index)
    id_range = [int(all_ids.min()), int(all_ids.max())] if len(all_ids) else EMPTY_ID_RANGE
    assert info.sha256 is not None
    result = ShardResult(
        uri=key, sha256=info.sha256, bytes=info.size, ntotal=int(index.ntotal), id_range=id_range
    )
    put_json(
        store,
        record_key,
        {
            **result,
            "shard": shard,
            "nshards": nshards,
            "input_fingerprint": fingerprint,
            "trained_sha256": trained.sha256,
            # Re-ranking codes: the part the service may leave on disk (memory-mapped).
            "refine_bytes": refine_store_bytes(index),
            "add_seconds": round(seconds, 3),
        },
    )
    log.info("built %s: %d vectors in %.1fs", key, index.ntotal, seconds)
    return result


def read_shard_records(
    store: ObjectStore, snapshot_id: str, nshards: int | None = None
) -> list[dict[str, Any]]:
    """The commit records of every shard of the snapshot, in shard order.

    ``nshards`` defaults to what the records say; they must agree and be complete,
    and each must have been built from the current trained index.
    """
    trained = read_trained_record(store, snapshot_id)
    prefix = shard_record_key(snapshot_id, 0).rsplit("/", 1)[0] + "/shard-"
    found = {}
    for info in store.list(prefix):
        if info.key.endswith(".json"):
            rec = get_json(store, info.key)
            if rec is not None:
                found[int(rec["shard"])] = rec
    if nshards is None:
        counts = {r["nshards"] for r in found.values()}
        if len(counts) != 1:
            raise ObjectNotFound(
                f"{snapshot_id}: shard records "
                + (f"disagree on nshards {sorted(counts)}; pass nshards" if counts else "missing")
            )
        (nshards,) = counts
    records = []
    for j in range(nshards):
        rec = found.get(j)
        if rec is None or rec["nshards"] != nshards:
            raise ObjectNotFound(f"{snapshot_id}: shard {j} of {nshards} is not built")
        if rec["trained_sha256"] != trained.sha256:
            raise ValueError(
                f"{snapshot_id}: shard {j} was built from another trained index; rebuild it"
            )
        records.append(rec)
    return records


def _intact(store: ObjectStore, record: dict[str, Any]) -> bool:
    try:
        info = store.head(record["uri"])
    except ObjectNotFound:
        return False
    return bool(info.size == record["bytes"])


def _check_unique(ids: np.ndarray, snapshot_id: str) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if len(uniq) != len(ids):
        dup = uniq[counts > 1][:5].tolist()
        raise DuplicateIds(
            f"{snapshot_id}: {len(ids) - len(uniq)} duplicate ids across partitions, e.g. {dup}"
        )
