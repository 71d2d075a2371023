"""The Airflow plugin: store hook over an aws connection, snapshots pages, manifest link.

The pages are tested as the API server serves them: the plugin's app mounted at
``/vsearch`` in a parent app, behind Airflow's own permission dependency, with JWTs
from Airflow's auth manager (the SimpleAuthManager, checked against the session's
migrated metadata DB). ``tests/browser/test_airflow_page.py`` opens them in a running
Airflow.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.dags.airflow_env import ROOT, AirflowEnv
from tests.fixtures.snapshots import build_snapshot, build_synthetic_snapshot, sample_vectors
from tests.index.snapshots import write_vectors
from vsearch import stages
from vsearch.catalog import publish_snapshot, read_manifest
from vsearch.config import Settings
from vsearch.index.layout import report_key, run_record_key
from vsearch.index.report import read_report
from vsearch.manifest import Lineage, Manifest, ObjectRef, ThumbnailInfo, ThumbnailPack
from vsearch.storage import ObjectStore
from vsearch.storage.s3 import S3Store

BUILT = "20260301T000000Z"
RUN_ID = "manual__2026-03-01T00:00:00+00:00"
SERVICE = "http://search.internal:8080"
JWT_SECRET = secrets.token_urlsafe(64)


@pytest.fixture
def plugins_on_path(monkeypatch: pytest.MonkeyPatch, airflow_env: AirflowEnv) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(ROOT / "plugins"))
    monkeypatch.setenv("AIRFLOW_HOME", str(airflow_env.home))
    # The key Airflow signs and checks JWTs with (HS512 wants 64 bytes or more).
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", JWT_SECRET)
    yield
    for name in [m for m in sys.modules if m.startswith("vsearch_airflow")]:
        del sys.modules[name]


def client_for(token: str | None, *, cookie: bool = False) -> TestClient:
    """The plugin's app mounted as the API server mounts it, presenting ``token`` as the
    UI does (the ``_token`` cookie) or as API clients do (``Authorization: Bearer``)."""
    from vsearch_airflow.views import create_app

    parent = FastAPI()
    parent.mount("/vsearch", create_app())
    client = TestClient(parent)
    if token and cookie:
        client.cookies.set("_token", token)
    elif token:
        client.headers["Authorization"] = f"Bearer {token}"
    return client


def airflow_token(role: str | None) -> str:
    """A JWT from Airflow's auth manager (the SimpleAuthManager: this AIRFLOW_HOME's)."""
    from airflow.api_fastapi.app import init_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    user = SimpleAuthManagerUser(username=role or "nobody", role=role)
    return str(init_auth_manager().generate_jwt(user))


@pytest.fixture
def viewer(plugins_on_path: None, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    """A logged-in viewer in a browser, with the query service at SERVICE."""
    monkeypatch.setenv("VSEARCH_SERVICE_URL", SERVICE + "/")
    return client_for(airflow_token("viewer"), cookie=True)


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
def test_snapshots_view_lists_recall_size_and_status(
    s3_connection: S3Store, viewer: TestClient
) -> None:
    assert "No snapshot has been published yet" in viewer.get("/vsearch/").text
    old = build_synthetic_snapshot(s3_connection, datetime(2026, 2, 1, tzinfo=UTC), n=120)
    new = build_synthetic_snapshot(s3_connection, datetime(2026, 2, 2, tzinfo=UTC), n=150, seed=1)
    publish_snapshot(s3_connection, old)
    publish_snapshot(s3_connection, new)
    rows = viewer.get("/vsearch/api/snapshots").json()
    assert [(r["snapshot_id"], r["status"], r["vectors"]) for r in rows] == [
        (new.snapshot_id, "live", 150),
        (old.snapshot_id, "superseded", 120),
    ]
    assert rows[0]["bytes"] == sum(s.bytes for s in new.shards)
    assert rows[0]["image_to_image@10"] == 1.0
    page = viewer.get("/vsearch/").text
    assert new.snapshot_id in page and "live" in page and s3_connection.url in page
    assert f"href='snapshots/{new.snapshot_id}'" in page


@pytest.mark.usefixtures("plugins_on_path")
def test_manifest_link_points_at_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from vsearch_airflow.links import ServiceManifestLink

    monkeypatch.setenv("VSEARCH_SERVICE_URL", "http://search.internal:8080/")
    link = ServiceManifestLink().get_link(None, ti_key=None)
    assert link == "http://search.internal:8080/v1/manifest"


def pipeline_snapshot(store: ObjectStore, workdir: Path, snapshot_id: str = BUILT) -> None:
    """Publish a snapshot made by the pipeline's stages, as an Airflow run makes it: the
    run record (build.json), an IVF index, its validation report, the manifest."""
    from vsearch.index.structure import faiss_threads

    settings = Settings.load(environ={}, data_dir=str(workdir / "data"))
    write_vectors(workdir / "vectors", n=2000, nfiles=2)
    run = {"dag_id": "vsearch_build_index", "run_id": RUN_ID}
    with faiss_threads(1):
        for task in stages.plan(store, snapshot_id, [str(workdir / "vectors")], run=run,
                                settings=settings):  # fmt: skip
            stages.embed(store, snapshot_id, task, settings=settings)
        stages.build_index(
            store, snapshot_id, settings=settings,
            train_options={"nq": 100, "factory": "IDMap,IVF16,Flat", "nshards": 2},
            # A target above the first nprobes' recall: the sweep goes on to several points.
            validate_options={"target_recall": 0.995, "max_query_ms": 50.0},
        )  # fmt: skip


@pytest.fixture
def built(s3_connection: S3Store, tmp_path: Path) -> S3Store:
    pipeline_snapshot(s3_connection, tmp_path)
    return s3_connection


def svg_points(page: str) -> list[ET.Element]:
    """The curve's points: the inline <svg> parsed as XML (it must be well-formed)."""
    (svg,) = re.findall(r"<svg .*?</svg>", page, flags=re.S)
    root = ET.fromstring(svg)
    return [g for g in root.iter("{http://www.w3.org/2000/svg}g") if "point" in g.get("class", "")]


