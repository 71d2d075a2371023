"""Tasks both DAGs share: from a trained index to a validated snapshot, and the
announcement of a published one.

Each calls one stage of ``vsearch.stages``. ``snapshot_tag`` tells the build DAG's
snapshots (no tag) from compaction's (``COMPACT_TAG``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import get_current_context, task

from vsearch_airflow.hooks import VsearchStoreHook
from vsearch_airflow.operators import run_stage, snapshot_id_from_context
from vsearch_dags import CURRENT_SNAPSHOT

if TYPE_CHECKING:
    from vsearch.stages.contracts import PublishOutcome, ShardResult


@task
def plan_shards(upstream: Any) -> list[int]:
    """One mapped build_shard per shard; ``upstream`` only orders it after training."""
    return list(range(get_current_context()["params"]["nshards"]))


@task(multiple_outputs=True)
def build_shard(shard: int, snapshot_tag: str | None = None) -> ShardResult:
    from vsearch import stages

    ctx = get_current_context()
    p = ctx["params"]
    sid = snapshot_id_from_context(ctx, snapshot_tag)
    return run_stage(stages.build_shard, VsearchStoreHook.for_params(p), sid, shard, p["nshards"])


@task
def validate_snapshot(shards: list[ShardResult], snapshot_tag: str | None = None) -> str:
    """The recall gate. Its failure is deterministic, so it fails the run without retries."""
    from vsearch import stages

    ctx = get_current_context()
    p = ctx["params"]
    sid = snapshot_id_from_context(ctx, snapshot_tag)
    return run_stage(stages.validate, VsearchStoreHook.for_params(p), sid,
                     target_recall=p["target_recall"], nshards=p["nshards"])  # fmt: skip


@task(outlets=[CURRENT_SNAPSHOT])
def announce_current(published: PublishOutcome) -> str:
    """Emit the ``CURRENT_SNAPSHOT`` asset event, only when publish moved CURRENT.

    Airflow emits an event for every successful task with an outlet, so publish carries
    none: a publish that records a snapshot without moving CURRENT (a backfill of an
    older date, a rerun of the live one) skips this task, and nothing scheduled on the
    Asset runs for it.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    if not published["moved"]:
        raise AirflowSkipException(f"CURRENT did not move: {published['message']}")
    event = get_current_context()["outlet_events"][CURRENT_SNAPSHOT]
    event.extra = {"snapshot_id": published["current"], "manifest": published["key"]}
    return published["current"]
