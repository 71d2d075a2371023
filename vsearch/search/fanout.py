"""``SnapshotSearcher``: a query across a snapshot's shards and the delta, merged."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from vsearch.delta.watermarks import Watermark
from vsearch.search.delta_index import DeltaIndex
from vsearch.search.hits import Hit
from vsearch.search.shard_searcher import ShardSearcher

# Base over-fetch for hidden items, before widening: keeps k_base (and faiss's heap) small.
MAX_OVERFETCH = 256
# Shards whose searches add up to less than this run in turn on the request's thread.
INLINE_BUDGET_S = 0.5e-3


class SnapshotSearcher:
    """The shards of one snapshot, searched together with the delta."""

    def __init__(self, shards: Sequence[ShardSearcher], metric: str) -> None:
        self.shards, self.metric = list(shards), metric
        # Micro-batching needs every query in the shards' queues; otherwise search in place.
        self.batching = any(s.max_batch > 1 for s in self.shards)
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
        results = self._fan_out(xq, asked, nprobe)
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

    def _fan_out(
        self, xq: np.ndarray, asked: list[int], nprobe: int | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every shard's answer, in shard order (see the module docstring for where each runs)."""
        pairs = list(zip(self.shards, asked, strict=True))
        if self.batching:
            return [f.result() for f in [s.submit(xq, n, nprobe) for s, n in pairs]]
        if sum(s.seconds_per_query for s, _ in pairs[1:]) < INLINE_BUDGET_S:
            return [s.search_here(xq, n, nprobe) for s, n in pairs]
        futures = [s.submit(xq, n, nprobe) for s, n in pairs[1:]]
        first = pairs[0][0].search_here(xq, pairs[0][1], nprobe)
        return [first] + [f.result() for f in futures]
