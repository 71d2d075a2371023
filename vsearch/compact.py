"""Compaction: fold the live delta into a new snapshot, reusing the trained index.

The new snapshot's embedding partitions are the live snapshot's, minus every
item the delta deleted or upserted, plus one partition of the upserts as they
stand at the watermark (the last log entry read). The trained index is copied,
not retrained: same encoder, same spec, and the delta is small next to the base.
The build record carries the watermark into the manifest; after the swap the
replicas drop the entries at or below it, and the log can be trimmed there.

Each partition is committed with a fingerprint of (base partition, watermark),
so a retry skips what is done and rewrites nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from vsearch.config import Settings
from vsearch.manifest import Manifest
from vsearch.partitions import is_committed, list_partitions, read_partition, write_partition
from vsearch.pipeline import PipelineError, write_build_record, write_encoder_info
from vsearch.snapshots import read_current
from vsearch.sources.base import digest
from vsearch.storage import ObjectStore

log = logging.getLogger(__name__)


def _live(store: ObjectStore) -> Manifest:
    live = read_current(store)
    if live is None:
        raise PipelineError("nothing is published: compaction folds the delta into a snapshot")
    return live


def delta_backlog(store: ObjectStore, settings: Settings | None = None) -> int:
    """Entries in the delta log after the live snapshot's watermark."""
    from vsearch.delta import open_delta_log

    live = read_current(store)
    if live is None:
        return 0
    log_ = open_delta_log((settings or Settings.load()).delta_log)
    try:
        return len(log_.read(after=live.delta_watermark))
    finally:
        log_.close()


def latest_writes(entries: list[Any]) -> dict[int, Any]:
    """The last entry per item id, in log order: what the delta says each item is now."""
    final: dict[int, Any] = {}
    for entry in entries:
        final[entry.item] = entry
    return final


def fold_delta(
    store: ObjectStore, snapshot_id: str, settings: Settings | None = None
) -> dict[str, Any]:
    """Write the partitions of ``snapshot_id`` = live snapshot + delta; copy its trained index."""
    from vsearch.delta import open_delta_log

    if snapshot_id <= (base := _live(store)).snapshot_id:
        raise PipelineError(f"{snapshot_id} is not newer than the live {base.snapshot_id}")
    log_ = open_delta_log((settings or Settings.load()).delta_log)
    try:
        watermark = _kept_watermark(store, snapshot_id) or log_.last_id()
        entries = log_.read(after=base.delta_watermark, upto=watermark)
    finally:
        log_.close()
    changed = latest_writes(entries)
    parts = list_partitions(store, base.snapshot_id)
    if not parts:
        raise PipelineError(f"live snapshot {base.snapshot_id} has no embedding partitions")
    kept = 0
    for out, i in enumerate(parts):
        kept += _fold_partition(store, base.snapshot_id, i, snapshot_id, out, changed, watermark)
    upserts = [e for e in changed.values() if e.op == "upsert"]
    _write_upserts(store, base, snapshot_id, len(parts), upserts, watermark)
    _copy_trained_index(store, base.snapshot_id, snapshot_id)
    write_build_record(store, snapshot_id, {
        "kind": "compact",
        "base_snapshot_id": base.snapshot_id,
        "sources": list(base.lineage.sources),
        "encoder_spec": _base_encoder_spec(store, base.snapshot_id),
        "previous_snapshot_id": base.snapshot_id,
        "run": {},
        "delta_watermark": watermark,
    })  # fmt: skip
    write_encoder_info(store, snapshot_id, base.encoder)
    summary = {
        "snapshot_id": snapshot_id,
        "base_snapshot_id": base.snapshot_id,
        "delta_watermark": watermark,
        "entries": len(entries),
        "kept": kept,
        "upserts": len(upserts),
        "deletes": sum(1 for e in changed.values() if e.op == "delete"),
    }
    log.info("folded delta into %s: %s", snapshot_id, summary)
    return summary


def _kept_watermark(store: ObjectStore, snapshot_id: str) -> str | None:
    """A retry folds up to the same watermark as the first attempt."""
    from vsearch.pipeline import read_build_record

    try:
        return str(read_build_record(store, snapshot_id)["delta_watermark"])
    except PipelineError:
        return None


def _base_encoder_spec(store: ObjectStore, base_id: str) -> str | None:
    from vsearch.pipeline import read_build_record

    try:
        return read_build_record(store, base_id).get("encoder_spec")
    except PipelineError:
        return None


def _fold_partition(
    store: ObjectStore,
    base_id: str,
    index: int,
    snapshot_id: str,
    out: int,
    changed: dict[int, Any],
    watermark: str,
) -> int:
    fingerprint = digest("fold", base_id, index, watermark)
    if is_committed(store, snapshot_id, out, fingerprint):
        return _count(store, snapshot_id, out)
    from vsearch.partitions import read_record

    base_record = read_record(store, base_id, index)
    assert base_record is not None
    xb, ids, meta = read_partition(store, base_id, index)
    keep = np.array([int(i) not in changed for i in ids], dtype=bool)
    failures: list[dict[str, Any]] = []
    write_partition(
        store, snapshot_id, out, np.ascontiguousarray(xb[keep]), ids[keep],
        [m for m, k in zip(meta, keep, strict=True) if k], failures,
        input_fingerprint=fingerprint, encoder_id=base_record.encoder_id,
        stats={"folded_from": f"{base_id}/{index}", "dropped": int((~keep).sum())},
    )  # fmt: skip
    return int(keep.sum())


def _count(store: ObjectStore, snapshot_id: str, index: int) -> int:
    from vsearch.partitions import read_record

    record = read_record(store, snapshot_id, index)
    return 0 if record is None else record.count


def _write_upserts(
    store: ObjectStore,
    base: Manifest,
    snapshot_id: str,
    out: int,
    upserts: list[Any],
    watermark: str,
) -> None:
    fingerprint = digest("upserts", base.snapshot_id, watermark)
    if not upserts or is_committed(store, snapshot_id, out, fingerprint):
        return
    from vsearch.partitions import read_record

    encoder_id = read_record(store, base.snapshot_id, list_partitions(store, base.snapshot_id)[0])
    assert encoder_id is not None
    upserts = sorted(upserts, key=lambda e: e.item)
    xb = np.stack([np.asarray(e.vector, dtype=np.float32) for e in upserts])
    if xb.shape[1] != base.encoder.dim:
        raise PipelineError(f"delta vectors are {xb.shape[1]}-d, the snapshot {base.encoder.dim}-d")
    ids = np.array([e.item for e in upserts], dtype=np.int64)
    meta = [
        {
            **(e.metadata or {}),
            "id": e.item,
            "key": (e.metadata or {}).get("key", f"delta/{e.item}"),
        }
        for e in upserts
    ]
    write_partition(
        store, snapshot_id, out, xb, ids, meta, [],
        input_fingerprint=fingerprint, encoder_id=encoder_id.encoder_id,
        stats={"delta_entries": len(upserts), "watermark": watermark},
    )  # fmt: skip


def _copy_trained_index(store: ObjectStore, base_id: str, snapshot_id: str) -> None:
    """The base's trained (empty) index and its record, under the new snapshot."""
    from vsearch.index.layout import trained_key, trained_record_key

    record = json.loads(store.get(trained_record_key(base_id)))
    data = store.get(trained_key(base_id))
    store.put(trained_key(snapshot_id), data)
    record.update(snapshot_id=snapshot_id, reused_from=base_id)
    store.put(
        trained_record_key(snapshot_id),
        (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(),
    )
