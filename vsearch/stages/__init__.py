"""The stage API: every step from image sources to a published snapshot.

One function per stage; the Airflow tasks (``dags/``), the ``vsearch`` CLI and
the tests call these and nothing below them. Each takes the object store and
the run's snapshot id, then JSON-able arguments, and returns object keys (or
small JSON-able dicts that name them), so Airflow passes only those through XCom
and a retry or a backfill of a date rewrites the same keys with the same bytes.
Arguments left as None take their ``Settings`` default: one default per setting.
The tasks and results are typed (``vsearch.stages.contracts``), as TypedDicts: plain JSON.

    plan(store, sid, sources)    -> [task, ...]             writes indexes/{sid}/build.json
    fetch(store, task)           -> task (+ fetched key)    images/{dataset}/{shard}.tar
    embed(store, sid, task)      -> {partition, key, ...}   embeddings/{sid}/part-*.json
    train(store, sid)            -> indexes/{sid}/trained.index
    build_shard(store, sid, j)   -> {uri, sha256, ...}      indexes/{sid}/shard-j.index
    validate(store, sid)         -> indexes/{sid}/report.json   (or RecallGateFailed)
    publish(store, sid)          -> {key: manifests/{sid}.json, moved, message, ...}
    compact(store, sid)          -> {run_record, trained, ...}  (then build_shard...)

``build_index``, ``complete_snapshot`` and ``index_sources`` run them in sequence on one
machine.
Importing this package is cheap: numpy, faiss and torch load inside the stages.
"""

from __future__ import annotations

from typing import Any

from vsearch.stages.compaction import compact, delta_backlog
from vsearch.stages.embed_stage import embed
from vsearch.stages.index_stages import build_shard, publish, train, validate
from vsearch.stages.planning import fetch, partition_tasks, plan
from vsearch.stages.run_records import RunInfo, RunRecord, StageError, is_permanent, read_run_record
from vsearch.stages.sequence import build_index, complete_snapshot, index_sources

__all__ = [
    "RunInfo",
    "RunRecord",
    "StageError",
    "build_index",
    "build_shard",
    "compact",
    "complete_snapshot",
    "delta_backlog",
    "embed",
    "fetch",
    "index_sources",
    "is_permanent",
    "partition_tasks",
    "plan",
    "publish",
    "read_run_record",
    "train",
    "validate",
]


def __getattr__(name: str) -> Any:
    # Callers catch RecallGateFailed without importing the index stage (numpy) up front.
    if name == "RecallGateFailed":
        from vsearch.index import RecallGateFailed

        return RecallGateFailed
    raise AttributeError(name)
