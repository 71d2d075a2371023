"""The ``compact`` stage: fold the live delta into a new snapshot, reusing the trained index.

The new snapshot's embedding partitions are the live snapshot's, minus every
item the delta deleted or upserted, plus one partition of the upserts as they
stand at the watermark (the last log entry read). The trained index the live
manifest names (``index.trained``) is copied, not retrained: same encoder, same
spec, and the delta is small next to the base. The run record carries the
watermark into the manifest; after the swap the replicas drop the entries at or
below it, and the log can be trimmed there. ``build_shard``, ``validate`` and
``publish`` then run on the new snapshot as for a build.

Each partition is committed with a fingerprint of (base partition, watermark),
so a retry skips what is done and rewrites nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vsearch.config import Settings
from vsearch.stages.contracts import CompactSummary
from vsearch.stages.run_records import (
    RunRecord,
    StageError,
    find_run_record,
    write_encoder_info,
    write_run_record,
)
from vsearch.storage import ObjectStore

if TYPE_CHECKING:
    from vsearch.delta import DeltaEntry
    from vsearch.manifest import Manifest

log = logging.getLogger(__name__)


def delta_backlog(store: ObjectStore, settings: Settings | None = None) -> int:
    """Entries in the delta log after the live snapshot's watermark (0 when none is live)."""
    from vsearch.catalog import read_current
    from vsearch.delta import open_delta_log

    live = read_current(store)
    if live is None:
        return 0
    delta_log = open_delta_log((settings or Settings.load()).delta_log)
    try:
        return len(delta_log.read(after=live.delta_watermark))
    finally:
        delta_log.close()


def latest_writes(entries: Sequence[DeltaEntry]) -> dict[int, DeltaEntry]:
    """The last entry per item id, in log order: what the delta says each item is now."""
    return {entry.item: entry for entry in entries}


def compact(
    store: ObjectStore, snapshot_id: str, *, settings: Settings | None = None
) -> CompactSummary:
    """Write the partitions of ``snapshot_id`` = live snapshot + delta, and its trained index.

    Returns a summary: the base snapshot, the watermark, the counts, and the keys of
    the run record and the trained index.
    """
    from vsearch.catalog import read_current
    from vsearch.delta import open_delta_log
    from vsearch.embedding.partitions import list_partitions
    from vsearch.index.layout import run_record_key, trained_key

    base = read_current(store)
    if base is None:
        raise StageError("nothing is published: compaction folds the delta into a snapshot")
    if snapshot_id <= base.snapshot_id:
        raise StageError(f"{snapshot_id} is not newer than the live {base.snapshot_id}")
    parts = list_partitions(store, base.snapshot_id)
    if not parts:
        raise StageError(f"live snapshot {base.snapshot_id} has no embedding partitions")
    delta_log = open_delta_log((settings or Settings.load()).delta_log)
    try:
        first = find_run_record(store, snapshot_id)  # a retry folds up to the same watermark
        watermark = first.delta_watermark if first is not None else delta_log.last_id()
        entries = delta_log.read(after=base.delta_watermark, upto=watermark)
    finally:
        delta_log.close()
    changed = latest_writes(entries)
    kept = sum(
        _fold_partition(store, base.snapshot_id, i, snapshot_id, out, changed, watermark)
        for out, i in enumerate(parts)
    )
    upserts = sorted((e for e in changed.values() if e.op == "upsert"), key=lambda e: e.item)
    _write_upserts(store, base, snapshot_id, len(parts), upserts, watermark)
    _copy_trained_index(store, base, snapshot_id)
    base_record = find_run_record(store, base.snapshot_id)
    write_run_record(
        store,
        snapshot_id,
        RunRecord(
            kind="compact",
            sources=base.lineage.sources,
            encoder_spec=base_record.encoder_spec if base_record else None,
            previous_snapshot_id=base.snapshot_id,
            delta_watermark=watermark,
            base_snapshot_id=base.snapshot_id,
        ),
    )
    write_encoder_info(store, snapshot_id, base.encoder)
    summary = CompactSummary(
        snapshot_id=snapshot_id,
        base_snapshot_id=base.snapshot_id,
        delta_watermark=watermark,
        entries=len(entries),
        kept=kept,
        upserts=len(upserts),
        deletes=sum(1 for e in changed.values() if e.op == "delete"),
        run_record=run_record_key(snapshot_id),
        trained=trained_key(snapshot_id),
    )
    log.info("folded delta into %s: %s", snapshot_id, summary)
    return summary


