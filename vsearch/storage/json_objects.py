"""JSON objects in a store: written deterministically, read as None when absent."""

from __future__ import annotations

import json
from typing import Any

from vsearch.canonical_json import json_bytes
from vsearch.storage.object_store import ObjectNotFound, ObjectStore


def put_json(store: ObjectStore, key: str, value: Any) -> str:
    """Write ``value`` as deterministic JSON; return its sha256."""
    info = store.put(key, json_bytes(value))
    assert info.sha256 is not None
    return info.sha256


def put_if_changed(store: ObjectStore, key: str, data: bytes) -> None:
    """A retry that computes the same bytes leaves the object (and its etag) untouched."""
    try:
        if store.get(key) == data:
            return
    except ObjectNotFound:
        pass
    store.put(key, data)


def put_json_if_changed(store: ObjectStore, key: str, value: Any) -> None:
    put_if_changed(store, key, json_bytes(value))


def get_json(store: ObjectStore, key: str) -> Any | None:
    """The JSON value at ``key``, or None when there is no such object."""
    try:
        data = store.get(key)
    except ObjectNotFound:
        return None
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise ValueError(f"{key} in {store.url} is not valid JSON: {e}") from None
