"""Tasks both DAGs share: from a trained index to a published snapshot.

``snapshot_tag`` tells the build DAG's snapshots (no tag) from compaction's ("c").
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import get_current_context, task

from vsearch_airflow.context import snapshot_id_from_context, store_from_params


@task
def plan_shards(upstream: Any) -> list[int]:
    """One mapped build_shard per shard; ``upstream`` only orders it after training."""
    return list(range(get_current_context()["params"]["nshards"]))


@task
def build_shard(shard: int, snapshot_tag: str | None = None) -> dict[str, Any]:
    from vsearch import pipeline

    ctx = get_current_context()
    p = ctx["params"]
    sid = snapshot_id_from_context(ctx, snapshot_tag)
    return pipeline.build_shard(store_from_params(p), sid, shard, p["nshards"])


@task
def validate_snapshot(shards: list[dict[str, Any]], snapshot_tag: str | None = None) -> str:
    """The recall gate. Its failure is deterministic, so it fails the run without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from vsearch import pipeline

    ctx = get_current_context()
    p = ctx["params"]
    sid = snapshot_id_from_context(ctx, snapshot_tag)
    try:
        return pipeline.validate_snapshot(
            store_from_params(p), sid, target_recall=p["target_recall"], nshards=p["nshards"]
        )
    except pipeline.RecallGateFailed as e:
        raise AirflowFailException(str(e)) from e
