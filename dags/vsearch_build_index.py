"""Build, validate and publish an index snapshot from image sources.

plan partitions -> fetch (mapped) -> embed (mapped, gpu) -> train (gpu) ->
build shards (mapped) -> validate (the recall gate) -> publish (moves CURRENT) ->
announce (the ``vsearch_current_snapshot`` Asset event, skipped when CURRENT did not move).

The snapshot id is the run's logical date, so a retry, a rerun or a backfill of
a date rewrites the same keys with the same content, and a backfill of an old
date never moves CURRENT backwards. Tasks pass object keys and small dicts
through XCom, never arrays. Every task calls one stage of vsearch.stages; every
param defaults to its VSEARCH_* setting, as in the CLI.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from airflow.sdk import Param, dag, get_current_context, task

from vsearch.config import Settings
from vsearch_airflow.operators import PublishSnapshotOperator
from vsearch_dags import DEFAULT_ARGS
from vsearch_dags.tasks import announce_current, build_shard, plan_shards, validate_snapshot

if TYPE_CHECKING:
    from vsearch.stages.contracts import EmbedResult, Task

SETTINGS = Settings.load()  # VSEARCH_* from the environment only: cheap at parse time


@dag(
    dag_id="vsearch_build_index",
    schedule=SETTINGS.build_schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["vsearch", "index"],
    default_args=DEFAULT_ARGS,
    params={
        "sources": Param(
            [s for s in SETTINGS.sources.split(",") if s],
            type="array",
            description="Image sources: directories, .tar webdataset shards or prefixes, "
            "URL lists (.csv/.jsonl/.parquet), s3://bucket/prefix.",
        ),
        "partition_size": Param(SETTINGS.partition_size, type="integer", minimum=1),
        "encoder": Param(
            SETTINGS.encoder,
            type="string",
            description="efficientnet-lite0, or clip:<hub id or local dir>",
        ),
        "factory": Param(
            SETTINGS.index_factory,
            type="string",
            description="Explicit faiss factory (e.g. OPQ32,IVF4096,PQ32x8); "
            "empty: chosen from the budget.",
        ),
        "bytes_per_vector": Param(
            SETTINGS.index_bytes_per_vector,
            type="number",
            minimum=4,
            description="Memory budget per vector, resident.",
        ),
        "memory_floor_mb": Param(
            SETTINGS.index_memory_floor_mb,
            type="number",
            minimum=0,
            description="Resident MiB under which memory is never a reason to compress.",
        ),
        "max_query_ms": Param(
            SETTINGS.index_max_query_ms,
            type="number",
            exclusiveMinimum=0,
            description="Latency budget: ms per query on one core.",
        ),
        "nshards": Param(SETTINGS.index_nshards, type="integer", minimum=1),
        "target_recall": Param(
            SETTINGS.index_target_recall,
            type="number",
            minimum=0,
            maximum=1,
            description="The recall gate: the default nprobe is the smallest reaching this "
            "recall@10 against exact search; if none does, nothing is published.",
        ),
        "force_publish": Param(
            False, type="boolean", description="Move CURRENT even to an older snapshot."
        ),
        "store_conn_id": Param("vsearch_store", type="string"),
    },
    doc_md=__doc__,
)
def vsearch_build_index() -> None:
    from vsearch_airflow.hooks import VsearchStoreHook
    from vsearch_airflow.operators import run_info, run_stage, snapshot_id_from_context

    @task
    def plan_partitions() -> list[Task]:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from vsearch import stages

        ctx = get_current_context()
        p = ctx["params"]
        if not p["sources"]:
            if ctx["dag_run"].run_type == "scheduled":
                raise AirflowSkipException(
                    "no sources configured: scheduled runs index VSEARCH_SOURCES (comma-"
                    "separated); nothing to do until it is set"
                )
            raise AirflowFailException(
                'no sources: trigger with {"sources": ["/path/to/photos"]} or set VSEARCH_SOURCES'
            )
        return run_stage(
            stages.plan,
            VsearchStoreHook.for_params(p),
            snapshot_id_from_context(ctx),
            p["sources"],
            partition_size=p["partition_size"],
            encoder=p["encoder"],
            run=run_info(ctx),
        )

    @task(multiple_outputs=True)
    def fetch_partition(spec: Task) -> Task:
        from vsearch import stages

        store = VsearchStoreHook.for_params(get_current_context()["params"])
        return run_stage(stages.fetch, store, spec)

    @task(queue=SETTINGS.gpu_queue, pool=SETTINGS.gpu_pool, multiple_outputs=True)
    def embed_partition(spec: Task) -> EmbedResult:
        from vsearch import stages

        ctx = get_current_context()
        store = VsearchStoreHook.for_params(ctx["params"])
        return run_stage(stages.embed, store, snapshot_id_from_context(ctx), spec)

    @task(queue=SETTINGS.gpu_queue, pool=SETTINGS.gpu_pool)
    def train_index(partitions: list[EmbedResult]) -> str:
        from vsearch import stages

        ctx = get_current_context()
        p = ctx["params"]
        return run_stage(
            stages.train,
            VsearchStoreHook.for_params(p),
            snapshot_id_from_context(ctx),
            factory=p["factory"] or None,
            bytes_per_vector=p["bytes_per_vector"],
            memory_floor_mb=p["memory_floor_mb"],
            max_query_ms=p["max_query_ms"],
            nshards=p["nshards"],
        )

    publish = PublishSnapshotOperator(task_id="publish_snapshot")

    partitions = embed_partition.expand(spec=fetch_partition.expand(spec=plan_partitions()))
    shards = build_shard.expand(shard=plan_shards(train_index(partitions)))
    validate_snapshot(shards) >> publish
    announce_current(publish.output)


vsearch_build_index()
