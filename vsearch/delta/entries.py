"""Delta log entries: ``ms-seq`` ids, the writes to append, the entries read back.

``encode_write`` and ``decode_entry`` turn them into the stored bytes (float32
little-endian vector, compact JSON metadata) and back; both backends use them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from vsearch.delta.watermarks import parse_entry_id

Op = Literal["upsert", "delete"]
MAX_ITEM_ID = (1 << 63) - 1


@dataclass(frozen=True)
class DeltaWrite:
    """One write to append: an upsert carries a vector (float32), metadata and, when it
    was made from an image, the image's thumbnail (``vsearch.embedding.thumbnails``)."""

    op: Op
    item: int
    vector: np.ndarray | None = None
    metadata: dict[str, Any] | None = None
    thumbnail: bytes | None = None

    def __post_init__(self) -> None:
        if self.op not in ("upsert", "delete"):
            raise ValueError(f"op must be 'upsert' or 'delete', got {self.op!r}")
        if not 0 <= self.item <= MAX_ITEM_ID:
            raise ValueError(f"item id must be in [0, 2**63-1], got {self.item}")
        if self.op == "upsert" and self.vector is None:
            raise ValueError("an upsert needs a vector")


@dataclass(frozen=True)
class DeltaEntry:
    """A write as recorded in the log, with its ``ms-seq`` id."""

    id: str
    op: Op
    item: int
    vector: np.ndarray | None
    metadata: dict[str, Any] | None
    thumbnail: bytes | None = None

    @property
    def key(self) -> tuple[int, int]:
        return parse_entry_id(self.id)


def encode_write(w: DeltaWrite) -> tuple[bytes | None, str | None]:
    vec = None if w.vector is None else np.ascontiguousarray(w.vector, "<f4").tobytes()
    meta = None if w.metadata is None else json.dumps(w.metadata, separators=(",", ":"))
    return vec, meta


def decode_entry(
    eid: str,
    op: str,
    item: int,
    vec: bytes | None,
    meta: str | bytes | None,
    thumb: bytes | None = None,
) -> DeltaEntry:
    vector = None if not vec else np.frombuffer(vec, dtype="<f4").copy()
    metadata = None if not meta else json.loads(meta)
    kind: Op = "delete" if op == "delete" else "upsert"
    return DeltaEntry(eid, kind, item, vector, metadata, bytes(thumb) if thumb else None)


def recorded(eid: str, w: DeltaWrite) -> DeltaEntry:
    """``w`` as the entry ``eid`` the log recorded it as."""
    return DeltaEntry(eid, w.op, w.item, w.vector, w.metadata, w.thumbnail)