def _fold_partition(
    store: ObjectStore,
    base_id: str,
    index: int,
    snapshot_id: str,
    out: int,
    changed: dict[int, DeltaEntry],
    watermark: str,
) -> int:
    """Partition ``index`` of the base without the items the delta changed, as ``out``."""
    import numpy as np

    from vsearch.embedding.partitions import (
        read_partition,
        read_record,
        read_thumbnails,
        write_partition,
    )
    from vsearch.sources.source_base import digest

    fingerprint = digest("fold", base_id, index, watermark)
    done = read_record(store, snapshot_id, out)
    if done is not None and done.input_fingerprint == fingerprint:
        return done.count
    base_record = read_record(store, base_id, index)
    assert base_record is not None  # listed as committed
    xb, ids, meta = read_partition(store, base_id, index)
    keep = np.array([int(i) not in changed for i in ids], dtype=bool)
    thumbs = read_thumbnails(store, base_record)
    write_partition(
        store, snapshot_id, out, np.ascontiguousarray(xb[keep]), ids[keep],
        [m for m, k in zip(meta, keep, strict=True) if k], [],
        input_fingerprint=fingerprint, encoder_id=base_record.encoder_id,
        stats={"folded_from": f"{base_id}/{index}", "dropped": int((~keep).sum())},
        thumbs={i: t for i, t in thumbs.items() if i not in changed},
    )  # fmt: skip
    return int(keep.sum())


def _write_upserts(
    store: ObjectStore,
    base: Manifest,
    snapshot_id: str,
    out: int,
    upserts: list[DeltaEntry],
    watermark: str,
) -> None:
    """The delta's upserts as they stand at ``watermark``, as partition ``out``."""
    import numpy as np

    from vsearch.embedding.partitions import (
        is_committed,
        list_partitions,
        read_record,
        write_partition,
    )
    from vsearch.sources.source_base import digest

    fingerprint = digest("upserts", base.snapshot_id, watermark)
    if not upserts or is_committed(store, snapshot_id, out, fingerprint):
        return
    first = read_record(store, base.snapshot_id, list_partitions(store, base.snapshot_id)[0])
    assert first is not None  # compact() checked the base has partitions
    xb = np.stack([np.asarray(e.vector, dtype=np.float32) for e in upserts])
    if xb.shape[1] != base.encoder.dim:
        raise StageError(f"delta vectors are {xb.shape[1]}-d, the snapshot {base.encoder.dim}-d")
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
        input_fingerprint=fingerprint, encoder_id=first.encoder_id,
        stats={"delta_entries": len(upserts), "watermark": watermark},
        thumbs={e.item: e.thumbnail for e in upserts if e.thumbnail},
    )  # fmt: skip


def _copy_trained_index(store: ObjectStore, base: Manifest, snapshot_id: str) -> None:
    """The trained (empty) index the live manifest names, and its record, under the new id."""
    from vsearch.index.layout import trained_key, trained_record_key
    from vsearch.index.trained_record import read_trained_record
    from vsearch.storage import put_if_changed, put_json_if_changed

    trained = base.index.trained
    if trained is None:
        raise StageError(f"{base.snapshot_id}'s manifest names no trained index to reuse")
    data = store.get(trained.uri)
    if hashlib.sha256(data).hexdigest() != trained.sha256 or len(data) != trained.bytes:
        raise StageError(f"{trained.uri} does not match {base.snapshot_id}'s manifest")
    put_if_changed(store, trained_key(snapshot_id), data)
    record = dataclasses.replace(
        read_trained_record(store, base.snapshot_id),
        snapshot_id=snapshot_id,
        reused_from=base.snapshot_id,
    )
    put_json_if_changed(store, trained_record_key(snapshot_id), record.to_dict())
