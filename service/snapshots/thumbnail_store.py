"""A snapshot's thumbnails, as the query service reads them (``service.api.thumbnails_api``).

A snapshot's thumbnail tables (``manifest.thumbnails``, see ``vsearch.embedding.thumbnails``)
are merged once, when the snapshot loads, into one table sorted by id, kept in
the shard cache as ``{key}.thumbs.npy`` and memory-mapped, so the workers of a
replica share its pages. A thumbnail is then one ranged read of its pack,
checked by crc32, behind a bounded in-memory LRU of bytes (``ThumbnailCache``).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vsearch.embedding import thumbnails
from vsearch.manifest import Manifest, ObjectRef
from vsearch.storage import ObjectStore


class ThumbnailsRefused(ValueError):
    """A thumbnail table does not match its manifest entry."""


@dataclass(frozen=True)
class SnapshotThumbnails:
    """Where each item's thumbnail is: rows ``[id, pack, offset, length, crc32]``."""

    packs: tuple[ObjectRef, ...]
    table: np.ndarray  # memory-mapped, sorted by id

    def locate(self, item: int) -> tuple[ObjectRef, int, int, int] | None:
        found = thumbnails.find(self.table, item)
        if found is None:
            return None
        pack_no, offset, length, crc = found
        return self.packs[pack_no], offset, length, crc


def cache_key(manifest: Manifest) -> str | None:
    """The name of the merged table in the shard cache (None: no thumbnails)."""
    if manifest.thumbnails is None:
        return None
    tables = "".join(p.table.sha256 for p in manifest.thumbnails.packs)
    return hashlib.sha256(tables.encode()).hexdigest()


def load_thumbnails(
    store: ObjectStore, manifest: Manifest, cache: Path
) -> SnapshotThumbnails | None:
    """The snapshot's merged thumbnail table, built into ``cache`` once and mapped."""
    info, key = manifest.thumbnails, cache_key(manifest)
    if info is None or key is None:
        return None
    packs = tuple(p.pack for p in info.packs)
    path = cache / f"{key}.thumbs.npy"
    if not path.exists():
        tables = []
        for i, p in enumerate(info.packs):
            try:
                table, _ = thumbnails.fetch_table(store, p.table.uri, p.table.sha256, p.pack.bytes)
            except ValueError as e:
                raise ThumbnailsRefused(f"thumbnails.packs[{i}].table: {e}") from None
            tables.append((i, table))
        merged = thumbnails.merge_tables(tables)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, merged, allow_pickle=False)
        os.replace(tmp, path)
    return SnapshotThumbnails(packs, np.load(path, mmap_mode="r", allow_pickle=False))


class ThumbnailCache:
    """A bounded LRU of thumbnail bytes by ETag, for one process."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.nbytes = max_bytes, 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self.nbytes += len(data) - (len(old) if old else 0)
            self._items[key] = data
            while self.nbytes > self.max_bytes:
                self.nbytes -= len(self._items.popitem(last=False)[1])
