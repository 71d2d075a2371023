"""Fold the live delta (upserts and deletes) into a new snapshot and publish it.

check the delta's size -> fold it into new embedding partitions, reusing the
live snapshot's trained index -> build shards (mapped) -> validate -> publish
with the delta watermark, after which replicas drop the folded entries -> announce
(the ``vsearch_current_snapshot`` Asset event, only when CURRENT moved).

Scheduled hourly; the first task skips the run (short-circuit) unless the
delta holds at least ``min_entries`` entries beyond the live watermark, so an
idle catalogue costs one cheap check an hour. The snapshot id is the run's
logical date with the tag ``-c`` (it sorts after that date's full build).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from airflow.sdk import Param, dag, get_current_context, task

from vsearch.config import Settings
from vsearch_airflow.operators import PublishSnapshotOperator
from vsearch_dags import COMPACT_TAG, DEFAULT_ARGS
from vsearch_dags.tasks import announce_current, build_shard, plan_shards, validate_snapshot

if TYPE_CHECKING:
    from vsearch.stages.contracts import CompactSummary

SETTINGS = Settings.load()  # VSEARCH_* from the environment only: cheap at parse time


@dag(
    dag_id="vsearch_compact",
    schedule=SETTINGS.compact_schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["vsearch", "delta"],
    default_args=DEFAULT_ARGS,
    params={
        "min_entries": Param(
            1000,
            type="integer",
            minimum=1,
            description="Skip the run below this many new delta entries.",
        ),
        "nshards": Param(SETTINGS.index_nshards, type="integer", minimum=1),
        "target_recall": Param(SETTINGS.index_target_recall, type="number", minimum=0, maximum=1),
        "force_publish": Param(False, type="boolean"),
        "store_conn_id": Param("vsearch_store", type="string"),
    },
    doc_md=__doc__,
)
def vsearch_compact() -> None:
    from vsearch_airflow.hooks import VsearchStoreHook
    from vsearch_airflow.operators import run_stage, snapshot_id_from_context

    @task.short_circuit
    def check_delta() -> bool:
        from vsearch import stages

        p = get_current_context()["params"]
        backlog = run_stage(stages.delta_backlog, VsearchStoreHook.for_params(p))
        return bool(backlog >= p["min_entries"])

    @task(multiple_outputs=True)
    def fold_delta() -> CompactSummary:
        from vsearch import stages

        ctx = get_current_context()
        store = VsearchStoreHook.for_params(ctx["params"])
        return run_stage(stages.compact, store, snapshot_id_from_context(ctx, COMPACT_TAG))

    publish = PublishSnapshotOperator(task_id="publish_snapshot", snapshot_tag=COMPACT_TAG)

    folded = fold_delta()
    check_delta() >> folded
    shards = build_shard.partial(snapshot_tag=COMPACT_TAG).expand(shard=plan_shards(folded))
    validate_snapshot(shards, snapshot_tag=COMPACT_TAG) >> publish
    announce_current(publish.output)


vsearch_compact()
