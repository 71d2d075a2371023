"""Hostile bodies against search, upsert (with the API key) and delete: each answer is the
status the case names, documented in the OpenAPI document, with the JSON error shape.

Regressions (each was a 500): a body nested deeper than the parser's recursion limit
(RecursionError escaped ``get_json(silent=True)``), the same in a multipart field, a lone
surrogate in ``text`` or ``image_url`` (the query cache key's ``.encode()``), an image URL
that ``urlsplit`` rejects.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask

from service.api.request_bodies import MAX_DIM, MAX_METADATA_DEPTH
from service.app import close_app, create_app
from tests.fixtures.snapshots import DIM, publish_series
from tests.service.conftest import API_KEY, AUTH, HashEncoder
from vsearch.storage import LocalStore

MAX_ITEMS = 5
MAX_REQUEST_MB = 1


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    root: Path = tmp_path_factory.mktemp("hostile")
    store = LocalStore(root / "store")
    publish_series(store, [1], n=200)
    app = create_app(
        {
            "DATA_DIR": str(root / "data"),
            "STORE_OBJECT": store,
            "API_KEY": API_KEY,
            "ENCODER": HashEncoder(),
            "WATCH_INTERVAL_S": 0,
            "LOAD_ON_START": "sync",
            "START_THREADS": False,
            "MAX_K": 20,
            "MAX_UPSERT_ITEMS": MAX_ITEMS,
            "MAX_REQUEST_MB": MAX_REQUEST_MB,
        }
    )
    yield app
    close_app(app)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, in a few dozen bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
BOMB = png_declaring(60_000, 60_000)  # beyond Pillow's own limit: refused when opened
OVER_MAX_PIXELS = png_declaring(7_000, 7_000)  # under Pillow's limit, over the service's
V = [0.1] * DIM
NAN_F32 = b64(np.full(DIM, np.nan, "<f4").tobytes())


@dataclass(frozen=True)
class Hostile:
    name: str
    status: int
    body: bytes | dict[str, Any]  # raw bytes, or multipart fields: str, or (bytes, filename)
    content_type: str | None = "application/json"
    message: str = ""  # a part of the error message, when it matters


def multipart(name: str, status: int, fields: dict[str, Any], message: str = "") -> Hostile:
    return Hostile(name, status, fields, "multipart/form-data", message)


def image_file(data: bytes) -> tuple[bytes, str]:
    return data, "image.png"


TOO_DEEP = "nested too deeply"
SURROGATE = "lone surrogate"

# Bodies any of the three endpoints must refuse the same way.
COMMON = [
    Hostile("deep array", 400, DEEP_ARRAY, message=TOO_DEEP),
    Hostile("deep object", 400, DEEP_OBJECT, message=TOO_DEEP),
    Hostile("empty body", 400, b""),
    Hostile("empty body, no content type", 400, b"", None),
    Hostile("null", 400, b"null"),
    Hostile("a list", 400, b"[1, 2]"),
    Hostile("a string", 400, b'"search"'),
    Hostile("invalid UTF-8", 400, b'{"text": "\xff\xfe"}'),
    Hostile("NaN literal", 400, b'{"k": NaN}', message="NaN is not a JSON value"),
    Hostile("integer of 5000 digits", 400, b'{"k": 1' + b"0" * 5000 + b"}"),
    Hostile("text/plain", 400, b"cats", "text/plain"),
    Hostile("xml", 400, b"<search><text>cats</text></search>", "application/xml"),
    Hostile("form-urlencoded", 400, b"text=cats&k=5", "application/x-www-form-urlencoded"),
    Hostile("multipart without a boundary", 400, b"--x\r\n\r\n--x--", "multipart/form-data"),
    Hostile("over the request size", 413, b"[" + b"0," * (MAX_REQUEST_MB << 19) + b"0]"),
]

SEARCH = [
    *COMMON,
    Hostile("deep vector", 400, b'{"vector": ' + DEEP_ARRAY + b"}", message=TOO_DEEP),
    Hostile("lone high surrogate in text", 400, b'{"text": "\\ud800"}', message=SURROGATE),
    Hostile("lone low surrogate in text", 400, b'{"text": "a\\udfffb"}', message=SURROGATE),
    Hostile(
        "lone surrogate in image_url",
        400,
        b'{"image_url": "https://example.com/\\ud800.jpg"}',
        message=SURROGATE,
    ),
    Hostile("NaN literal in vector", 400, b'{"vector": [NaN' + b", 0.1" * (DIM - 1) + b"]}"),
    Hostile(
        "Infinity literal in vector", 400, b'{"vector": [Infinity' + b", 0" * (DIM - 1) + b"]}"
    ),
    Hostile("-Infinity literal", 400, b'{"vector": [-Infinity' + b", 0" * (DIM - 1) + b"]}"),
    Hostile("1e400 in vector", 400, b'{"vector": [1e400' + b", 0" * (DIM - 1) + b"]}"),
    Hostile("beyond float32 in vector", 400, js({"vector": [1e39] * DIM})),
    Hostile("NaN float32 in base64", 400, js({"vector": NAN_F32})),
    Hostile("huge k", 400, js({"vector": V, "k": 10**30})),
    Hostile("negative k", 400, js({"vector": V, "k": -1})),
    Hostile("k as a string", 400, js({"vector": V, "k": "5"})),
    Hostile("wrong dim", 400, js({"vector": [*V, 0.1]}), message="the index has dim"),
    Hostile("dims over the limit", 400, js({"vector": [0.1] * (MAX_DIM + 1)})),
    Hostile("base64 vector of the wrong dim", 400, js({"vector": b64(b"\0" * 12)})),
    Hostile("base64 not float32", 400, js({"vector": b64(b"\0" * 7)})),
    Hostile("bad base64 vector", 400, js({"vector": "@@@@"})),
    Hostile("bad base64 image", 400, js({"image": "not base64 at all!"})),
    Hostile("an image that is no image", 400, js({"image": b64(b"hello")})),
    Hostile("decompression bomb", 400, js({"image": b64(BOMB)}), message="too-many-pixels"),
    Hostile("over the pixel limit", 400, js({"image": b64(OVER_MAX_PIXELS)})),
    Hostile("image_url with a broken host", 400, js({"image_url": "http://[::1/x.jpg"})),
    Hostile("image_url of 6to4 metadata", 400, js({"image_url": "http://[2002:a9fe:a9fe::]/"})),
    Hostile("image_url file:", 400, js({"image_url": "file:///etc/passwd"})),
    Hostile("id beyond the id range", 400, js({"id": 2**70})),
    Hostile("id as a float", 400, js({"id": 5.0})),
    Hostile("two queries", 400, js({"vector": V, "text": "cats"})),
    Hostile("an unknown field", 400, js({"vector": V, "colour": "red"})),
    multipart(
        "multipart with an extra field",
        400,
        {"image": image_file(OVER_MAX_PIXELS), "colour": "red"},
    ),
    multipart(
        "multipart with an extra file",
        400,
        {"image": image_file(b"x"), "other": (b"x", "other.bin")},
    ),
    multipart("multipart image and text", 400, {"image": image_file(b"x"), "text": "cats"}),
    multipart(
        "multipart with the image twice",
        400,
        {"image": [image_file(OVER_MAX_PIXELS), image_file(b"x")]},
        "more than once",
    ),
    multipart(
        "multipart with k twice",
        400,
        {"image": image_file(OVER_MAX_PIXELS), "k": ["1", "2"]},
        "given 2 times",
    ),
    multipart("multipart deep k", 400, {"image": image_file(b"x"), "k": "[" * 100_000}, TOO_DEEP),
    multipart("multipart NaN k", 400, {"image": image_file(b"x"), "k": "NaN"}),
    multipart("multipart NaN vector", 400, {"vector": "[NaN]"}),
    multipart("multipart bomb", 400, {"image": image_file(BOMB)}, "too-many-pixels"),
    multipart("multipart empty image", 400, {"image": image_file(b"")}),
    multipart("multipart no fields", 400, {}),
]


def items(*entries: dict[str, Any]) -> bytes:
    return js({"items": list(entries)})


UPSERT = [
    *COMMON,
    Hostile("deep items", 400, b'{"items": ' + DEEP_ARRAY + b"}", message=TOO_DEEP),
    Hostile(
        "metadata one level too deep",
        400,
        items({"id": 1, "vector": V, "metadata": nested(MAX_METADATA_DEPTH + 1)}),
        message=f"nests deeper than {MAX_METADATA_DEPTH} levels",
    ),
    Hostile(
        "metadata as deep as parses",
        400,
        items({"id": 1, "vector": V, "metadata": nested(900)}),
        message=f"nests deeper than {MAX_METADATA_DEPTH} levels",
    ),
    Hostile(
        "NaN in metadata", 400, b'{"items": [{"id": 1, "vector": [0.1], "metadata": {"x": NaN}}]}'
    ),
    Hostile(
        "lone surrogate in image_url",
        400,
        b'{"items": [{"id": 1, "image_url": "https://example.com/\\udc00"}]}',
        message=SURROGATE,
    ),
    Hostile("wrong dim", 400, items({"id": 1, "vector": [0.1] * (DIM - 1)})),
    Hostile("NaN float32 in base64", 400, items({"id": 1, "vector": NAN_F32})),
    Hostile("bad base64 image", 400, items({"id": 1, "image": "***"})),
    Hostile("decompression bomb", 400, items({"id": 1, "image": b64(BOMB)})),
    Hostile("too many items", 400, items(*({"id": i, "vector": V} for i in range(MAX_ITEMS + 1)))),
    Hostile("no items", 400, items()),
    Hostile("items not a list", 400, js({"items": "x"})),
    Hostile("id twice", 400, items({"id": 1, "vector": V}, {"id": 1, "vector": V})),
    Hostile("id beyond the id range", 400, items({"id": 2**64, "vector": V})),
    Hostile("multipart", 400, {"items": "[]"}, "multipart/form-data"),
]

DELETE = [
    *COMMON,
    Hostile("deep ids", 400, b'{"ids": ' + DEEP_ARRAY + b"}", message=TOO_DEEP),
    Hostile("NaN id", 400, b'{"ids": [NaN]}'),
    Hostile("surrogate id", 400, b'{"ids": ["\\ud800"]}'),
    Hostile("id as a float", 400, js({"ids": [1.5]})),
    Hostile("id beyond the id range", 400, js({"ids": [2**64]})),
    Hostile("no ids", 400, js({"ids": []})),
    Hostile("too many ids", 400, js({"ids": list(range(MAX_ITEMS + 1))})),
    Hostile("multipart", 400, {"ids": "[1]"}, "multipart/form-data"),
]

ENDPOINTS = {
    "search": ("post", "/v1/search"),
    "upsert": ("put", "/v1/items"),
    "delete": ("post", "/v1/items/delete"),
}
CASES = [
    pytest.param(endpoint, case, id=f"{endpoint}: {case.name}")
    for endpoint, cases in (("search", SEARCH), ("upsert", UPSERT), ("delete", DELETE))
    for case in cases
]


def opened(value: Any) -> Any:
    if isinstance(value, list):
        return [opened(v) for v in value]
    return (io.BytesIO(value[0]), value[1]) if isinstance(value, tuple) else value


def send(app: Flask, endpoint: str, case: Hostile, headers: dict[str, str] | None = None) -> Any:
    method, path = ENDPOINTS[endpoint]
    body = case.body
    if isinstance(body, dict):  # multipart: a file is (bytes, filename); a list, repeats
        body = {k: opened(v) for k, v in body.items()}
    kwargs: dict[str, Any] = {"data": body, "headers": AUTH if headers is None else headers}
    if case.content_type is not None:
        kwargs["content_type"] = case.content_type
    return getattr(app.test_client(), method)(path, **kwargs)


def assert_documented_error(app: Flask, endpoint: str, r: Any, status: int) -> None:
    method, path = ENDPOINTS[endpoint]
    assert r.status_code == status, r.get_data()[:300]
    documented = app.test_client().get("/openapi.json").json["paths"][path][method]["responses"]
    assert str(status) in documented
    assert r.mimetype == "application/json"
    body = r.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert all(isinstance(v, str) and v for v in body["error"].values()), body


@pytest.mark.parametrize(("endpoint", "case"), CASES)
def test_a_hostile_body_gets_its_4xx_with_the_json_error_shape(
    app: Flask, endpoint: str, case: Hostile
) -> None:
    r = send(app, endpoint, case)
    assert_documented_error(app, endpoint, r, case.status)
    assert case.message in r.get_json()["error"]["message"]


@pytest.mark.parametrize("endpoint", ["upsert", "delete"])
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer x"}])
def test_writes_without_the_key_are_a_401_before_the_body_is_read(
    app: Flask, endpoint: str, headers: dict[str, str]
) -> None:
    r = send(app, endpoint, Hostile("deep, no key", 401, DEEP_ARRAY), headers)
    assert_documented_error(app, endpoint, r, 401)


def test_what_is_odd_but_valid_still_passes(app: Flask) -> None:
    """The checks refuse what is broken, not what is unusual: a surrogate *pair* (an emoji),
    metadata with lone surrogates (stored and served back escaped, as JSON allows), metadata
    exactly at the depth limit, multipart fields read as JSON."""
    client = app.test_client()
    r = client.post(
        "/v1/search", data=b'{"text": "\\ud83d\\ude00", "k": 2}', content_type="application/json"
    )
    assert r.status_code == 200, r.json
    meta = {"\ud800": "\udfff", "deep": nested(MAX_METADATA_DEPTH - 1)}
    x = np.random.default_rng(7).standard_normal(DIM).astype("float32")
    body = items({"id": 7, "vector": x.tolist(), "metadata": meta})
    r = client.put("/v1/items", data=body, content_type="application/json", headers=AUTH)
    assert r.status_code == 200, r.json
    r = client.post("/v1/search", json={"vector": x.tolist(), "k": 1})
    assert r.status_code == 200 and r.json["hits"][0]["metadata"] == meta, r.json
    form = {"vector": json.dumps(x.tolist()), "k": "1"}
    r = client.post("/v1/search", data=form, content_type="multipart/form-data")
    assert r.status_code == 200 and r.json["hits"][0]["id"] == 7, r.json
