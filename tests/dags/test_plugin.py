"""The Airflow plugin: store hook over an aws connection, snapshots view, manifest link."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.dags.airflow_env import ROOT, AirflowEnv
from tests.fixtures.snapshots import build_synthetic_snapshot
from vsearch.snapshots import publish_snapshot
from vsearch.storage.s3 import S3Store


@pytest.fixture
def plugins_on_path(monkeypatch: pytest.MonkeyPatch, airflow_env: AirflowEnv) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(ROOT / "plugins"))
    monkeypatch.setenv("AIRFLOW_HOME", str(airflow_env.home))
    yield
    for name in [m for m in sys.modules if m.startswith("vsearch_airflow")]:
        del sys.modules[name]


@pytest.fixture
def s3_connection(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> S3Store:
    """A bucket on the moto server, reachable only through the Airflow connection."""
    bucket = f"af-{uuid.uuid4().hex[:10]}"
    store = S3Store(bucket, "snapshots", endpoint_url=s3_endpoint)
    store.client.create_bucket(Bucket=bucket)
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing-secret",
        "extra": {
            "store_url": f"s3://{bucket}/snapshots",
            "endpoint_url": s3_endpoint,
            "region_name": "us-east-1",
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_VSEARCH_STORE", json.dumps(conn))
    monkeypatch.setenv("VSEARCH_STORE", "/nonexistent-should-not-be-used")
    return store


def test_airflow_loads_the_plugin(airflow_env: AirflowEnv) -> None:
    out = airflow_env.run("plugins", "--output", "json")
    assert out.returncode == 0, out.stderr
    (plugin,) = [p for p in json.loads(out.stdout) if p["name"] == "vsearch"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/vsearch"
    assert plugin["external_views"][0]["href"] == "vsearch/"
    assert "ServiceManifestLink" in plugin["operator_extra_links"][0]


@pytest.mark.usefixtures("plugins_on_path")
def test_hook_builds_the_s3_store_from_the_connection(s3_connection: S3Store) -> None:
    from vsearch_airflow.hooks import VsearchStoreHook

    store = VsearchStoreHook().get_store()
    assert isinstance(store, S3Store)
    assert store.url == s3_connection.url
    store.put("hello.txt", b"through the connection")
    assert s3_connection.get("hello.txt") == b"through the connection"


@pytest.mark.usefixtures("plugins_on_path")
def test_hook_without_connection_uses_vsearch_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from vsearch_airflow.hooks import VsearchStoreHook

    monkeypatch.setenv("VSEARCH_STORE", str(tmp_path))
    assert VsearchStoreHook(conn_id="no_such_connection").get_store().url == f"file://{tmp_path}"


@pytest.mark.usefixtures("plugins_on_path")
def test_hook_fails_when_the_connection_lookup_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only "no such connection" falls back to the settings' store: any other error (the
    metadata DB down, simulated here by an in-process stand-in for the lookup) fails the
    task instead of sending its output to another store."""
    from vsearch_airflow.hooks import VsearchStoreHook

    def unreachable(conn_id: str) -> object:
        raise ConnectionError("metadata database unreachable")

    monkeypatch.setattr(VsearchStoreHook, "get_connection", staticmethod(unreachable))
    with pytest.raises(ConnectionError):
        VsearchStoreHook().get_store()


@pytest.mark.usefixtures("plugins_on_path")
def test_snapshots_view_lists_recall_size_and_status(s3_connection: S3Store) -> None:
    from fastapi.testclient import TestClient

    from vsearch_airflow.views import create_app

    client = TestClient(create_app())
    assert "No snapshot has been published yet" in client.get("/").text
    old = build_synthetic_snapshot(s3_connection, datetime(2026, 2, 1, tzinfo=UTC), n=120)
    new = build_synthetic_snapshot(s3_connection, datetime(2026, 2, 2, tzinfo=UTC), n=150, seed=1)
    publish_snapshot(s3_connection, old)
    publish_snapshot(s3_connection, new)
    rows = client.get("/api/snapshots").json()
    assert [(r["snapshot_id"], r["status"], r["vectors"]) for r in rows] == [
        (new.snapshot_id, "live", 150),
        (old.snapshot_id, "superseded", 120),
    ]
    assert rows[0]["bytes"] == sum(s.bytes for s in new.shards)
    assert rows[0]["image_to_image@10"] == 1.0
    page = client.get("/").text
    assert new.snapshot_id in page and "live" in page and s3_connection.url in page


@pytest.mark.usefixtures("plugins_on_path")
def test_manifest_link_points_at_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from vsearch_airflow.links import ServiceManifestLink

    monkeypatch.setenv("VSEARCH_SERVICE_URL", "http://search.internal:8080/")
    link = ServiceManifestLink().get_link(None, ti_key=None)
    assert link == "http://search.internal:8080/v1/manifest"
