"""The publish task's extra link: the live manifest on the query service."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink

from vsearch.config import Settings


class ServiceManifestLink(BaseOperatorLink):
    """Computed on the worker when the task finishes (Airflow 3 stores it in XCom)."""

    name = "Live manifest"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        base = Settings.load().service_url.rstrip("/")  # VSEARCH_SERVICE_URL
        return f"{base}/v1/manifest"
