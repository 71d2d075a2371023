"""Registers vsearch's Airflow extensions (see the vsearch_airflow package)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from vsearch_airflow.links import ServiceManifestLink
from vsearch_airflow.views import create_app


class VsearchPlugin(AirflowPlugin):
    name = "vsearch"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/vsearch", "name": "vsearch snapshots"}]
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
