"""What one validation measures, checked and fingerprinted: the trained record, the
shard records, the held-out queries' source; and the stored report a retry reuses."""

from __future__ import annotations

from dataclasses import dataclass

from vsearch.canonical_json import fingerprint as json_fingerprint
from vsearch.index.layout import text_queries_key
from vsearch.index.partition_vectors import Inventory, inventory
from vsearch.index.report import ShardRecord, ValidationReport
from vsearch.index.shard_build import read_shard_records
from vsearch.index.spec import IndexSpec
from vsearch.index.trained_record import TrainedRecord, read_trained_record
from vsearch.storage import ObjectNotFound, ObjectStore, get_json


@dataclass(frozen=True)
class ValidationInputs:
    """What one validation measures; ``fingerprint`` names it for reuse."""

    trained: TrainedRecord  # the trained index's commit record
    spec: IndexSpec
    shards: tuple[ShardRecord, ...]
    inv: Inventory
    nq: int
    text_key: str | None
    fingerprint: str


def load_inputs(
    store: ObjectStore,
    snapshot_id: str,
    *,
    target_recall: float,
    nq: int | None,
    text_queries: str | None,
    require_text: bool,
    nshards: int | None,
    max_nprobe: int,
    max_query_ms: float | None,
) -> ValidationInputs:
    """The trained record, the shard records and the queries' source, checked."""
    trained = read_trained_record(store, snapshot_id)
    records = read_shard_records(store, snapshot_id, nshards)
    inv = inventory(store, snapshot_id)
    nq = trained.nq if nq is None else nq
    if not 0 < nq <= trained.nq:
        raise ValueError(f"nq must be in [1, {trained.nq}] (the queries held out at training)")
    tkey = text_queries
    if tkey is None and store.exists(text_queries_key(snapshot_id)):
        tkey = text_queries_key(snapshot_id)
    if tkey is None and require_text:
        raise ObjectNotFound(
            f"{snapshot_id}: the encoder has a text tower but there are no text queries "
            f"at {text_queries_key(snapshot_id)}"
        )
    fingerprint = json_fingerprint(
        {
            "shards": [r["sha256"] for r in records],
            "target": target_recall,
            "nq": nq,
            "text": store.sha256(tkey)[0] if tkey else None,
            "max_nprobe": max_nprobe,
            "max_query_ms": max_query_ms,
        }
    )
    shards = tuple(ShardRecord.from_dict(r, f"shards[{j}]") for j, r in enumerate(records))
    return ValidationInputs(trained, trained.spec, shards, inv, nq, tkey, fingerprint)


def reusable_report(store: ObjectStore, key: str, fingerprint: str) -> ValidationReport | None:
    """The stored report when it measured the same inputs: a retried task reuses it."""
    old = get_json(store, key)
    if not old or old.get("input_fingerprint") != fingerprint:
        return None
    return ValidationReport.from_dict(old)
