"""The publish step as an operator, so it can carry its extra link to the live manifest."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from vsearch_airflow.links import ServiceManifestLink


class PublishSnapshotOperator(BaseOperator):
    """Verify the run's snapshot and move CURRENT to it (vsearch.pipeline.publish_snapshot).

    Returns the publish result (moved or not, and why). A snapshot older than
    CURRENT — a backfill — is recorded but does not move CURRENT unless the run's
    ``force_publish`` param is set.
    """

    operator_extra_links = (ServiceManifestLink(),)
    ui_color = "#d5f5e3"

    def __init__(self, *, snapshot_tag: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.snapshot_tag = snapshot_tag

    def execute(self, context: Any) -> dict[str, Any]:
        from vsearch import pipeline
        from vsearch_airflow.context import run_info, snapshot_id_from_context, store_from_params

        params = context["params"]
        result = pipeline.publish_snapshot(
            store_from_params(params),
            snapshot_id_from_context(context, self.snapshot_tag),
            run=run_info(context),
            force=bool(params.get("force_publish", False)),
        )
        self.log.info("publish: %s", result["message"])
        return result