def test_detail_view_shows_curve_lineage_shards_and_search_link(
    built: S3Store, viewer: TestClient
) -> None:
    report, manifest = read_report(built, BUILT), read_manifest(built, BUILT)
    response = viewer.get(f"/vsearch/snapshots/{BUILT}")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    # The curve: one labelled point per report entry, the default nprobe marked, the target.
    points = svg_points(page)
    assert len(report.curve) >= 3
    assert [int(g.get("data-nprobe", "")) for g in points] == [p.nprobe for p in report.curve]
    default = [g.get("data-nprobe") for g in points if "default" in g.get("class", "")]
    assert default == [str(report.default_nprobe)]
    assert f"target {report.target_recall:.3g}" in page and 'class="target"' in page
    assert "budget 50 ms" in page  # a line, or an arrow when off the scale
    assert f"indexes/{BUILT}/report.json" in page and "passed" in page
    # Lineage: the run (linked to its page in the UI), sources, counts, encoder, index.
    run_page = "../../dags/vsearch_build_index/runs/manual__2026-03-01T00%3A00%3A00%2B00%3A00"
    assert f"href='{run_page}' target='_top'" in page
    lineage = manifest.lineage
    assert all(source in page for source in lineage.sources)
    assert f"{lineage.item_count} read, {lineage.failures} failed" in page
    assert manifest.delta_watermark in page and manifest.encoder.model_id in page
    assert "IDMap,IVF16,Flat" in page and "nlist 16" in page
    assert "run kind</dt><dd>build" in page  # from the run record, build.json
    # Shard sizes, and their totals.
    assert len(manifest.shards) == 2
    for shard in manifest.shards:
        assert f"<code>{shard.uri}</code></td><td class='num'>{shard.bytes}</td>" in page
        assert f"<td class='num'>{shard.ntotal}</td>" in page
    assert f"{sum(s.bytes for s in manifest.shards)} (" in page
    assert f"<td class='num'>{manifest.ntotal}</td><td class=''></td></tr></tfoot>" in page
    assert f"href='{SERVICE}/?snapshot={BUILT}'" in page


