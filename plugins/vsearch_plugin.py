"""Registers vsearch's Airflow extensions (see the vsearch_airflow package)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from vsearch_airflow.links import ServiceManifestLink
from vsearch_airflow.views import SnapshotsApp


class VsearchPlugin(AirflowPlugin):
    name = "vsearch"
    # Built on its first request: task processes load plugins too, and need no web app.
    fastapi_apps = [{"app": SnapshotsApp(), "url_prefix": "/vsearch", "name": "vsearch snapshots"}]
    external_views = [
        {
            "name": "vsearch snapshots",
            "href": "vsearch/",
            "destination": "nav",
            "category": "browse",
            "url_route": "vsearch-snapshots",
        }
    ]
    operator_extra_links = [ServiceManifestLink()]
