"""The object store built from an Airflow connection instead of raw environment variables.

Connection ``vsearch_store`` (override with the hook's ``conn_id``), type ``aws``:

- login / password: access key id / secret (or leave empty for the instance role);
- extras: ``{"store_url": "s3://bucket/prefix", "endpoint_url": "http://minio:9000",
  "region_name": "us-east-1"}`` — ``endpoint_url`` is the amazon provider's own extra.

Without that connection the hook falls back to vsearch's own settings
(``VSEARCH_STORE``, embedded default: a local directory), so the same DAG runs
on a laptop and in production.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

from airflow.sdk import BaseHook

log = logging.getLogger(__name__)


class VsearchStoreHook(BaseHook):
    conn_name_attr = "conn_id"
    default_conn_name = "vsearch_store"
    conn_type = "aws"
    hook_name = "vsearch object store"

    def __init__(self, conn_id: str = default_conn_name, store_url: str | None = None) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.store_url = store_url

    def _connection_extras(self) -> dict[str, Any] | None:
        """The connection's extras; None when no such connection is defined (only then:
        any other error, a metadata-DB hiccup say, fails the task rather than send its
        output to another store)."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(self.conn_id)
        except AirflowNotFoundException:
            log.warning("no Airflow connection %r: using vsearch settings (VSEARCH_STORE)",
                        self.conn_id)  # fmt: skip
            return None
        return dict(conn.extra_dejson)

    @classmethod
    def for_params(cls, params: Any) -> Any:
        """The store a DAG run's params name (``store_conn_id``)."""
        return cls(conn_id=params["store_conn_id"]).get_store()

    def get_store(self) -> Any:
        """The ObjectStore named by the connection (or by vsearch settings without one)."""
        from vsearch.config import Settings
        from vsearch.storage import open_store
        from vsearch.storage.s3 import S3Store

        settings = Settings.load()
        extras = self._connection_extras()
        url = self.store_url or (extras or {}).get("store_url") or settings.store
        parsed = urlparse(url)
        if parsed.scheme != "s3" or extras is None:
            return open_store(url, settings)
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        client = AwsBaseHook(aws_conn_id=self.conn_id, client_type="s3").get_client_type()
        return S3Store(parsed.netloc, parsed.path, client=client)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["host", "schema", "port"],
            "relabeling": {"login": "AWS access key id", "password": "AWS secret access key"},
            "placeholders": {
                "extra": '{"store_url": "s3://bucket/prefix", "endpoint_url": "http://minio:9000"}'
            },
        }