@pytest.mark.usefixtures("plugins_on_path")
def test_detail_view_without_a_report_draws_the_manifest_curve(
    s3_connection: S3Store, viewer: TestClient
) -> None:
    """A snapshot published outside the pipeline (no report.json, no build.json), or
    with both unreadable: the manifest's recall.curve is drawn; an exact index has no
    curve to draw."""
    xb = sample_vectors(1500, 64, seed=3)
    ivf = build_snapshot(s3_connection, "20260303T000000Z", xb, np.arange(1500, dtype="int64"),
                         factory="IVF16,Flat")  # fmt: skip
    flat = build_synthetic_snapshot(s3_connection, datetime(2026, 3, 4, tzinfo=UTC), n=100)
    pack, table = (s3_connection.put(f"thumbnails/{flat.snapshot_id}/0.{kind}", b"x" * size)
                   for kind, size in (("pack", 3000), ("table", 72)))  # fmt: skip
    packs = (ThumbnailPack(*(ObjectRef(o.key, o.sha256 or "", o.size) for o in (pack, table))),)
    flat = dataclasses.replace(flat, thumbnails=ThumbnailInfo(packs, 100))
    for m in (ivf, flat):
        publish_snapshot(s3_connection, m)
    page = viewer.get(f"/vsearch/snapshots/{ivf.snapshot_id}").text
    assert len(svg_points(page)) == len(ivf.recall.curve) >= 3
    assert "the manifest&#x27;s recall.curve" in page and "No run record" in page
    s3_connection.put(report_key(ivf.snapshot_id), b"{not json")
    s3_connection.put(run_record_key(ivf.snapshot_id), b'{"sources": 3}')
    assert viewer.get(f"/vsearch/snapshots/{ivf.snapshot_id}").text == page
    page = viewer.get(f"/vsearch/snapshots/{flat.snapshot_id}").text
    assert "<svg" not in page and "an exact index" in page
    assert "thumbnails: 100 in 1 pack(s), 3.0 KiB" in page


@pytest.mark.usefixtures("plugins_on_path")
@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("20260101T000000Z", 404),  # valid, never published
        ("not-a-snapshot", 400),
        ("20260101T000000Z-under_score", 400),
        ("20260101T000000Z%20%3Cb%3E", 400),
    ],
)
def test_unknown_and_invalid_ids_are_4xx_pages(
    s3_connection: S3Store, viewer: TestClient, path: str, status: int
) -> None:
    response = viewer.get(f"/vsearch/snapshots/{path}")
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert "<b>" not in response.text and "all snapshots" in response.text


@pytest.mark.usefixtures("plugins_on_path")
def test_a_manifest_of_a_newer_schema_is_reported_not_a_crash(
    s3_connection: S3Store, viewer: TestClient
) -> None:
    """As during an upgrade: the pipeline writes a schema this API server cannot read."""
    good = build_synthetic_snapshot(s3_connection, datetime(2026, 3, 7, tzinfo=UTC), n=50)
    publish_snapshot(s3_connection, good)
    newer = {**good.to_dict(), "snapshot_id": "20260308T000000Z", "schema_version": 99}
    s3_connection.put("manifests/20260308T000000Z.json", json.dumps(newer).encode())
    rows = viewer.get("/vsearch/api/snapshots").json()
    assert [(r["snapshot_id"], r["status"]) for r in rows] == [
        ("20260308T000000Z", "unreadable"),
        (good.snapshot_id, "live"),
    ]
    assert "schema_version" in rows[0]["error"]
    assert "unreadable" in viewer.get("/vsearch/").text
    response = viewer.get("/vsearch/snapshots/20260308T000000Z")
    assert response.status_code == 500 and "is unreadable" in response.text
    assert response.headers["content-type"].startswith("text/html")


@pytest.mark.usefixtures("plugins_on_path")
def test_markup_in_a_manifest_is_escaped(s3_connection: S3Store, viewer: TestClient) -> None:
    m = build_synthetic_snapshot(s3_connection, datetime(2026, 3, 5, tzinfo=UTC), n=50)
    evil = "<script>alert(1)</script>"
    m = dataclasses.replace(
        m,
        lineage=Lineage("d'><img src=x onerror=alert(2)>", f"r{evil}", (f"s3://b/{evil}",), 50, 0),
        encoder=dataclasses.replace(m.encoder, name="<i>enc</i>", model_id='"><b>model'),
        index=dataclasses.replace(m.index, factory="IDMap2,Flat<style>body{display:none}</style>"),
    )
    assert isinstance(m, Manifest)
    publish_snapshot(s3_connection, m)
    for path in ("/vsearch/", f"/vsearch/snapshots/{m.snapshot_id}"):
        page = viewer.get(path).text
        assert "<script>" not in page and "<img" not in page and "<i>" not in page
        assert "<b>" not in page and "<style>body{display" not in page
        assert "&lt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_markup_in_a_report_run_record_or_error_is_escaped(
    built: S3Store, viewer: TestClient
) -> None:
    """The templates escape every value, not only the manifest's: the validation report,
    the run record, an unreadable manifest's reason, an error page's message."""
    from vsearch_airflow.snapshot_pages import render_error, render_list

    evil = "<script>alert(1)</script>"
    report = json.loads(built.get(report_key(BUILT)))
    report["gate"]["reason"] = f"recall {evil}"
    built.put(report_key(BUILT), json.dumps(report).encode())
    record = json.loads(built.get(run_record_key(BUILT)))
    built.put(run_record_key(BUILT), json.dumps({**record, "encoder_spec": evil}).encode())
    unreadable = [{"snapshot_id": BUILT, "status": "unreadable", "error": f"x'{evil}"}]
    pages = [
        viewer.get(f"/vsearch/snapshots/{BUILT}").text,
        render_list(unreadable, f"s3://bucket/{evil}"),
        render_error(404, f"no snapshot {evil}", f"../'{evil}"),
    ]
    for page in pages:
        assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "recall &lt;script&gt;" in pages[0] and "passed" in pages[0]
    assert "x&#x27;&lt;script&gt;" in pages[1]
    assert "href='../&#x27;&lt;script&gt;" in pages[2]


