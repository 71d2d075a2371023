"""Validation of request bodies: every malformed input becomes an ApiError (4xx).

Nothing here trusts a type: ``True`` is not an int, ``1.5`` is not an id, NaN is
not a coordinate, unknown fields are refused so that typos are not ignored. JSON is
read strictly by ``parse_json`` (no NaN or Infinity; nesting too deep to parse is a
400, not a RecursionError), strings must be valid Unicode, and metadata, which is
stored and served back, nests at most ``MAX_METADATA_DEPTH`` levels.

The request models of ``service.api.models`` run ``check_search``, ``check_items`` and
``check_ids`` before they are built: the messages of every 400 are here, in the order
the checks run.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import numpy as np
import orjson
from flask import Request

from service.errors import ApiError
from vsearch import strict_json
from vsearch.delta import MAX_ITEM_ID

MAX_TEXT_CHARS = 2048
MAX_URL_CHARS = 2048
MAX_NPROBE = 65536
MAX_DIM = 8192
MAX_METADATA_BYTES = 16 * 1024
# Metadata is written to the delta log and served back by other processes and threads,
# whose stacks may be deeper than the one that parsed it: keep far from the recursion limit.
MAX_METADATA_DEPTH = 32
# Items embedded from images per upsert: each may fetch a URL (up to image_fetch_timeout_s)
# and run the encoder: the app bounds a request's own work (no server deadline does).
MAX_IMAGE_ITEMS = 8

_NUMBER_TYPES = {int, float}  # not bool
QUERY_KINDS = ("text", "image", "image_url", "vector", "id")
_ALIASES = {"image_b64": "image", "vector_b64": "vector"}
SEARCH_FIELDS = {*QUERY_KINDS, *_ALIASES, "k", "nprobe", "target_recall", "exact"}
ITEM_FIELDS = {"id", "vector", "vector_b64", "image", "image_b64", "image_url", "metadata"}


def bad(message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, message)


def parse_json(text: str | bytes, what: str) -> Any:
    """``text`` as strict JSON (RFC 8259: no NaN or Infinity); anything else is a 400.

    orjson reads it (fast: the request path); what orjson refuses is read again by
    Python's parser, strictly, which accepts what RFC 8259 allows but orjson does not
    (``"\\ud800"`` escapes, numbers beyond double range) and names the problem better.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return strict_json.loads(text)
    except RecursionError:  # the C parser recurses once per level of nesting
        raise bad(f"{what} is nested too deeply") from None
    except ValueError as e:  # also undecodable bytes and integers of over 4300 digits
        raise bad(f"{what} is not valid JSON: {e}") from None


def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, whatever its Content-Type says."""
    data = parse_json(request.get_data(cache=True), "the body")
    if not isinstance(data, dict):
        raise bad("the body must be a JSON object")
    return data


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{name} must be an integer")
    if not lo <= value <= hi:
        raise bad(f"{name} must be between {lo} and {hi}")
    return value


def _form_value(value: str, name: str) -> Any:
    """Multipart fields are strings: read them as JSON (``5``, ``0.9``, ``true``, ``[0.1]``)."""
    return parse_json(value, f"the form field {name!r}")


def item_id(value: Any, name: str = "id") -> int:
    return _int(value, name, 0, MAX_ITEM_ID)


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise bad(f"{name} must be a non-empty base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad(f"{name} is not valid base64") from None


def vector(value: Any, name: str = "vector") -> np.ndarray:
    """A JSON list of numbers or base64 of little-endian float32; finite, non-empty."""
    if isinstance(value, str):
        raw = _b64(value, name)
        if len(raw) % 4 or not raw:
            raise bad(f"{name}: base64 must hold float32 values (a multiple of 4 bytes)")
        x = np.frombuffer(raw, "<f4").astype("float32")
    elif isinstance(value, list):
        if not set(map(type, value)) <= _NUMBER_TYPES:  # JSON gives exactly int or float
            raise bad(f"{name} must be a list of numbers")
        try:
            with np.errstate(over="ignore"):  # out of float32 range -> inf -> refused below
                x = np.asarray(value, "float64").astype("float32")
        except OverflowError:
            raise bad(f"{name} has a value out of float32 range") from None
    else:
        raise bad(f"{name} must be a list of numbers or a base64 string of float32")
    if not 0 < x.size <= MAX_DIM:
        raise bad(f"{name} must have between 1 and {MAX_DIM} values")
    if not np.isfinite(x).all():
        raise bad(f"{name} has a non-finite value")
    return x


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise bad(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise bad(f"{name} is longer than {limit} characters")
    try:  # JSON's "\ud800" escapes decode to lone surrogates, which no encoder or URL takes
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise bad(f"{name} is not valid Unicode: a lone surrogate at {e.start}") from None
    return value


def _nesting(value: Any) -> int:
    """How deep lists and objects nest in ``value`` (a scalar: 0), without recursing."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in node)
    return deepest


def _query(kind: str, value: Any) -> Any:
    if kind == "text":
        return _text(value, "text", MAX_TEXT_CHARS)
    if kind == "image_url":
        return _text(value, "image_url", MAX_URL_CHARS)
    if kind == "image":
        return value if isinstance(value, bytes) else _b64(value, "image")
    if kind == "vector":
        return vector(value)
    return item_id(value)


