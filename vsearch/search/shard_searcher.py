"""``ShardSearcher``: one faiss shard, searched in place or by batching worker threads.

Its ``stored`` (``vsearch.search.stored_vectors``) gives a shard's stored vector by id.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vsearch.search.stored_vectors import StoredVectors

_EWMA = 0.1  # weight of the newest sample in a shard's running search time

_omp = threading.local()


def _one_omp_thread() -> None:
    """One OpenMP thread per faiss call from this thread (the setting is per thread).

    Queries and shards already run in parallel; nested OpenMP teams contending
    for the same cores made a single flat search ~20x slower on a busy 2-core
    machine (measured: 2 ms -> 52 ms).
    """
    if not getattr(_omp, "set", False):
        import faiss

        faiss.omp_set_num_threads(1)
        _omp.set = True


_STOP = object()


@dataclass
class _Query:
    xq: np.ndarray
    k: int
    nprobe: int | None
    future: Future[tuple[np.ndarray, np.ndarray]]


class ShardSearcher:
    """One faiss shard, searched by ``threads`` workers that batch queued queries."""

    def __init__(
        self,
        index: Any,
        name: str,
        *,
        threads: int = 1,
        max_batch: int = 32,
        lookup_cache: Path | None = None,
    ) -> None:
        import faiss

        self.index, self.name = index, name
        self.ntotal, self.dim = int(index.ntotal), int(index.d)
        self.stored = StoredVectors(index, lookup_cache)
        self.max_batch = max(1, max_batch)
        try:
            self.nlist: int | None = int(faiss.extract_index_ivf(index).nlist)
        except RuntimeError:
            self.nlist = None
        self._params: dict[int, Any] = {}
        self.seconds_per_query = float("inf")  # running average; unknown until measured
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._work, name=f"shard-{name}-{i}", daemon=True)
            for i in range(max(1, threads))
        ]
        for t in self._workers:
            t.start()

    def search_here(
        self, xq: np.ndarray, k: int, nprobe: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search on the calling thread."""
        _one_omp_thread()
        return self._search(xq, k, nprobe if self.nlist else None)

    def _search(self, xq: np.ndarray, k: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        params = self._search_params(nprobe)
        start = time.perf_counter()
        if params is None:
            D, labels = self.index.search(xq, k)
        else:
            D, labels = self.index.search(xq, k, params=params)
        seconds = (time.perf_counter() - start) / len(xq)
        if self.seconds_per_query == float("inf"):
            self.seconds_per_query = seconds
        else:  # a racy update from several threads only loses a sample
            self.seconds_per_query += _EWMA * (seconds - self.seconds_per_query)
        return D, labels

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
        """The validator's own SearchParameters for ``nprobe`` (cached): nprobe through
        every wrapper (IDMap, OPQ, Refine), the refine shortlist, and an HNSW coarse
        quantizer's efSearch, so the service searches as the recall curve was measured."""
        if nprobe is None:
            return None
        nprobe = max(1, min(nprobe, self.nlist or 1))
        params = self._params.get(nprobe)
        if params is None:
            from vsearch.index.structure import search_params

            params = self._params[nprobe] = search_params(self.index, nprobe)
        return params

    def _work(self) -> None:
        _one_omp_thread()
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
            D, labels = self._search(xq, k, nprobe)
        except Exception as e:  # handed to every waiting request
            for q in group:
                q.future.set_exception(e)
            return
        row = 0
        for q in group:
            n = q.xq.shape[0]
            q.future.set_result((D[row : row + n], labels[row : row + n]))
            row += n