@pytest.mark.usefixtures("plugins_on_path")
def test_pages_need_an_airflow_user_who_may_read_the_dag_runs(
    s3_connection: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow's own check, on every route: 401 without a token (a browser is sent to
    the login page and back), 403 for a forged token or a user without a role; served
    to a viewer (the UI's cookie) and to an admin (a bearer token, as API clients)."""
    m = build_synthetic_snapshot(s3_connection, datetime(2026, 3, 6, tzinfo=UTC), n=50)
    publish_snapshot(s3_connection, m)
    # What an authorised user gets: every page of a published snapshot, and 400 for a
    # snapshot id that is not one (see test_unknown_and_invalid_ids_are_4xx_pages).
    served = {"/vsearch/": 200, f"/vsearch/snapshots/{m.snapshot_id}": 200,
              "/vsearch/api/snapshots": 200, "/vsearch/snapshots/not-an-id": 400}  # fmt: skip
    admin = airflow_token("admin")
    forged = admin[:-4] + ("AAAA" if not admin.endswith("AAAA") else "BBBB")
    anonymous, nobody = client_for(None), client_for(airflow_token(None))
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    for path, status in served.items():
        assert anonymous.get(path).status_code == 401, path
        assert anonymous.get(path).json() == {"detail": "Not authenticated"}
        to_login = anonymous.get(path, headers=browser, follow_redirects=False)
        assert to_login.status_code == 307
        assert to_login.headers["location"] == "/api/v2/auth/login?" + urlencode({"next": path})
        assert client_for(forged).get(path).status_code == 403, path
        assert client_for(forged).get(path, headers=browser, follow_redirects=False
                                      ).status_code == 307  # fmt: skip
        assert nobody.get(path).json() == {"detail": "Forbidden"}
        refused = nobody.get(path, headers=browser)
        assert refused.status_code == 403 and "<h2>403</h2>" in refused.text
        assert client_for(admin).get(path).status_code == status, path
        assert client_for(airflow_token("viewer"), cookie=True).get(path).status_code == status
    # Nothing of the app is left open: no /docs, no OpenAPI schema.
    for path in ("/vsearch/docs", "/vsearch/openapi.json"):
        assert anonymous.get(path).status_code == client_for(admin).get(path).status_code == 404


@pytest.mark.usefixtures("plugins_on_path")
@pytest.mark.parametrize(
    "curve",
    [
        [(1, 1.0, 0.0)],  # one point, no time measured
        [(1, 0.2, 0.5), (4, 0.6, 0.5), (16, 0.99, 3.0)],  # equal times, low recall
        [(nprobe, 0.9 + nprobe / 1000, nprobe * 0.01) for nprobe in (1, 2, 4, 8, 16, 32, 64)],
    ],
)
def test_curve_svg_is_well_formed_for_any_curve(curve: list[tuple[int, float, float]]) -> None:
    from vsearch_airflow.curve_svg import curve_svg

    svg = curve_svg(curve, target_recall=0.95, budget_ms=1.0, default_nprobe=curve[0][0])
    points = svg_points(svg)
    assert [int(g.get("data-nprobe", "")) for g in points] == [p[0] for p in curve]
    circles = [g.find("{http://www.w3.org/2000/svg}circle") for g in points]
    for c in circles:
        assert c is not None
        assert 0 <= float(c.get("cx", "")) <= 560 and 0 <= float(c.get("cy", "")) <= 320
