"""The publish task's extra link: the live manifest on the query service."""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseOperatorLink

SERVICE_URL_ENV = "VSEARCH_SERVICE_URL"


class ServiceManifestLink(BaseOperatorLink):
    """Computed on the worker when the task finishes (Airflow 3 stores it in XCom)."""

    name = "Live manifest"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        base = os.environ.get(SERVICE_URL_ENV, "http://localhost:8080").rstrip("/")
        return f"{base}/v1/manifest"
