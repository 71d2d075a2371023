"""The publish stage as an operator, so it can carry its extra link to the live manifest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from airflow.sdk import BaseOperator

from vsearch_airflow.links import ServiceManifestLink


def snapshot_id_from_context(context: Any, tag: str | None = None) -> str:
    """The run's snapshot id: its logical date (or, for runs without one, when it was due).

    A retry or a rerun of the same date gets the same id, so it rewrites the same keys.
    """
    from vsearch.manifest import snapshot_id_for

    when = context.get("logical_date") or context["dag_run"].run_after
    return snapshot_id_for(when, tag)


T = TypeVar("T")


def run_stage(stage: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a vsearch stage; an error a retry cannot fix (bad input, no fitting spec, the
    recall gate, a stage out of order) fails the task at once, in one line, instead of
    being retried: Airflow retries only what raises anything else."""
    from airflow.sdk.exceptions import AirflowFailException

    from vsearch.stages import is_permanent

    try:
        return stage(*args, **kwargs)
    except Exception as e:
        if is_permanent(e):
            raise AirflowFailException(f"{type(e).__name__}: {e}") from e
        raise


def run_info(context: Any) -> dict[str, str]:
    """The run that plans a snapshot, for the manifest's lineage."""
    return {"dag_id": context["dag"].dag_id, "run_id": context["run_id"]}


class PublishSnapshotOperator(BaseOperator):
    """Verify the run's snapshot and move CURRENT to it (``vsearch.stages.publish``).

    Returns the publish result (the manifest key, moved or not, and why). A snapshot
    older than CURRENT — a backfill — is recorded but does not move CURRENT unless
    the run's ``force_publish`` param is set.
    """

    operator_extra_links = (ServiceManifestLink(),)
    ui_color = "#d5f5e3"

    def __init__(self, *, snapshot_tag: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.snapshot_tag = snapshot_tag

    def execute(self, context: Any) -> dict[str, Any]:
        from vsearch import stages
        from vsearch_airflow.hooks import VsearchStoreHook

        params = context["params"]
        result = run_stage(
            stages.publish,
            VsearchStoreHook.for_params(params),
            snapshot_id_from_context(context, self.snapshot_tag),
            force=bool(params.get("force_publish", False)),
        )
        self.log.info("publish: %s", result["message"])
        return result