def _one_of(fields: dict[str, Any], kinds: tuple[str, ...], what: str) -> tuple[str, str, Any]:
    """The one input ``fields`` hold: its kind (an alias read as its kind), name and value."""
    given = [
        (_ALIASES.get(name, name), name) for name in fields if _ALIASES.get(name, name) in kinds
    ]
    if len(given) != 1:
        names = ", ".join(sorted({*kinds, *_ALIASES}))
        found = ", ".join(name for _, name in given) or "none"
        raise bad(f"{what} needs exactly one of {names}; got {found}")
    kind, name = given[0]
    return kind, name, fields[name]


def _form_fields(request: Request) -> dict[str, Any]:
    """A multipart body's fields: text fields as JSON values (``text`` and ``image_url`` as
    they are), the ``image`` file as bytes. A field given twice is refused, not half read."""
    fields: dict[str, Any] = {}
    for name, values in request.form.lists():
        if len(values) > 1:
            raise bad(f"the form field {name!r} is given {len(values)} times")
        fields[name] = values[0] if name in ("text", "image_url") else _form_value(values[0], name)
    for name, uploads in request.files.lists():
        if name != "image":
            raise bad(f"unknown file field {name!r}; upload the image as 'image'")
        if len(uploads) > 1 or name in fields:
            raise bad("the image is given more than once")
        fields[name] = uploads[0].read()
    return fields


def search_fields(request: Request) -> dict[str, Any]:
    """A search's fields as sent: a JSON object, or a multipart form (``_form_fields``)."""
    if request.mimetype == "multipart/form-data":
        return _form_fields(request)
    return json_object(request)


def check_search(fields: dict[str, Any], *, max_k: int, default_k: int) -> dict[str, Any]:
    """The fields of a valid search, as ``service.api.models.SearchRequest`` takes them: the
    query under the name it was sent as (an image as bytes, a vector as an array), every
    option filled in."""
    unknown = sorted(repr(n) if not isinstance(n, str) else n for n in set(fields) - SEARCH_FIELDS)
    if unknown:
        raise bad(f"unknown field(s): {', '.join(unknown)}")
    kind, name, raw = _one_of(fields, QUERY_KINDS, "a search")
    k = _int(fields.get("k", default_k), "k", 1, max_k)
    nprobe = fields.get("nprobe")
    target = fields.get("target_recall")
    if nprobe is not None and target is not None:
        raise bad("give nprobe or target_recall, not both")
    if nprobe is not None:
        nprobe = _int(nprobe, "nprobe", 1, MAX_NPROBE)
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target <= 1:
            raise bad("target_recall must be a number in (0, 1]")
        target = float(target)
    exact = fields.get("exact", False)
    if not isinstance(exact, bool):
        raise bad("exact must be true or false")
    query = _query(kind, raw)
    return {name: query, "k": k, "nprobe": nprobe, "target_recall": target, "exact": exact}


def check_items(body: dict[str, Any], max_items: int) -> list[dict[str, Any]]:
    """The items of a valid upsert, as ``service.api.models.Item`` takes them: each source
    under the name it was sent as (an image as bytes, a vector as an array)."""
    if set(body) != {"items"}:
        raise bad('the body must be {"items": [...]}')
    items = body["items"]
    if not isinstance(items, list) or not 0 < len(items) <= max_items:
        raise bad(f"items must be a list of 1 to {max_items} objects")
    out, seen, images = [], set(), 0
    for n, item in enumerate(items):
        where = f"items[{n}]"
        if not isinstance(item, dict):
            raise bad(f"{where} must be an object")
        unknown = sorted(set(item) - ITEM_FIELDS)
        if unknown:
            raise bad(f"{where}: unknown field(s): {', '.join(unknown)}")
        if "id" not in item:
            raise bad(f"{where}: id is required")
        iid = item_id(item["id"], f"{where}.id")
        if iid in seen:
            raise bad(f"{where}: id {iid} appears twice in the batch")
        seen.add(iid)
        sources = {k: v for k, v in item.items() if k not in ("id", "metadata")}
        kind, name, raw = _one_of(sources, ("vector", "image", "image_url"), where)
        metadata = item.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise bad(f"{where}.metadata must be an object")
            deep = f"{where}.metadata nests deeper than {MAX_METADATA_DEPTH} levels"
            try:
                size = len(json.dumps(metadata, allow_nan=False))
            except RecursionError:
                raise bad(deep) from None
            except ValueError:
                raise bad(f"{where}.metadata must be plain JSON") from None
            if size > MAX_METADATA_BYTES:
                raise bad(f"{where}.metadata is over {MAX_METADATA_BYTES} bytes")
            if _nesting(metadata) > MAX_METADATA_DEPTH:
                raise bad(deep)
        out.append({"id": iid, name: _query(kind, raw), "metadata": metadata})
        images += kind != "vector"
    if images > MAX_IMAGE_ITEMS:
        raise bad(f"at most {MAX_IMAGE_ITEMS} items per request may be images or image URLs")
    return out


def check_ids(body: dict[str, Any], max_items: int) -> list[int]:
    if set(body) != {"ids"}:
        raise bad('the body must be {"ids": [...]}')
    ids = body["ids"]
    if not isinstance(ids, list) or not 0 < len(ids) <= max_items:
        raise bad(f"ids must be a list of 1 to {max_items} ids")
    return [item_id(v, f"ids[{n}]") for n, v in enumerate(ids)]


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
