"""Recall evaluation: pure functions over numpy arrays, in the style of faiss.contrib.evaluation.

Names follow the field: ``xq`` queries, ``xb`` database vectors, ``D``/``I``
distances and ids of the results, ``gt`` exact ids, ``k`` results per query.
Recall@k here is the k-NN intersection measure (``knn_intersection_measure``
in faiss.contrib): the share of the exact top-k that the index returns in its
own top-k — what a user notices as missing results.
"""

# ruff: noqa: E741  -- D, I are the field's names for distances and ids (faiss)
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

RECALL_KS = (1, 10, 100)


def _heap(nq: int, k: int, metric: str) -> object:
    import faiss

    # Inner product: bigger is closer; L2: smaller is closer.
    return faiss.ResultHeap(nq, k, keep_max=metric == "ip")


def knn_ground_truth(
    xq: np.ndarray, blocks: Iterable[tuple[np.ndarray, np.ndarray]], k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (D, I) of the ``k`` nearest ids to each of ``xq`` over every (xb, ids) block.

    Streams: one block in memory at a time, any number of vectors in total.
    """
    import faiss

    assert xq.ndim == 2 and k > 0
    fmetric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    heap = _heap(len(xq), k, metric)
    for xb, ids in blocks:
        assert xb.shape[1] == xq.shape[1] and len(xb) == len(ids)
        if len(xb) == 0:
            continue
        D, I = faiss.knn(xq, xb, min(k, len(xb)), metric=fmetric)
        heap.add_result(D, np.where(I >= 0, ids[np.maximum(I, 0)], -1))  # type: ignore[attr-defined]
    heap.finalize()  # type: ignore[attr-defined]
    return heap.D, heap.I  # type: ignore[attr-defined]


def merge_results(
    results: Sequence[tuple[np.ndarray, np.ndarray]], k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """The global top-k of per-shard (D, I) results for the same queries."""
    assert results
    heap = _heap(len(results[0][0]), k, metric)
    for D, I in results:
        heap.add_result(np.ascontiguousarray(D), np.ascontiguousarray(I))  # type: ignore[attr-defined]
    heap.finalize()  # type: ignore[attr-defined]
    return heap.D, heap.I  # type: ignore[attr-defined]


def recall_at(I: np.ndarray, gt: np.ndarray, k: int) -> float:
    """k-NN intersection: mean over queries of |I[:, :k] ∩ gt[:, :k]| / k."""
    assert I.shape[0] == gt.shape[0], (I.shape, gt.shape)
    assert I.shape[1] >= k and gt.shape[1] >= k, (I.shape, gt.shape, k)
    if len(I) == 0:
        return 0.0
    exact = gt[:, :k]
    # -1 marks "no result": it must never count as a hit.
    hits = (I[:, :k, None] == exact[:, None, :]) & (I[:, :k, None] >= 0)
    return float(hits.any(axis=2).sum() / (len(I) * k))


def drop_self(I: np.ndarray, qids: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` ids of each row of ``I`` other than that query's own id.

    An indexed item used as a query finds itself first: trivially, and at any
    nprobe. "More like this" means the others, so both the results and the
    ground truth are compared without it (search k+1, drop self).
    """
    assert I.shape[0] == qids.shape[0] and I.shape[1] >= k
    keep = qids[:, None] != I
    order = np.argsort(~keep, axis=1, kind="stable")  # kept ids first, in rank order
    return np.take_along_axis(np.where(keep, I, -1), order, axis=1)[:, :k]


def recalls(I: np.ndarray, gt: np.ndarray, ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """{"recall@1": .., "recall@10": ..} for every k both arrays are deep enough for."""
    depth = min(I.shape[1], gt.shape[1])
    return {f"recall@{k}": round(recall_at(I, gt, k), 4) for k in ks if k <= depth}


def nprobe_grid(nlist: int, max_nprobe: int = 1024) -> list[int]:
    """Powers of two from 1 to min(nlist, max_nprobe), and nlist itself when smaller."""
    top = min(nlist, max_nprobe)
    grid = [1 << i for i in range(top.bit_length()) if 1 << i <= top]
    if grid[-1] != top:
        grid.append(top)
    return grid


def default_nprobe(curve: Sequence[tuple[int, float]], target: float) -> int | None:
    """The smallest nprobe whose recall reaches ``target``; None when none does."""
    for nprobe, recall in sorted(curve):
        if recall >= target:
            return nprobe
    return None


def timed(
    nq: int, search: Callable[..., tuple[np.ndarray, np.ndarray]], *args: Any
) -> tuple[np.ndarray, float]:
    """(I, ms per query) of ``search(*args)``, a batch of ``nq`` queries."""
    start = time.perf_counter()
    _, I = search(*args)
    return I, (time.perf_counter() - start) * 1000.0 / max(nq, 1)
