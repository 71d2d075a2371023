"""The OpenAPI document fuzzed against the live app (schemathesis): no 5xx, documented answers.

Two modes: positive (inputs the document allows) and negative (inputs it forbids: wrong
types, missing or extra fields, out-of-range values, bodies that are not JSON), which
must be refused with a documented 4xx carrying the JSON error shape. The hand-picked
hostile inputs no generator finds (deep nesting, lone surrogates, NaN literals, image
bombs) are in test_hostile_inputs.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis  # a dev dependency (pyproject's dev extra): a missing install fails here
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
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


def json_error_shape(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx and 5xx is ``{"error": {"code": str, "message": str}}``, nothing else."""
    if response.status_code < 400:
        return
    assert response.headers.get("content-type", [""])[0].startswith("application/json")
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}, body
    assert all(isinstance(v, str) and v for v in error.values()), body


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    json_error_shape,
]


def operations(app: Flask) -> list[Any]:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(strategy: Any, checks: list[Any], max_examples: int) -> None:
    """Hypothesis-generated cases (schemathesis's pytest plugin is not used: it does not run
    under this pytest version; the operations are driven by hand instead)."""

    @given(case=strategy)
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=checks)

    run()


def test_every_operation_fuzzed_answers_without_5xx_and_as_documented(live_app: Flask) -> None:
    found = operations(live_app)
    assert len(found) == 10
    for operation in found:
        fuzz(operation.as_strategy(), CHECKS, max_examples=60)


def rejects_negative_data(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's negative_data_rejection: what breaks the document is refused with a 4xx.

    Except a multipart field negated into a list of one value or none: it is sent as that
    value or as no field at all, a valid form, which schemathesis still reports as the
    invalid request it meant to send. (Two or more values are a field given twice: a 400.)
    """
    body = case.body if case.media_type == "multipart/form-data" else None
    if isinstance(body, dict) and any(isinstance(v, list) and len(v) <= 1 for v in body.values()):
        return None
    result: bool | None = negative_data_rejection(ctx, response, case)
    return result


def test_inputs_the_document_forbids_get_a_documented_4xx(live_app: Flask) -> None:
    """Negative mode, per operation with a body and per media type; the API key is fixed
    (a missing or wrong one is test_hostile_inputs's)."""
    with_body = [op for op in operations(live_app) if list(op.body)]
    assert {op.label for op in with_body} == {
        "POST /v1/search",
        "PUT /v1/items",
        "POST /v1/items/delete",
    }
    for operation in with_body:
        for body in operation.body:
            strategy = operation.as_strategy(
                GenerationMode.NEGATIVE,
                headers={"X-API-Key": API_KEY},
                media_type=body.media_type,
            )
            fuzz(strategy, [*CHECKS, rejects_negative_data], max_examples=80)


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
