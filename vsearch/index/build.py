"""The whole index stage in sequence: train, build every shard, validate, publish.

What ``vsearch build`` runs; Airflow runs the same four functions as
separate tasks (the shards as a mapped task) and passes only keys between them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from vsearch.index.publish import publish_built_snapshot
from vsearch.index.shards import build_shard
from vsearch.index.spec import Metric
from vsearch.index.train import DEFAULT_NQ, Device, train_index
from vsearch.index.validate import validate_snapshot
from vsearch.manifest import EncoderInfo, Lineage
from vsearch.snapshots import PublishResult
from vsearch.storage import ObjectStore

log = logging.getLogger(__name__)


def build_snapshot(
    store: ObjectStore,
    snapshot_id: str,
    *,
    encoder: EncoderInfo,
    lineage: Lineage,
    factory: str | None = None,
    bytes_per_vector_budget: float = 48.0,
    max_query_ms: float = 1.0,
    metric: Metric | None = None,
    nshards: int = 1,
    seed: int = 0,
    device: Device = "auto",
    target_recall: float = 0.95,
    nq: int = DEFAULT_NQ,
    require_text: bool = False,
    previous_snapshot_id: str | None = None,
    delta_watermark: str = "0-0",
    force: bool = False,
    on_step: Callable[[str, Any], None] | None = None,
) -> PublishResult:
    """Train, build ``nshards`` shards, validate (raises RecallGateFailed), publish."""
    say = on_step or (lambda step, value: log.info("%s: %s", step, value))
    say("trained", train_index(
        store, snapshot_id, factory=factory, bytes_per_vector_budget=bytes_per_vector_budget,
        max_query_ms=max_query_ms, metric=metric, nshards=nshards, seed=seed, nq=nq,
        device=device,
    ))  # fmt: skip
    for j in range(nshards):
        say("shard", build_shard(store, snapshot_id, j, nshards))
    say("report", validate_snapshot(
        store, snapshot_id, target_recall=target_recall, nq=nq, require_text=require_text,
        nshards=nshards, max_query_ms=max_query_ms,
    ))  # fmt: skip
    result = publish_built_snapshot(
        store,
        snapshot_id,
        encoder=encoder,
        lineage=lineage,
        previous_snapshot_id=previous_snapshot_id,
        delta_watermark=delta_watermark,
        force=force,
    )
    say("publish", result.message)
    return result
