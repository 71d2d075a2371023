"""What leaves the service without the API key: never the key itself in the access log (the
real server, service/server.py, writing it to a file), and no internal source paths in the manifest
anonymous readers get.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from tests.fixtures.snapshots import build_snapshot, publish, sample_vectors, snapshot_id
from tests.service.conftest import API_KEY, AUTH, AppFactory
from vsearch.cli.service_process import free_port, http_json, server_command, settings_env
from vsearch.config import Settings
from vsearch.manifest import Lineage
from vsearch.storage import LocalStore, ObjectStore

SOURCES = ("/home/ops/photos/2026", "s3://corp-raw-images/catalogue")


def published_with_sources(store: ObjectStore) -> dict[str, object]:
    xb = sample_vectors(50, 64, seed=4)
    m = build_snapshot(store, snapshot_id(1), xb, np.arange(50, dtype="int64"))
    m = dataclasses.replace(m, lineage=Lineage("build_dag", "manual__1", SOURCES, 50, 0))
    publish(store, m)
    return m.to_dict()


def test_the_server_never_writes_the_api_key_to_its_access_log(tmp_path: Path) -> None:
    """Regression: gunicorn's default access log format (the server before) had %(u)s, the
    HTTP Basic user, so a client sending the key as `curl -u KEY:` had it written to the log
    in clear; the query string could carry it too."""
    store = LocalStore(tmp_path / "store")
    published_with_sources(store)
    settings = Settings.load(environ={}, data_dir=str(tmp_path / "data"),
                             store=str(store.root), api_key=API_KEY)  # fmt: skip
    access_log, port = tmp_path / "access.log", free_port()
    env = {**os.environ, **settings_env(settings), "VSEARCH_SERVICE_BIND": f"127.0.0.1:{port}",
           "VSEARCH_SERVICE_ACCESS_LOG": str(access_log)}  # fmt: skip
    cmd = server_command()
    with open(tmp_path / "server.log", "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    basic_user = base64.b64encode(f"{API_KEY}:".encode()).decode()
    basic_password = base64.b64encode(f"client:{API_KEY}".encode()).decode()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if http_json("GET", f"{url}/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        body = {"ids": [1]}
        # Basic is not a way to send the key (401), but the header reaches the server anyway.
        for header in (f"Basic {basic_user}", f"Basic {basic_password}"):
            status, _ = http_json("POST", f"{url}/v1/items/delete", body, {"Authorization": header})
            assert status == 401
        assert http_json("POST", f"{url}/v1/items/delete", body, AUTH)[0] == 200
        bearer = {"Authorization": f"Bearer {API_KEY}"}
        assert http_json("POST", f"{url}/v1/items/delete", body, bearer)[0] == 200
        assert http_json("GET", f"{url}/v1/manifest?api_key={API_KEY}")[0] == 200
    finally:
        proc.terminate()
        proc.wait(30)
    logged = access_log.read_text()
    for secret in (API_KEY, basic_user, basic_password):
        assert secret not in logged, logged
    lines = logged.splitlines()
    assert sum("/v1/items/delete" in line and " 401 " in line for line in lines) == 2, logged
    assert sum("/v1/items/delete" in line and " 200 " in line for line in lines) == 2, logged
    assert sum("GET /v1/manifest" in line for line in lines) == 1, logged


def test_the_manifest_hides_its_sources_from_anonymous_readers(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    """Regression: /v1/manifest gave anyone lineage.sources, which name local paths and
    buckets. Without the key they are redacted (their count kept); with it, all is there."""
    full = published_with_sources(local_store)
    client = make_app(local_store).test_client()

    anonymous = client.get("/v1/manifest")
    assert anonymous.status_code == 200
    assert anonymous.json["lineage"]["sources"] == ["<redacted>", "<redacted>"]
    assert {**anonymous.json, "lineage": full["lineage"]} == full  # the rest, untouched
    for source in SOURCES:
        assert source not in anonymous.get_data(as_text=True)
    assert "X-API-Key" in anonymous.headers["Vary"]

    for headers in (AUTH, {"Authorization": f"Bearer {API_KEY}"}):
        keyed = client.get("/v1/manifest", headers=headers)
        assert (keyed.status_code, keyed.json) == (200, full)
    wrong = client.get("/v1/manifest", headers={"X-API-Key": "guess"})
    assert (wrong.status_code, wrong.json["error"]["code"]) == (401, "unauthorized")
