"""Search over a snapshot's shards plus the live delta: fan-out, merge, tombstones.

- ``DeltaIndex``: the replica's in-memory view of the delta log — an exact
  (brute-force) index of upserted vectors and the latest entry id of every
  item written since the snapshot. An item with an entry newer than the served
  snapshot's watermark hides its base copy (a delete, or an upsert replacing it).
- ``ShardSearcher``: one faiss shard behind worker threads that take queued
  queries in batches (one faiss call for the queries that arrived while the
  previous call ran; no waiting window, so a lone query is not delayed).
- ``SnapshotSearcher``: fans a query out to every shard at once (faiss releases
  the GIL), searches the delta, drops hidden base hits, merges the top k.

Per-request ``nprobe`` goes through faiss ``SearchParameters``; shared index
state is never mutated while serving.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from vsearch.delta import DeltaEntry, parse_entry_id

log = logging.getLogger(__name__)

Watermark = tuple[int, int]
# Base over-fetch for hidden items, before widening: keeps k_base (and faiss's heap) small.
MAX_OVERFETCH = 256
Source = Literal["base", "delta"]


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    source: Source


def nprobe_for_recall(curve: Sequence[Sequence[float]], target: float, default: int) -> int:
    """Smallest nprobe of the recall curve reaching ``target``; the largest one if none does."""
    points = sorted((int(p[0]), float(p[1])) for p in curve)
    if not points:
        return default
    for nprobe, recall in points:
        if recall >= target:
            return nprobe
    return points[-1][0]


class DeltaIndex:
    """Latest state of every item written to the delta log, searchable exactly."""

    def __init__(self, dim: int, metric: str) -> None:
        self.dim, self.metric = dim, metric
        self._lock = threading.Lock()
        self._latest: dict[int, Watermark] = {}  # item -> id of its newest entry
        self._slot: dict[int, int] = {}  # item -> row in the arrays (upserts only)
        self._meta: dict[int, dict[str, Any] | None] = {}
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

    def metadata(self, items: Sequence[int]) -> dict[int, dict[str, Any] | None]:
        with self._lock:
            return {i: self._meta.get(i) for i in items}


_STOP = object()


@dataclass
class _Query:
    xq: np.ndarray
    k: int
    nprobe: int | None
    future: Future[tuple[np.ndarray, np.ndarray]]


class ShardSearcher:
    """One faiss shard, searched by ``threads`` workers that batch queued queries."""

    def __init__(self, index: Any, name: str, *, threads: int = 1, max_batch: int = 32) -> None:
        import faiss

        self.index, self.name = index, name
        self.ntotal, self.dim = int(index.ntotal), int(index.d)
        self.max_batch = max(1, max_batch)
        try:
            self.nlist: int | None = int(faiss.extract_index_ivf(index).nlist)
        except RuntimeError:
            self.nlist = None
        self._params: dict[int, Any] = {}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._work, name=f"shard-{name}-{i}", daemon=True)
            for i in range(max(1, threads))
        ]
        for t in self._workers:
            t.start()

    def submit(
        self, xq: np.ndarray, k: int, nprobe: int | None
    ) -> Future[tuple[np.ndarray, np.ndarray]]:
        future: Future[tuple[np.ndarray, np.ndarray]] = Future()
        self._queue.put(_Query(xq, k, nprobe if self.nlist else None, future))
        return future

    def close(self) -> None:
        for _ in self._workers:
            self._queue.put(_STOP)

    def _search_params(self, nprobe: int | None) -> Any:
        if nprobe is None:
            return None
        nprobe = max(1, min(nprobe, self.nlist or 1))
        if nprobe not in self._params:
            import faiss as faiss_module

            faiss: Any = faiss_module  # its bundled stubs miss the SearchParameters keywords
            params: Any = faiss.SearchParametersIVF(nprobe=nprobe)
            keep = [params]
            node = faiss.downcast_index(self.index)
            wrappers = []
            while isinstance(node, faiss.IndexPreTransform | faiss.IndexIDMap | faiss.IndexIDMap2):
                wrappers.append(node)
                node = faiss.downcast_index(node.index)
            for wrapper in reversed(wrappers):
                if isinstance(wrapper, faiss.IndexPreTransform):
                    params = faiss.SearchParametersPreTransform(index_params=params)
                    keep.append(params)
            self._params[nprobe] = (params, keep)  # keep: the C++ objects params point at
        return self._params[nprobe][0]

    def _work(self) -> None:
        import faiss

        # OpenMP settings are per thread. One OpenMP thread per faiss call: queries and shards
        # already run in parallel, and nested OpenMP teams contending for the same cores make a
        # single flat search ~20x slower on a busy 2-core machine (measured: 2 ms -> 52 ms).
        faiss.omp_set_num_threads(1)
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(nxt)
            groups: dict[tuple[int, int | None], list[_Query]] = {}
            for q in batch:
                groups.setdefault((q.k, q.nprobe), []).append(q)
            for (k, nprobe), group in groups.items():
                self._run(group, k, nprobe)

    def _run(self, group: list[_Query], k: int, nprobe: int | None) -> None:
        try:
            xq = group[0].xq if len(group) == 1 else np.vstack([q.xq for q in group])
            params = self._search_params(nprobe)
            if params is None:
                D, labels = self.index.search(xq, k)
            else:
                D, labels = self.index.search(xq, k, params=params)
        except Exception as e:  # handed to every waiting request
            for q in group:
                q.future.set_exception(e)
            return
        row = 0
        for q in group:
            n = q.xq.shape[0]
            q.future.set_result((D[row : row + n], labels[row : row + n]))
            row += n


class SnapshotSearcher:
    """The shards of one snapshot, searched together with the delta."""

    def __init__(self, shards: Sequence[ShardSearcher], metric: str) -> None:
        self.shards, self.metric = list(shards), metric
        self.nlist = max((s.nlist or 0 for s in self.shards), default=0) or None

    def close(self) -> None:
        for s in self.shards:
            s.close()

    def search(
        self,
        xq: np.ndarray,
        k: int,
        *,
        nprobe: int | None,
        delta: DeltaIndex,
        watermark: Watermark,
        exclude: int | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[Hit]:
        """Top ``k`` hits for one query row ``xq`` (shape (1, d)), best first."""
        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        # Over-fetch from the base by the items the delta hides (capped; widened if that
        # was not enough), so that k hits remain after dropping them.
        hidden = delta.hidden_count(watermark)
        k_base = k + min(hidden, MAX_OVERFETCH) + (exclude is not None)
        while True:
            base, exhausted = self._search_base(xq, k_base, nprobe, delta, watermark, exclude)
            if len(base) >= k or exhausted or k_base >= k + hidden + 1:
                break
            k_base *= 4
        t1 = time.perf_counter()
        dD, dI = delta.search(xq, k + 1, watermark)
        t2 = time.perf_counter()
        timings["base_search"], timings["delta_search"] = t1 - t0, t2 - t1
        hits = base + [
            Hit(int(i), float(d), "delta")
            for d, i in zip(dD[0], dI[0], strict=True)
            if i != exclude
        ]
        hits.sort(key=lambda h: -h.score if self.metric == "ip" else h.score)
        return hits[:k]

    def _search_base(
        self,
        xq: np.ndarray,
        k_base: int,
        nprobe: int | None,
        delta: DeltaIndex,
        watermark: Watermark,
        exclude: int | None,
    ) -> tuple[list[Hit], bool]:
        """Base hits not hidden by the delta, and whether every shard gave all it had."""
        asked = [min(k_base, max(1, s.ntotal)) for s in self.shards]
        futures = [s.submit(xq, n, nprobe) for s, n in zip(self.shards, asked, strict=True)]
        results = [f.result() for f in futures]
        exhausted = all(n >= s.ntotal for s, n in zip(self.shards, asked, strict=True))
        if not results:
            return [], True
        D = np.concatenate([d[0] for d, _ in results])
        labels = np.concatenate([i[0] for _, i in results])
        keep = labels >= 0
        if exclude is not None:
            keep &= labels != exclude
        if delta.hidden_count(watermark):
            keep[keep] &= ~delta.hides(labels[keep], watermark)
        hits = [Hit(int(i), float(d), "base") for d, i in zip(D[keep], labels[keep], strict=True)]
        return hits, exhausted
