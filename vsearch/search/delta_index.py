"""``DeltaIndex``: a replica's in-memory view of the delta log, searchable exactly."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from vsearch.delta import DeltaEntry
from vsearch.delta.watermarks import Watermark, format_entry_id, parse_entry_id

log = logging.getLogger(__name__)


class DeltaIndex:
    """Latest state of every item written to the delta log, searchable exactly."""

    def __init__(self, dim: int, metric: str) -> None:
        self.dim, self.metric = dim, metric
        self._lock = threading.Lock()
        self._latest: dict[int, Watermark] = {}  # item -> id of its newest entry
        self._slot: dict[int, int] = {}  # item -> row in the arrays (upserts only)
        self._meta: dict[int, dict[str, Any] | None] = {}
        self._thumbed: set[int] = set()  # upserts whose newest entry carries a thumbnail
        self._free: list[int] = []
        self._x = np.zeros((16, dim), "float32")
        self._ids = np.full(16, -1, "int64")
        self._ms = np.zeros(16, "int64")
        self._seq = np.zeros(16, "int64")
        self._floor: Watermark = (0, 0)  # entries at or below it are folded into the base

    def __len__(self) -> int:
        return len(self._latest)

    @property
    def upserts(self) -> int:
        return len(self._slot)

    def apply(self, entries: Sequence[DeltaEntry]) -> list[DeltaEntry]:
        """Apply entries (idempotent, any order per item); return those that changed state."""
        applied = []
        with self._lock:
            for e in entries:
                key = e.key
                if key <= self._floor or key <= self._latest.get(e.item, (-1, -1)):
                    continue
                if e.op == "upsert":
                    assert e.vector is not None
                    if e.vector.shape != (self.dim,):
                        log.warning(
                            "delta entry %s: dim %s != %d, skipped", e.id, e.vector.shape, self.dim
                        )
                        continue
                    slot = self._slot.get(e.item)
                    if slot is None:
                        slot = self._alloc()
                        self._slot[e.item] = slot
                    self._x[slot] = e.vector
                    self._ids[slot] = e.item
                    self._ms[slot], self._seq[slot] = key
                    self._meta[e.item] = e.metadata
                    if e.thumbnail:
                        self._thumbed.add(e.item)
                    else:
                        self._thumbed.discard(e.item)
                else:
                    self._release(e.item)
                self._latest[e.item] = key
                applied.append(e)
        return applied

    def _alloc(self) -> int:
        if self._free:
            return self._free.pop()
        n = len(self._slot)
        if n == len(self._ids):
            grow = len(self._ids)
            self._x = np.concatenate([self._x, np.zeros((grow, self.dim), "float32")])
            self._ids = np.concatenate([self._ids, np.full(grow, -1, "int64")])
            self._ms = np.concatenate([self._ms, np.zeros(grow, "int64")])
            self._seq = np.concatenate([self._seq, np.zeros(grow, "int64")])
        return n

    def _release(self, item: int) -> None:
        slot = self._slot.pop(item, None)
        if slot is not None:
            self._ids[slot] = -1
            self._free.append(slot)
        self._meta.pop(item, None)
        self._thumbed.discard(item)

    def compact(self, watermark: str) -> int:
        """Forget entries at or below ``watermark`` (folded into the served snapshot)."""
        floor = parse_entry_id(watermark)
        with self._lock:
            self._floor = max(self._floor, floor)
            gone = [item for item, key in self._latest.items() if key <= floor]
            for item in gone:
                self._release(item)
                del self._latest[item]
        return len(gone)

    def reopen(self, watermark: str) -> None:
        """Lower the floor (a rollback to an older snapshot); then replay the log above it."""
        with self._lock:
            self._floor = min(self._floor, parse_entry_id(watermark))

    def hidden_count(self, watermark: Watermark) -> int:
        """Items with an entry newer than ``watermark``; O(1) once compacted to it."""
        with self._lock:
            if watermark <= self._floor:  # every kept entry is above the floor
                return len(self._latest)
            return sum(1 for key in self._latest.values() if key > watermark)

    def hides(self, items: np.ndarray, watermark: Watermark) -> np.ndarray:
        """Mask of base ids replaced or deleted by entries newer than ``watermark``."""
        with self._lock:
            latest = self._latest
            return np.fromiter(
                (latest.get(int(i), (-1, -1)) > watermark for i in items), bool, len(items)
            )

    def search(self, xq: np.ndarray, k: int, watermark: Watermark) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` over upserts newer than ``watermark``: (scores, ids), best first."""
        with self._lock:
            ms, seq = watermark
            visible = (self._ids >= 0) & ((self._ms > ms) | ((self._ms == ms) & (self._seq > seq)))
            x, ids = self._x[visible], self._ids[visible]
        nq = xq.shape[0]
        if len(ids) == 0:
            return np.zeros((nq, 0), "float32"), np.zeros((nq, 0), "int64")
        if self.metric == "ip":
            scores = xq @ x.T
            order = np.argsort(-scores, axis=1)[:, :k]
        else:
            scores = (xq * xq).sum(1)[:, None] - 2 * xq @ x.T + (x * x).sum(1)[None, :]
            order = np.argsort(scores, axis=1)[:, :k]
        return np.take_along_axis(scores, order, 1), ids[order]

    def lookup(self, item: int, watermark: Watermark) -> Literal["absent", "deleted"] | np.ndarray:
        """The item's delta state above ``watermark``: its vector, deleted, or absent."""
        with self._lock:
            key = self._latest.get(item)
            if key is None or key <= watermark:
                return "absent"
            slot = self._slot.get(item)
            return "deleted" if slot is None else self._x[slot].copy()

    def thumbnail_entry(
        self, item: int, watermark: Watermark
    ) -> Literal["absent", "deleted", "none"] | str:
        """Where the item's delta thumbnail is: the id of its newest entry (which carries
        one), "none" for an upsert without one, or deleted/absent as in ``lookup``."""
        with self._lock:
            key = self._latest.get(item)
            if key is None or key <= watermark:
                return "absent"
            if item not in self._slot:
                return "deleted"
            return format_entry_id(*key) if item in self._thumbed else "none"

    def metadata(self, items: Sequence[int]) -> dict[int, dict[str, Any] | None]:
        with self._lock:
            return {i: self._meta.get(i) for i in items}
