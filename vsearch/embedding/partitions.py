"""Embedding partitions: what the embedding stage writes and the index stage reads.

One partition ``i`` of snapshot ``s`` is seven objects under ``embeddings/{s}/``:

- ``part-{i:05d}.npy``            vectors, float32 (or float16), shape (n, d), C order
- ``part-{i:05d}.ids.npy``        int64 ids, shape (n,), same row order
- ``part-{i:05d}.meta.jsonl``     one JSON object per row, same order, with ``id`` and ``key``
- ``part-{i:05d}.failures.jsonl`` items that could not be embedded: ``{key, reason}`` per line
- ``part-{i:05d}.thumbs``         the items' thumbnails, packed (``vsearch.embedding.thumbnails``)
- ``part-{i:05d}.thumbs.npy``     the pack's table: ``[id, offset, length, crc32]`` by id
- ``part-{i:05d}.json``           the commit record, written last: counts, sha256 of the
                                  six objects above, and the fingerprint of the input

Partitions committed before thumbnails existed have no pack: their records name
none, and their items have no thumbnail.

A partition exists only once its commit record does: a crashed writer leaves
objects without a record, which the next run overwrites. A rerun whose input
fingerprint matches the record does nothing (``is_committed``).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vsearch.canonical_json import json_bytes, json_line
from vsearch.embedding import thumbnails
from vsearch.storage import ObjectNotFound, ObjectStore

PREFIX = "embeddings/"


@dataclass(frozen=True)
class PartitionKeys:
    vectors: str
    ids: str
    meta: str
    failures: str
    thumbs: str
    thumbs_table: str
    record: str


def partition_keys(snapshot_id: str, index: int) -> PartitionKeys:
    base = f"{PREFIX}{snapshot_id}/part-{index:05d}"
    return PartitionKeys(
        vectors=f"{base}.npy",
        ids=f"{base}.ids.npy",
        meta=f"{base}.meta.jsonl",
        failures=f"{base}.failures.jsonl",
        thumbs=f"{base}.thumbs",
        thumbs_table=f"{base}.thumbs.npy",
        record=f"{base}.json",
    )


def encoder_key(snapshot_id: str) -> str:
    """The encoder's manifest info (``EncoderInfo``), written by the embedding stage."""
    return f"{PREFIX}{snapshot_id}/encoder.json"


@dataclass(frozen=True)
class PartitionRecord:
    """The commit record of a partition (``part-XXXXX.json``)."""

    snapshot_id: str
    index: int
    count: int
    dim: int
    dtype: str
    failures: int
    input_fingerprint: str  # identifies the input items and the encoder; equal means "done"
    encoder_id: str
    sha256: dict[str, str]  # object key -> sha256
    stats: dict[str, Any]  # free-form: timings, failure reasons by kind...


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json_line(r) for r in rows).encode()


def write_partition(
    store: ObjectStore,
    snapshot_id: str,
    index: int,
    xb: np.ndarray,
    ids: np.ndarray,
    meta: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    *,
    input_fingerprint: str,
    encoder_id: str,
    stats: dict[str, Any] | None = None,
    thumbs: Mapping[int, bytes] | None = None,
) -> PartitionRecord:
    """Write the six data objects, then the commit record. Each write is atomic.

    ``thumbs``: ``{id: thumbnail bytes}`` of (some of) the rows; items without one
    are left out of the pack.
    """
    if xb.ndim != 2 or len(xb) != len(ids) or len(ids) != len(meta):
        raise ValueError(f"shape mismatch: vectors {xb.shape}, ids {ids.shape}, meta {len(meta)}")
    if xb.dtype not in (np.float32, np.float16) or ids.dtype != np.int64:
        raise ValueError(
            f"vectors must be float32/float16 and ids int64, got {xb.dtype}/{ids.dtype}"
        )
    thumbs = thumbs or {}
    if not set(thumbs) <= set(ids.tolist()):
        raise ValueError("thumbnails given for ids that are not rows of the partition")
    keys = partition_keys(snapshot_id, index)
    pack_bytes, table = thumbnails.pack(thumbs)
    sha = {}
    for key, data in [
        (keys.vectors, _npy_bytes(xb)),
        (keys.ids, _npy_bytes(ids)),
        (keys.meta, _jsonl(meta)),
        (keys.failures, _jsonl(failures)),
        (keys.thumbs, pack_bytes),
        (keys.thumbs_table, thumbnails.table_bytes(table)),
    ]:
        info = store.put(key, data)
        assert info.sha256 is not None
        sha[key] = info.sha256
    record = PartitionRecord(
        snapshot_id=snapshot_id,
        index=index,
        count=len(ids),
        dim=int(xb.shape[1]),
        dtype=str(xb.dtype),
        failures=len(failures),
        input_fingerprint=input_fingerprint,
        encoder_id=encoder_id,
        sha256=sha,
        stats=stats or {},
    )
    store.put(keys.record, json_bytes(asdict(record)))
    return record


