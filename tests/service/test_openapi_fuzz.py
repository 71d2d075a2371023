"""The OpenAPI document fuzzed against the live app (schemathesis): no 5xx, documented answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis  # a dev dependency (pyproject's dev extra): a missing install fails here
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import close_app, create_app
from tests.fixtures.snapshots import publish_series
from tests.service.conftest import API_KEY, HashEncoder
from vsearch.storage import LocalStore


@pytest.fixture(scope="module")
def live_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    store = LocalStore(root / "store")
    publish_series(store, [1], n=300)
    app = create_app(
        {
            "DATA_DIR": str(root / "data"),
            "STORE_OBJECT": store,
            "API_KEY": API_KEY,
            "ENCODER": HashEncoder(),
            "WATCH_INTERVAL_S": 0,
            "LOAD_ON_START": "sync",
            "MAX_K": 20,
            "MAX_UPSERT_ITEMS": 5,
        }
    )
    yield app
    close_app(app)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_every_operation_fuzzed_answers_without_5xx_and_as_documented(live_app: Flask) -> None:
    """Hypothesis-generated cases per operation (schemathesis's pytest plugin is not used:
    it does not run under this pytest version; the operations are driven by hand instead)."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", live_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def fuzz(case: Any) -> None:
            case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=CHECKS)

        fuzz()


def test_the_document_is_openapi_3(live_app: Flask) -> None:
    doc = live_app.test_client().get("/openapi.json").json
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) >= {
        "/v1/search",
        "/v1/items",
        "/v1/items/delete",
        "/v1/manifest",
        "/readyz",
    }
    assert doc["components"]["schemas"]["SearchRequest"]["properties"]["k"]["maximum"] == 20
