"""The end of `make demo`: start the service on a published store and exercise it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.demo_client import demo_service
from vsearch.config import Settings
from vsearch.demo import build_synthetic_snapshot
from vsearch.snapshots import publish_snapshot
from vsearch.storage import open_store


@pytest.mark.parametrize("use_gunicorn", [False, True])
def test_demo_service_finds_the_upsert_then_not_after_the_delete(
    tmp_path: Path, use_gunicorn: bool
) -> None:
    settings = Settings.load(environ={}, data_dir=str(tmp_path / "data"))
    store = open_store(settings=settings)
    publish_snapshot(store, build_synthetic_snapshot(store, datetime(2026, 1, 1, tzinfo=UTC)))
    lines: list[str] = []
    results = demo_service(settings, use_gunicorn=use_gunicorn, say=lines.append)
    assert results["found_then_gone"], lines
    assert len(results["query"]["hits"]) == 5
    assert any("vector query" in line for line in lines)
