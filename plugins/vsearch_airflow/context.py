"""What every vsearch task derives from its Airflow context."""

from __future__ import annotations

from datetime import timedelta
from typing import Any


def snapshot_id_from_context(context: Any, tag: str | None = None) -> str:
    """The run's snapshot id: its logical date (or, for runs without one, when it was due).

    A retry or a rerun of the same date gets the same id, so it rewrites the same keys.
    """
    from vsearch.manifest import snapshot_id_for

    when = context.get("logical_date") or context["dag_run"].run_after
    return snapshot_id_for(when, tag)


COMPACT_TAG = "c"


def compact_snapshot_id(context: Any) -> str:
    """Compaction snapshots sort just after the same date's full build."""
    return snapshot_id_from_context(context, COMPACT_TAG)


def store_from_params(params: Any) -> Any:
    from vsearch_airflow.hooks import VsearchStoreHook

    return VsearchStoreHook(conn_id=params["store_conn_id"]).get_store()


# Retries with backoff for what can be transient (S3, a worker lost); the recall gate
# fails without retrying (AirflowFailException), since it is deterministic.
DEFAULT_ARGS: dict[str, Any] = {
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=20),
}


def run_info(context: Any) -> dict[str, str]:
    return {"dag_id": context["dag"].dag_id, "run_id": context["run_id"]}
