"""Tasks both DAGs share: from a trained index to a validated snapshot.

Each calls one stage of ``vsearch.stages``. ``snapshot_tag`` tells the build DAG's
snapshots (no tag) from compaction's (``COMPACT_TAG``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import get_current_context, task

from vsearch_airflow.hooks import VsearchStoreHook
from vsearch_airflow.operators import run_stage, snapshot_id_from_context

if TYPE_CHECKING:
    from vsearch.stages.contracts import ShardResult


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
