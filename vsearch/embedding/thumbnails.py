"""Thumbnails: one small picture per item, made where the image is already decoded.

The embedding stage makes a thumbnail of every item it embeds (longest side
``THUMB_SIDE`` px, WebP, a few KB) and writes a partition's thumbnails as two
objects next to its embeddings (``docs/contracts.md``, thumbnails):

- ``part-{i:05d}.thumbs``      a pack: the thumbnails' bytes, one after another
- ``part-{i:05d}.thumbs.npy``  its table: int64 rows ``[id, offset, length, crc32]``,
                               sorted by id

So one item's thumbnail is one ranged read of the pack (a ranged GET on S3),
never a read of the partition; the crc32 checks those bytes. Upserts through the
service get a thumbnail the same way, carried in their delta-log entry until
compaction writes them into a pack.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from vsearch.storage import ObjectStore

THUMB_SIDE = 160
_WEBP_QUALITY = 75
TABLE_COLUMNS = ("id", "offset", "length", "crc32")
EMPTY_TABLE = np.zeros((0, len(TABLE_COLUMNS)), dtype=np.int64)

_TYPES = ((b"RIFF", 8, b"WEBP", "image/webp"), (b"\xff\xd8\xff", 0, b"", "image/jpeg"))


class ThumbnailCorrupt(ValueError):
    """A thumbnail read from a pack does not match its table's crc32."""


def make_thumbnail(image: Any, side: int = THUMB_SIDE) -> bytes:
    """A WebP thumbnail of a decoded RGB image, its longest side at most ``side`` px
    (smaller images keep their size; JPEG where Pillow lacks WebP).

    Bicubic with a reducing gap of 2 (a box reduction first, then the filter), without
    copying the image first: cheaper than Pillow's ``thumbnail`` (Lanczos, on a copy). What
    thumbnails cost the embed stage is in bench/results/thumbnails.md.
    """
    from PIL import Image, features

    width, height = image.size
    scale = min(1.0, side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = (
        image
        if size == image.size
        else image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    )
    if small.mode != "RGB":
        small = small.convert("RGB")
    buf = io.BytesIO()
    if features.check("webp"):
        small.save(buf, "WEBP", quality=_WEBP_QUALITY, method=4)
    else:  # pragma: no cover - Pillow wheels ship WebP
        small.save(buf, "JPEG", quality=85, optimize=True)
    return buf.getvalue()


def content_type(data: bytes) -> str:
    """The media type of thumbnail bytes, from their magic number."""
    for magic, at, more, kind in _TYPES:
        if data.startswith(magic) and data[at : at + len(more)] == more:
            return kind
    return "application/octet-stream"


def pack(thumbs: Mapping[int, bytes]) -> tuple[bytes, np.ndarray]:
    """The pack and its table for ``{id: thumbnail bytes}``, in id order."""
    rows, parts, offset = [], [], 0
    for item in sorted(thumbs):
        data = thumbs[item]
        rows.append((item, offset, len(data), zlib.crc32(data)))
        parts.append(data)
        offset += len(data)
    table = np.array(rows, dtype=np.int64).reshape(-1, len(TABLE_COLUMNS))
    return b"".join(parts), table


def check_table(table: np.ndarray, pack_bytes: int, where: str) -> np.ndarray:
    """``table`` if it is a well-formed table of a pack of ``pack_bytes``; else ValueError."""
    ok = table.dtype == np.int64 and table.ndim == 2 and table.shape[1] == len(TABLE_COLUMNS)
    if ok and len(table):
        ids, offsets, lengths = table[:, 0], table[:, 1], table[:, 2]
        ok = bool(
            (ids >= 0).all()
            and (np.diff(ids) > 0).all()
            and (offsets >= 0).all()
            and (lengths >= 0).all()
            and (offsets + lengths <= pack_bytes).all()
        )
    if not ok:
        raise ValueError(f"{where}: not a thumbnail table of a {pack_bytes}-byte pack")
    return table


def fetch_table(
    store: ObjectStore, key: str, sha256: str, pack_bytes: int
) -> tuple[np.ndarray, int]:
    """The table at ``key`` and its size in bytes, checked against the sha256 recorded for
    it and against the pack of ``pack_bytes`` it indexes; ValueError when either fails."""
    data = store.get(key)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{key} does not match the sha256 recorded for it")
    return check_table(read_table(data), pack_bytes, key), len(data)


def unpack(data: bytes, table: np.ndarray) -> dict[int, bytes]:
    """``{id: bytes}`` of a whole pack (compaction and copies read packs whole)."""
    found = {}
    for item, offset, length, crc in table.tolist():
        found[item] = checked(data[offset : offset + length], crc, f"item {item}")
    return found


def checked(data: bytes, crc: int, where: str) -> bytes:
    if zlib.crc32(data) != crc:
        raise ThumbnailCorrupt(f"{where}: thumbnail bytes do not match their crc32")
    return data


def table_bytes(table: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(table, dtype=np.int64), allow_pickle=False)
    return buf.getvalue()


def read_table(data: bytes) -> np.ndarray:
    return np.asarray(np.load(io.BytesIO(data), allow_pickle=False))


def merge_tables(tables: Iterable[tuple[int, np.ndarray]]) -> np.ndarray:
    """One table over several packs: rows ``[id, pack, offset, length, crc32]`` sorted by
    id; a later pack's row wins for an id in several (none in a valid snapshot)."""
    parts = [
        np.column_stack([t[:, :1], np.full((len(t), 1), i, np.int64), t[:, 1:]])
        for i, t in tables
        if len(t)
    ]
    if not parts:
        return np.zeros((0, 5), dtype=np.int64)
    rows = np.concatenate(parts)
    order = np.lexsort((-np.arange(len(rows)), rows[:, 0]))
    rows = rows[order]
    keep = np.ones(len(rows), dtype=bool)
    keep[1:] = rows[1:, 0] != rows[:-1, 0]
    return np.ascontiguousarray(rows[keep])


def find(merged: np.ndarray, item: int) -> tuple[int, int, int, int] | None:
    """``(pack, offset, length, crc32)`` of ``item`` in a merged table, or None."""
    ids = merged[:, 0]
    at = int(np.searchsorted(ids, item))
    if at >= len(ids) or int(ids[at]) != item:
        return None
    _, pack_no, offset, length, crc = (int(v) for v in merged[at])
    return pack_no, offset, length, crc
