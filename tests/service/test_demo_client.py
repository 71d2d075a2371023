"""The end of ``vsearch demo``: exercise the service on a published store, in-process and
through the real server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from service.app import close_app, create_app
from tests.fixtures.snapshots import build_synthetic_snapshot
from vsearch.catalog import publish_snapshot
from vsearch.cli.demo import exercise_service
from vsearch.cli.service_process import http_json, running_service, settings_env
from vsearch.config import Settings
from vsearch.storage import open_store

API_KEY = "demo-test-key"


@pytest.mark.parametrize("use_server", [False, True])
def test_demo_finds_the_upsert_then_not_after_the_delete(tmp_path: Path, use_server: bool) -> None:
    settings = Settings.load(environ={}, data_dir=str(tmp_path / "data"), api_key=API_KEY)
    store = open_store(settings=settings)
    publish_snapshot(store, build_synthetic_snapshot(store, datetime(2026, 1, 1, tzinfo=UTC)))
    lines: list[str] = []
    if use_server:
        with running_service(settings_env(settings)) as base:

            def call(method: str, path: str, body: Any = None, headers: Any = None) -> Any:
                return http_json(method, base + path, body, headers)

            results = exercise_service(call, API_KEY, None, lines.append)
    else:
        app = create_app({"SETTINGS": settings, "LOAD_ON_START": "sync", "WATCH_INTERVAL_S": 0})
        client = app.test_client()

        def call(method: str, path: str, body: Any = None, headers: Any = None) -> Any:
            r = client.open(path, method=method, json=body, headers=dict(headers or {}))
            return r.status_code, r.get_json(silent=True)

        try:
            results = exercise_service(call, API_KEY, None, lines.append)
        finally:
            close_app(app)
    assert results["found_then_gone"], lines
    assert len(results["query"]["hits"]) == 5
    assert any("vector query" in line for line in lines)
