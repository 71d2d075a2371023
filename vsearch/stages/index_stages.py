"""The index stages: ``train``, ``build_shard``, ``validate`` (the recall gate), ``publish``.

Each reads what the earlier stages committed under the snapshot id and returns
the key of what it wrote; an argument left as None takes its ``Settings``
default (``VSEARCH_INDEX_*``), so the DAG, the CLI and the tests build with the
same defaults. faiss is imported by the functions below, not by this module.
"""

from __future__ import annotations

import logging
from typing import Unpack

from vsearch.config import Settings
from vsearch.index.options import IndexOptions, IndexOverrides
from vsearch.stages.contracts import PublishOutcome, ShardResult
from vsearch.stages.run_records import (
    find_run_record,
    read_encoder_info,
    read_run_record,
)
from vsearch.storage import ObjectStore

log = logging.getLogger(__name__)

MAX_TEXT_QUERIES = 1000


def train(
    store: ObjectStore,
    snapshot_id: str,
    options: IndexOptions | None = None,
    *,
    settings: Settings | None = None,
    **overrides: Unpack[IndexOverrides],
) -> str:
    """Choose the index for the committed partitions (or take ``factory``) and train it;
    returns ``indexes/{snapshot}/trained.index``. A no-op when trained on the same input.

    ``options`` default to the settings' (``IndexOptions.from_settings``); ``overrides``
    (a DAG run's params, the CLI's options) replace those given.
    """
    from vsearch.index.train import train_index

    options = options or IndexOptions.from_settings(settings or Settings.load())
    return train_index(store, snapshot_id, options.with_overrides(**overrides))


def trained_nshards(store: ObjectStore, snapshot_id: str, settings: Settings) -> int:
    """The number of shards the index was trained for (its spec is sized per shard)."""
    from vsearch.index.trained_record import read_trained_record

    return read_trained_record(store, snapshot_id).nshards or settings.index_nshards


def build_shard(
    store: ObjectStore,
    snapshot_id: str,
    shard: int,
    nshards: int | None = None,
    *,
    settings: Settings | None = None,
) -> ShardResult:
    """Add shard ``shard``'s vectors to a copy of the trained index; returns its
    ``{uri, sha256, bytes, ntotal, id_range}`` (``uri`` is the shard's key)."""
    from vsearch.index.shard_build import build_shard as build

    nshards = nshards or trained_nshards(store, snapshot_id, settings or Settings.load())
    return build(store, snapshot_id, shard, nshards)


def validate(
    store: ObjectStore,
    snapshot_id: str,
    *,
    target_recall: float | None = None,
    nq: int | None = None,
    nshards: int | None = None,
    text_queries: str | None = None,
    require_text: bool = False,
    max_query_ms: float | None = None,
    revalidate: bool = False,
    settings: Settings | None = None,
) -> str:
    """Measure recall@10 against exact search, write ``report.json``, apply the gate.

    Returns the report's key; raises ``RecallGateFailed`` when the target is missed
    (nothing may be published then). When the run's encoder has a text tower,
    captions of the partitions are embedded first as text->image queries.
    """
    from vsearch.index.validate import validate_snapshot

    s = settings or Settings.load()
    options = IndexOptions.from_settings(s).with_overrides(
        target_recall=target_recall, max_query_ms=max_query_ms
    )
    if text_queries is None and _write_caption_queries(store, snapshot_id, s):
        require_text = True
    return validate_snapshot(
        store,
        snapshot_id,
        target_recall=options.target_recall,
        nq=nq,
        text_queries=text_queries,
        require_text=require_text,
        nshards=nshards,
        max_query_ms=options.max_query_ms,
        revalidate=revalidate,
    )


def _write_caption_queries(store: ObjectStore, snapshot_id: str, settings: Settings) -> bool:
    """Embed up to MAX_TEXT_QUERIES captions when the run's encoder has a text tower."""
    import numpy as np

    from vsearch.embedding.partitions import list_partitions, read_partition
    from vsearch.index import write_text_queries
    from vsearch.stages.embed_stage import _encoder

    record = find_run_record(store, snapshot_id)
    if record is None or record.encoder_spec is None:
        return False
    encoder = _encoder(record.encoder_spec, settings.device or None)
    if not encoder.has_text:
        return False
    captions: list[str] = []
    for i in list_partitions(store, snapshot_id):
        _, _, meta = read_partition(store, snapshot_id, i)
        captions += [m["caption"] for m in meta if m.get("caption")]
        if len(captions) >= MAX_TEXT_QUERIES:
            break
    if not captions:
        return False
    xq = np.asarray(encoder.encode_texts(captions[:MAX_TEXT_QUERIES]), dtype=np.float32)
    write_text_queries(store, snapshot_id, xq)
    return True


def publish(store: ObjectStore, snapshot_id: str, *, force: bool = False) -> PublishOutcome:
    """Assemble the manifest from the run record, the report and the shards, verify every
    object, and move CURRENT to it (not backwards unless ``force``).

    Returns the manifest's key and the ``PublishResult``'s fields (moved or not, and why).
    """
    from vsearch.catalog import manifest_key, publish_snapshot
    from vsearch.index.assemble import build_manifest
    from vsearch.index.partition_vectors import inventory
    from vsearch.manifest import Lineage

    record = read_run_record(store, snapshot_id)
    inv = inventory(store, snapshot_id)
    manifest = build_manifest(
        store,
        snapshot_id,
        encoder=read_encoder_info(store, snapshot_id),
        lineage=Lineage(
            dag_id=record.run.dag_id,
            run_id=record.run.run_id,
            sources=record.sources,
            item_count=inv.n,
            failures=inv.failures,
        ),
        previous_snapshot_id=record.previous_snapshot_id,
        delta_watermark=record.delta_watermark,
        inv=inv,
    )
    result = publish_snapshot(store, manifest, force=force)
    log.info("%s: %s", snapshot_id, result.message)
    return PublishOutcome(key=manifest_key(snapshot_id), snapshot_id=result.snapshot_id,
                          current=result.current, moved=result.moved,
                          message=result.message)  # fmt: skip