def read_record(store: ObjectStore, snapshot_id: str, index: int) -> PartitionRecord | None:
    try:
        data = store.get(partition_keys(snapshot_id, index).record)
    except ObjectNotFound:
        return None
    return PartitionRecord(**json.loads(data))


def is_committed(store: ObjectStore, snapshot_id: str, index: int, input_fingerprint: str) -> bool:
    record = read_record(store, snapshot_id, index)
    return record is not None and record.input_fingerprint == input_fingerprint


def read_partition(
    store: ObjectStore, snapshot_id: str, index: int
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """(vectors, ids, metadata rows) of a committed partition."""
    if read_record(store, snapshot_id, index) is None:
        raise ObjectNotFound(f"partition {index} of {snapshot_id} is not committed")
    keys = partition_keys(snapshot_id, index)
    xb = np.load(io.BytesIO(store.get(keys.vectors)), allow_pickle=False)
    ids = np.load(io.BytesIO(store.get(keys.ids)), allow_pickle=False)
    meta = [json.loads(line) for line in store.get(keys.meta).decode().splitlines() if line]
    return xb, ids, meta


def read_thumbnails(store: ObjectStore, record: PartitionRecord) -> dict[int, bytes]:
    """``{id: thumbnail bytes}`` of a committed partition, checked against its record
    (empty for a partition committed before thumbnails existed)."""
    keys = partition_keys(record.snapshot_id, record.index)
    if keys.thumbs_table not in record.sha256:
        return {}
    pack = store.get(keys.thumbs)
    if hashlib.sha256(pack).hexdigest() != record.sha256[keys.thumbs]:
        raise ValueError(f"{keys.thumbs} changed since it was committed")
    table, _ = thumbnails.fetch_table(
        store, keys.thumbs_table, record.sha256[keys.thumbs_table], len(pack)
    )
    return thumbnails.unpack(pack, table)


def list_partitions(store: ObjectStore, snapshot_id: str) -> list[int]:
    """Indexes of the committed partitions of a snapshot, ascending."""
    prefix = f"{PREFIX}{snapshot_id}/part-"
    found = []
    for info in store.list(prefix):
        name = info.key[len(prefix) :]
        if name.endswith(".json") and name[:-5].isdigit():
            found.append(int(name[:-5]))
    return sorted(found)


def input_key(input_fingerprint: str) -> str:
    """Where a partition's input fingerprint points to the first snapshot that embedded it."""
    return f"{PREFIX}by-input/{input_fingerprint}.json"


def remember_input(store: ObjectStore, record: PartitionRecord) -> None:
    """Record that ``record``'s snapshot holds the partition embedded from its input."""
    from vsearch.storage import put_json_if_changed

    ref = {"snapshot_id": record.snapshot_id, "index": record.index}
    put_json_if_changed(store, input_key(record.input_fingerprint), ref)


def copy_embedded(
    store: ObjectStore, input_fingerprint: str, snapshot_id: str, index: int
) -> PartitionRecord | None:
    """The same input already embedded for another snapshot (a backfill of the same images,
    a rerun under a new date): copy its objects as partition ``index`` of ``snapshot_id``
    instead of embedding again. None when there is no such partition (or it changed)."""
    from vsearch.storage import get_json

    ref = get_json(store, input_key(input_fingerprint))
    if ref is None or (ref["snapshot_id"], ref["index"]) == (snapshot_id, index):
        return None
    source = read_record(store, ref["snapshot_id"], ref["index"])
    if source is None or source.input_fingerprint != input_fingerprint:
        return None
    old, new = partition_keys(source.snapshot_id, source.index), partition_keys(snapshot_id, index)
    sha = {}
    for field in ("vectors", "ids", "meta", "failures", "thumbs", "thumbs_table"):
        src, dst = getattr(old, field), getattr(new, field)
        if src not in source.sha256:  # committed before thumbnails existed
            continue
        info = store.put(dst, store.get(src))
        if info.sha256 != source.sha256.get(src):
            raise ValueError(f"{src} changed since it was committed (sha256 {info.sha256})")
        sha[dst] = source.sha256[src]
    record = PartitionRecord(**{
        **asdict(source), "snapshot_id": snapshot_id, "index": index, "sha256": sha,
        "stats": {**source.stats, "copied_from": f"{source.snapshot_id}/{source.index}"},
    })  # fmt: skip
    store.put(new.record, json_bytes(asdict(record)))
    return record
