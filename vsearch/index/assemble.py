"""From a validated build to its Manifest; the ``publish`` stage hands it to
``vsearch.catalog.publish_snapshot``, which verifies it and moves CURRENT.

Everything in the manifest comes from stored objects (the report, the shard
and partition records) or from the caller (encoder, lineage), never from the
clock: a retry assembles the identical manifest, which the immutable-manifest
rule requires. ``created_at`` defaults to the time the snapshot id names.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from vsearch.catalog import list_snapshots
from vsearch.delta.watermarks import LOG_ORIGIN
from vsearch.embedding.partitions import PartitionRecord, partition_keys
from vsearch.index.layout import report_key
from vsearch.index.partition_vectors import Inventory, inventory
from vsearch.index.report import read_report
from vsearch.index.validate import RecallGateFailed
from vsearch.manifest import (
    SCHEMA_VERSION,
    EncoderInfo,
    IndexInfo,
    Lineage,
    Manifest,
    MetadataInfo,
    ObjectRef,
    RecallInfo,
    ShardInfo,
    ThumbnailInfo,
    ThumbnailPack,
    check_snapshot_id,
)
from vsearch.storage import ObjectStore


def created_at_for(snapshot_id: str) -> str:
    """ISO 8601 of the logical date a snapshot id names (``20261121T000000Z`` -> ...)."""
    stamp = check_snapshot_id(snapshot_id).split("-", 1)[0]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).isoformat()


def previous_snapshot_for(store: ObjectStore, snapshot_id: str) -> str | None:
    """The newest published snapshot older than ``snapshot_id``: what rollback goes to.

    Not "whatever CURRENT names now": once this snapshot is live, a retry would
    read itself there and assemble a different manifest.
    """
    older = [s for s in list_snapshots(store) if s < snapshot_id]
    return older[-1] if older else None


def build_manifest(
    store: ObjectStore,
    snapshot_id: str,
    *,
    encoder: EncoderInfo,
    lineage: Lineage,
    previous_snapshot_id: str | None = None,
    delta_watermark: str = LOG_ORIGIN,
    created_at: str | None = None,
    inv: Inventory | None = None,
) -> Manifest:
    """The manifest of a validated snapshot; raises RecallGateFailed if its gate failed.

    ``inv``: the partitions' inventory, when the caller has read it already.
    """
    report = read_report(store, snapshot_id)
    if not report.gate.passed:
        raise RecallGateFailed(
            f"{snapshot_id}: not publishable, recall gate failed: {report.gate.reason}",
            report_key(snapshot_id),
        )
    spec, trained = report.spec, report.trained
    if encoder.dim != spec.d:
        raise ValueError(f"encoder dim {encoder.dim} != indexed vectors' dim {spec.d}")
    index = IndexInfo(
        factory=spec.factory,
        nlist=spec.nlist,
        m=spec.m,
        nbits=spec.nbits,
        opq=spec.opq,
        refine=spec.refine,
        default_nprobe=report.default_nprobe,
        trained=ObjectRef(trained.uri, trained.sha256, trained.bytes),
    )
    shards = tuple(ShardInfo(s.uri, s.sha256, s.bytes, s.ntotal, s.id_range) for s in report.shards)
    inv = inv or inventory(store, snapshot_id)
    files = []
    for record in inv.records:
        meta = partition_keys(snapshot_id, record.index).meta
        files.append(ObjectRef(meta, record.sha256[meta], store.head(meta).size))
    text = report.recall.text_to_image
    return Manifest(
        schema_version=SCHEMA_VERSION,
        snapshot_id=snapshot_id,
        created_at=created_at or created_at_for(snapshot_id),
        previous_snapshot_id=previous_snapshot_id,
        encoder=encoder,
        metric=report.metric,
        index=index,
        shards=shards,
        metadata=MetadataInfo(tuple(files), inv.n),
        thumbnails=thumbnail_info(store, inv.records),
        recall=RecallInfo(
            image_to_image_at_10=report.recall.image_to_image.recall_at_10,
            text_to_image_at_10=None if text is None else text.recall_at_10,
            curve=tuple(
                (p.nprobe, float(p.recall_at_10), float(p.ms_per_query)) for p in report.curve
            ),
        ),
        delta_watermark=delta_watermark,
        lineage=lineage,
    )


def thumbnail_info(store: ObjectStore, records: Sequence[PartitionRecord]) -> ThumbnailInfo | None:
    """The partitions' thumbnail packs and tables; None when no partition has any."""
    from vsearch.embedding import thumbnails

    packs, count = [], 0
    for record in records:
        keys = partition_keys(record.snapshot_id, record.index)
        if keys.thumbs_table not in record.sha256:  # committed before thumbnails existed
            continue
        pack_size = store.head(keys.thumbs).size
        table_sha = record.sha256[keys.thumbs_table]
        table, table_bytes = thumbnails.fetch_table(store, keys.thumbs_table, table_sha, pack_size)
        if not len(table):
            continue
        count += len(table)
        packs.append(
            ThumbnailPack(
                pack=ObjectRef(keys.thumbs, record.sha256[keys.thumbs], pack_size),
                table=ObjectRef(keys.thumbs_table, table_sha, table_bytes),
            )
        )
    return ThumbnailInfo(tuple(packs), count) if packs else None
