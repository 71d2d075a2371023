"""Shard fan-out: where each shard is searched, and that the answer never depends on it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import faiss
import numpy as np
import pytest

from vsearch.search import DeltaIndex, ShardSearcher, SnapshotSearcher
from vsearch.search import shard_searcher as shards_module
from vsearch.search.fanout import INLINE_BUDGET_S

D, N, K = 16, 300, 10


def _vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, D)).astype("float32")
    faiss.normalize_L2(x)
    return x


@pytest.fixture
def shard_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """'<shard> on <thread>' for each shard search."""
    names: list[str] = []
    search = ShardSearcher._search

    def recorded(self: ShardSearcher, *args: Any) -> Any:
        names.append(f"{self.name} on {threading.current_thread().name}")
        return search(self, *args)

    monkeypatch.setattr(ShardSearcher, "_search", recorded)
    return names


def _searcher(max_batch: int) -> Iterator[tuple[SnapshotSearcher, np.ndarray]]:
    xb = _vectors(3 * N, seed=1)
    shards = []
    for j in range(3):
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(D))
        index.add_with_ids(xb[j * N : (j + 1) * N], np.arange(j * N, (j + 1) * N))
        shards.append(ShardSearcher(index, f"s{j}", threads=2, max_batch=max_batch))
    searcher = SnapshotSearcher(shards, "ip")
    yield searcher, xb
    searcher.close()


@pytest.fixture
def unbatched() -> Iterator[tuple[SnapshotSearcher, np.ndarray]]:
    yield from _searcher(max_batch=1)


@pytest.fixture
def batched() -> Iterator[tuple[SnapshotSearcher, np.ndarray]]:
    yield from _searcher(max_batch=32)


def _ids(searcher: SnapshotSearcher, xq: np.ndarray) -> list[int]:
    hits = searcher.search(xq, K, nprobe=None, delta=DeltaIndex(D, "ip"), watermark=(0, 0))
    return [h.id for h in hits]


def _exact(xb: np.ndarray, xq: np.ndarray) -> list[int]:
    _, ids = faiss.knn(xq, xb, K, metric=faiss.METRIC_INNER_PRODUCT)
    return [int(i) for i in ids[0]]


def test_slow_shards_fan_out_with_the_first_on_the_request_thread(
    unbatched: tuple[SnapshotSearcher, np.ndarray], shard_threads: list[str]
) -> None:
    searcher, xb = unbatched
    xq = _vectors(1, seed=2)
    for s in searcher.shards:
        s.seconds_per_query = 1.0  # as if every shard took a second
    assert _ids(searcher, xq) == _exact(xb, xq)
    here = threading.current_thread().name
    ran = sorted(n.rsplit("-", 1)[0] for n in shard_threads)  # drop the worker's number
    assert ran == [f"s0 on {here}", "s1 on shard-s1", "s2 on shard-s2"]


def test_fast_shards_run_in_turn_on_the_request_thread(
    unbatched: tuple[SnapshotSearcher, np.ndarray],
    shard_threads: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    searcher, xb = unbatched
    # Nothing measured yet: the first query fans out, and measures every shard.
    assert all(s.seconds_per_query == float("inf") for s in searcher.shards)
    xq = _vectors(1, seed=3)
    assert _ids(searcher, xq) == _exact(xb, xq)
    assert sum(" on shard-" in n for n in shard_threads) == 2
    assert all(0 < s.seconds_per_query < float("inf") for s in searcher.shards)
    monkeypatch.setattr(shards_module, "_EWMA", 0.0)  # freeze the averages: no timing here
    for s in searcher.shards:
        s.seconds_per_query = INLINE_BUDGET_S / 4  # as if measured: three fit in the budget
    shard_threads.clear()
    for seed in range(4, 9):
        xq = _vectors(1, seed=seed)
        assert _ids(searcher, xq) == _exact(xb, xq)
    here = threading.current_thread().name
    assert shard_threads == [f"s{j} on {here}" for j in range(3)] * 5


def test_micro_batching_queues_every_shard(
    batched: tuple[SnapshotSearcher, np.ndarray], shard_threads: list[str]
) -> None:
    searcher, xb = batched
    for seed in range(3):
        xq = _vectors(1, seed=seed)
        assert _ids(searcher, xq) == _exact(xb, xq)
    assert len(shard_threads) == 9 and all(" on shard-" in n for n in shard_threads)
