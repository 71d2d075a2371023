"""The held-out queries of a validation, their exact neighbours, and recall over the shards.

Two kinds of query, each compared with exact search over *all* vectors:

- image->image: embedded items chosen by id hash (never in the training sample),
  each compared without itself: an indexed item finds itself at any nprobe, so
  the results and the exact neighbours are the *other* items ("more like this");
- text->image: caption vectors at ``indexes/{snapshot}/queries-text.npy`` (or
  another key), written by whoever owns the text tower; CLIP puts text and
  images in different cones, so these queries fall outside the distribution
  the IVF was trained on and often need a larger nprobe.

``sweep_nprobe`` measures each kind over a grid of nprobe, single-threaded (ms
per query per core); ``validate_snapshot`` (``vsearch.index.validate``) turns
the measurements into the report and the gate.
"""

# ruff: noqa: E741  -- D, I are the field's names for distances and ids (faiss)
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vsearch.index.evaluate import drop_self, knn_ground_truth, merge_results, recalls, timed
from vsearch.index.layout import text_queries_key
from vsearch.index.partition_vectors import Inventory, held_out_queries, iter_vectors
from vsearch.index.report import IMAGE, TEXT, CurvePoint, KindRecall, SweepPoint
from vsearch.index.structure import faiss_threads, search_params
from vsearch.storage import ObjectStore

GT_K = 100


def write_text_queries(store: ObjectStore, snapshot_id: str, xq: np.ndarray) -> str:
    """Store caption vectors (float32, (nq, d)) for text->image validation; return the key."""
    if xq.ndim != 2 or xq.dtype != np.float32 or not np.isfinite(xq).all():
        raise ValueError(f"text queries must be finite float32 (nq, d), got {xq.dtype} {xq.shape}")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(xq), allow_pickle=False)
    return store.put(text_queries_key(snapshot_id), buf.getvalue()).key


def _load_text_queries(store: ObjectStore, key: str, d: int) -> np.ndarray:
    xq = np.load(io.BytesIO(store.get(key)), allow_pickle=False)
    if xq.ndim != 2 or xq.shape[1] != d or len(xq) == 0 or not np.isfinite(xq).all():
        raise ValueError(f"{key}: expected finite (nq, {d}) vectors, got {xq.dtype} {xq.shape}")
    return np.ascontiguousarray(xq, dtype=np.float32)


@dataclass(frozen=True)
class HeldOutQueries:
    """Held-out queries per kind with their exact neighbours (``gt_k`` deep)."""

    xq: dict[str, np.ndarray]
    # An image query's own id, dropped from its results and ground truth; None for text.
    own: dict[str, np.ndarray | None]
    gt: dict[str, np.ndarray]
    gt_k: int
    gt_seconds: float


def load_queries(
    store: ObjectStore, inv: Inventory, nq: int, seed: int, text_key: str | None, metric: str
) -> HeldOutQueries:
    """``nq`` image queries held out at training (by ``seed``), the caption queries at
    ``text_key`` if any, and their exact neighbours under ``metric``."""
    xq_image, qids = held_out_queries(store, inv, nq, seed)
    xq = {IMAGE: xq_image}
    own: dict[str, np.ndarray | None] = {IMAGE: qids, TEXT: None}
    if text_key:
        xq[TEXT] = _load_text_queries(store, text_key, inv.d)
    t0 = time.perf_counter()
    gt_k = min(GT_K, inv.n - 1)
    # One streaming pass over every vector for all kinds at once.
    xq_all = np.concatenate(list(xq.values()))
    _, gt_all = knn_ground_truth(xq_all, iter_vectors(store, inv), gt_k + 1, metric)
    gt, i0 = {}, 0
    for kind, x in xq.items():
        gt[kind] = _without_self(gt_all[i0 : i0 + len(x)], own[kind], gt_k)
        i0 += len(x)
    return HeldOutQueries(xq, own, gt, gt_k, time.perf_counter() - t0)


def search_shards(
    indexes: list[Any], xq: np.ndarray, k: int, nprobe: int | None, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Fan out to every non-empty shard at ``nprobe`` and merge: what the service does."""
    results = [
        index.search(xq, k, params=search_params(index, nprobe))
        for index in indexes
        if index.ntotal
    ]
    if not results:
        return np.full((len(xq), k), np.nan, "float32"), np.full((len(xq), k), -1, "int64")
    return merge_results(results, k, metric)


class ShardSearch:
    """``(D, I)`` of one kind's queries over every shard, an image query's own id dropped."""

    def __init__(self, indexes: list[Any], queries: HeldOutQueries, metric: str) -> None:
        self.indexes, self.queries, self.metric = indexes, queries, metric

    def __call__(self, kind: str, k: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        q = self.queries
        D, I = search_shards(self.indexes, q.xq[kind], k + 1, nprobe, self.metric)
        return D, _without_self(I, q.own[kind], k)


def sweep_nprobe(
    search: ShardSearch, queries: HeldOutQueries, grid: list[int | None], target_recall: float
) -> tuple[dict[str, list[SweepPoint]], list[CurvePoint]]:
    """Each kind's recall@1/@10 and ms per query at each nprobe, up to one point past the
    target; the curve holds the worst kind's recall@10 and the ms over all queries."""
    sweep: dict[str, list[SweepPoint]] = {kind: [] for kind in queries.xq}
    curve: list[CurvePoint] = []
    reached = 0
    nq_all = sum(len(x) for x in queries.xq.values())
    with faiss_threads(1):  # ms per query per core, comparable across machines' core counts
        for nprobe in grid:
            point_recall, point_ms = [], []
            for kind, xq in queries.xq.items():
                I, ms = timed(len(xq), search, kind, 10, nprobe)
                r = recalls(I, queries.gt[kind], (1, 10))
                point = SweepPoint(nprobe or 0, r["recall@1"], r["recall@10"], round(ms, 4))
                sweep[kind].append(point)
                point_recall.append(r["recall@10"])
                point_ms.append(ms * len(xq))
            if nprobe is not None:
                curve.append(
                    CurvePoint(nprobe, min(point_recall), round(sum(point_ms) / nq_all, 4))
                )
            reached += min(point_recall) >= target_recall
            if reached >= 2:  # one point past the target shows where the curve flattens
                break
    return sweep, curve


def recall_at(
    search: ShardSearch,
    queries: HeldOutQueries,
    sweep: dict[str, list[SweepPoint]],
    row: int,
    nprobe: int | None,
) -> dict[str, KindRecall]:
    """Recall per kind at the sweep's ``row``: @1 and @10 from the timed k=10 search,
    @100 from one more search at k=gt_k (absent when gt_k < 100)."""
    final = {}
    for kind in queries.xq:
        _, I = search(kind, queries.gt_k, nprobe)
        point = sweep[kind][row]
        deep = recalls(I, queries.gt[kind], (GT_K,))
        final[kind] = KindRecall(point.recall_at_1, point.recall_at_10, deep.get(f"recall@{GT_K}"))
    return final


def _without_self(I: np.ndarray, qids: np.ndarray | None, k: int) -> np.ndarray:
    return I[:, :k] if qids is None else drop_self(I, qids, k)
