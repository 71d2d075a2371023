"""The page's own routes through the Flask test client: GET / and its two static files
(CSP, nothing else served from the folder), and GET /v1/info in each state."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.fixtures.photos import PhotoSnapshot
from tests.fixtures.snapshots import publish_series
from tests.service.conftest import AppFactory, HashEncoder
from vsearch.storage import LocalStore


def test_the_page_and_its_files_are_served_with_a_strict_policy(
    make_app: AppFactory, local_store: LocalStore
) -> None:
    client = make_app(local_store, LOAD_ON_START="off").test_client()
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert b'src="static/app.js"' in page.data
    assert not re.search(rb'(src|href)="(https?:)?//', page.data)  # nothing from elsewhere
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.mimetype == kind
    for bad in ("index.html", "..%2Fpage.py", "nope.js"):
        r = client.get(f"/static/{bad}")
        assert r.status_code == 404 and r.json["error"]["code"] in ("not_found",), bad


def test_info_before_a_snapshot(make_app: AppFactory, local_store: LocalStore) -> None:
    body = make_app(local_store, LOAD_ON_START="off").test_client().get("/v1/info").json
    assert body["snapshot"] is None and body["not_ready"]
    assert body["encoder"]["text"] is False and body["max_k"] == 100


def test_info_with_a_text_encoder(make_app: AppFactory, local_store: LocalStore) -> None:
    (manifest,) = publish_series(local_store, [1], n=120)
    body = make_app(local_store, ENCODER=HashEncoder()).test_client().get("/v1/info").json
    assert body["snapshot"]["snapshot_id"] == manifest.snapshot_id
    assert body["snapshot"]["vectors"] == 120 and body["snapshot"]["thumbnails"] == 0
    assert body["encoder"] == {"images": True, "text": True, "reason": None}


def test_info_on_photos_says_why_text_is_off(
    photo_snapshot: PhotoSnapshot, make_app: AppFactory, tmp_path: Path
) -> None:
    client: Any = make_app(photo_snapshot.store).test_client()
    body = client.get("/v1/info").json
    snap = body["snapshot"]
    assert snap["thumbnails"] == 256 and snap["encoder"] == "efficientnet-lite0"
    assert (
        snap["recall"]["image_to_image@10"] == photo_snapshot.manifest.recall.image_to_image_at_10
    )
    assert body["encoder"]["text"] is False and "images only" in body["encoder"]["reason"]


def test_every_answer_names_the_replica(make_app: AppFactory, local_store: LocalStore) -> None:
    client = make_app(local_store, name="replica-7", LOAD_ON_START="off").test_client()
    for path in ("/healthz", "/readyz", "/v1/info", "/nope"):
        assert client.get(path).headers["X-Vsearch-Replica"] == "replica-7", path
