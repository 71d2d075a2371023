"""The OpenAPI 3.1 document of the service, served at ``/openapi.json``.

The schemas are generated from the models the handlers use (service/api/models.py),
with the app's own limits written in; the paths, their answers and security are listed
here. The test suite fuzzes the live app from this document with schemathesis.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from service.api.models import (
    DeleteRequest,
    Error,
    Info,
    SearchForm,
    SearchRequest,
    SearchResult,
    UpsertRequest,
    WriteResult,
)

_REF = "#/components/schemas/{model}"
_MODELS: tuple[type[BaseModel], ...] = (
    SearchRequest,
    SearchForm,
    UpsertRequest,
    DeleteRequest,
    SearchResult,
    WriteResult,
    Error,
    Info,
)


class _Schema(GenerateJsonSchema):
    """Pydantic's JSON schema without a title per field, nor ``default: null`` (absent), and
    a nullable scalar as ``"type": [T, "null"]``: schemathesis's negative mode turns the
    first branch of pydantic's ``anyOf`` into null and expects a 400 for a valid input."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        if isinstance(inner.get("type"), str) and inner["type"] != "null":
            return {**inner, "type": [inner["type"], "null"]}
        return {"anyOf": [inner, {"type": "null"}]}

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        if "default" in json_schema and json_schema["default"] is None:
            del json_schema["default"]
        return json_schema


def component_schemas(*, max_k: int, default_k: int, max_items: int) -> dict[str, Any]:
    """Every model's schema by name, with the app's limits."""
    _, top = models_json_schema(
        [(model, "validation") for model in _MODELS], ref_template=_REF, schema_generator=_Schema
    )
    schemas: dict[str, Any] = top["$defs"]
    for schema in schemas.values():  # docstrings, their lines joined
        if "description" in schema:
            schema["description"] = " ".join(schema["description"].split())
    for name in ("SearchRequest", "SearchForm"):
        schemas[name]["properties"]["k"].update(maximum=max_k, default=default_k)
    schemas["UpsertRequest"]["properties"]["items"]["maxItems"] = max_items
    schemas["DeleteRequest"]["properties"]["ids"]["maxItems"] = max_items
    return schemas


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _answer(description: str, schema: dict[str, Any], media_type: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": schema}}}


def _json(description: str, model: str | None = None) -> dict[str, Any]:
    """An ``application/json`` answer: of ``model``, or any object."""
    return _answer(description, _ref(model) if model else {"type": "object"}, "application/json")


def _error(description: str) -> dict[str, Any]:
    return _json(description, "Error")


def _body(content: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {t: {"schema": s} for t, s in content.items()}}


_BAD_QUERY = {
    "400": _error("invalid input"),
    "404": _error("the id is not stored"),
    "413": _error("the body is too large"),
    "501": _error("a feature this build lacks (image decoding)"),
    "503": _error(
        "no snapshot served yet, a dependency is down, or every image-URL fetch or image "
        "decode slot is taken (image_fetch_busy, image_decode_busy; Retry-After says when)"
    ),
}
_WRITE = {
    "200": _json("appended to the delta log", "WriteResult"),
    "400": _error("invalid input"),
    "401": _error("missing or wrong API key"),
    "403": _error("writes are disabled"),
    "413": _error("the body is too large"),
    "501": _error("a feature this build lacks (image decoding)"),
    "503": _error(
        "no snapshot served yet, the delta log is down, or every image-URL fetch or image "
        "decode slot is taken (Retry-After says when)"
    ),
}
_BINARY = {"type": "string", "format": "binary"}
_THUMBNAIL_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the item id, an integer in [0, 2**63)",
}
_PATHS: dict[str, Any] = {
    "/v1/search": {"post": {
        "summary": "Search the live snapshot plus the delta",
        "responses": {"200": _json("the top k hits", "SearchResult"), **_BAD_QUERY},
    }},
    "/v1/items": {"put": {
        "summary": "Upsert items into the delta",
        "security": [{"apiKey": []}],
        "requestBody": _body({"application/json": _ref("UpsertRequest")}),
        "responses": _WRITE,
    }},
    "/v1/items/delete": {"post": {
        "summary": "Delete items (hides base copies)",
        "security": [{"apiKey": []}],
        "requestBody": _body({"application/json": _ref("DeleteRequest")}),
        "responses": _WRITE,
    }},
    "/v1/manifest": {"get": {
        "summary": "The manifest of the live snapshot (docs/contracts.md); without "
        "the API key, lineage.sources entries read <redacted>",
        "security": [{}, {"apiKey": []}],
        "responses": {
            "200": _json("the manifest"),
            "401": _error("a wrong API key"),
            "503": _error("not ready"),
        },
    }},
    "/v1/items/{id}/thumbnail": {"get": {
        "summary": "The item's thumbnail (base or delta, as search sees it); "
        "ETag and Cache-Control, 304 on If-None-Match",
        "parameters": [_THUMBNAIL_ID],
        "responses": {
            "200": {
                "description": "the thumbnail (WebP, longest side 160 px)",
                "content": {"image/webp": {"schema": _BINARY}, "image/jpeg": {"schema": _BINARY}},
            },
            "304": {"description": "not modified (If-None-Match)"},
            "400": _error("not an item id"),
            "404": _error("unknown or deleted item, or one without a thumbnail"),
            "503": _error("not ready, or the store or delta log is unreachable"),
        },
    }},
    "/v1/info": {"get": {
        "summary": "What the search page shows: the live snapshot (id, vectors, "
        "recall@10, thumbnails), live upserts, the encoder (images? text?), limits",
        "responses": {"200": _json("the service's state", "Info")},
    }},
    "/": {"get": {
        "summary": "The search page (HTML)",
        "responses": {"200": _answer("the page", {"type": "string"}, "text/html")},
    }},
    "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json("alive")}}},
    "/readyz": {"get": {
        "summary": "Readiness; says why a snapshot was refused",
        "responses": {"200": _json("serving"), "503": _json("not serving yet")},
    }},
    "/metrics": {"get": {
        "summary": "Prometheus metrics",
        "responses": {
            "200": _answer("text exposition format", {"type": "string"}, "text/plain")
        },
    }},
}  # fmt: skip


def openapi_document(*, max_k: int, default_k: int, max_items: int) -> dict[str, Any]:
    schemas = component_schemas(max_k=max_k, default_k=default_k, max_items=max_items)
    # The multipart search is written inline, as a form of fields rather than a JSON body.
    form = schemas.pop("SearchForm")
    search_body = _body({"application/json": _ref("SearchRequest"), "multipart/form-data": form})
    paths = {**_PATHS, "/v1/search": {"post": {**_PATHS["/v1/search"]["post"],
                                               "requestBody": search_body}}}  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "vsearch query service", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": schemas,
        },
    }


@functools.lru_cache(maxsize=8)
def openapi_json(*, max_k: int, default_k: int, max_items: int) -> bytes:
    """The document as JSON, generated once per set of limits: generating the schemas
    takes milliseconds, and ``/openapi.json`` is public."""
    return orjson.dumps(openapi_document(max_k=max_k, default_k=default_k, max_items=max_items))
