"""Recall validation and the gate: ``indexes/{snapshot}/report.json``.

Held-out queries of two kinds are searched through every shard and compared
with exact search over *all* vectors:

- image->image: embedded items chosen by id hash (never in the training sample),
  each compared without itself: an indexed item finds itself at any nprobe, so
  the results and the exact neighbours are the *other* items ("more like this");
- text->image: caption vectors at ``indexes/{snapshot}/queries-text.npy`` (or
  another key), written by whoever owns the text tower; CLIP puts text and
  images in different cones, so these queries fall outside the distribution
  the IVF was trained on and often need a larger nprobe.

nprobe is swept over powers of two, single-threaded (ms per query per core);
the default nprobe is the smallest whose recall@10 reaches the target for
every kind measured. If none does, the report is written with the gate failed
and ``RecallGateFailed`` is raised: nothing may be published.

A report whose inputs (shards, queries, target) are unchanged is reused, so
a retried task neither re-measures nor changes the manifest built from it.
"""

# ruff: noqa: E741  -- D, I are the field's names for distances and ids (faiss)
from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from typing import Any

import numpy as np

from vsearch.index.evaluate import (
    default_nprobe,
    drop_self,
    knn_ground_truth,
    merge_results,
    nprobe_grid,
    recalls,
    timed,
)
from vsearch.index.layout import (
    get_json,
    put_json,
    report_key,
    text_queries_key,
    trained_key,
)
from vsearch.index.shards import read_shard_records
from vsearch.index.structure import faiss_threads, get_index, search_params
from vsearch.index.train import read_trained_record
from vsearch.index.vectors import held_out_queries, inventory, iter_vectors
from vsearch.storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

IMAGE, TEXT = "image_to_image", "text_to_image"
GT_K = 100


class RecallGateFailed(ValueError):
    """recall@10 at the default nprobe misses the target for a query kind: do not publish."""

    def __init__(self, message: str, report_key: str) -> None:
        super().__init__(message)
        self.report_key = report_key


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


def validate_snapshot(
    store: ObjectStore,
    snapshot_id: str,
    *,
    target_recall: float = 0.95,
    nq: int | None = None,
    text_queries: str | None = None,
    require_text: bool = False,
    nshards: int | None = None,
    max_nprobe: int = 1024,
    max_query_ms: float | None = None,
    revalidate: bool = False,
) -> str:
    """Measure recall of the built shards, write ``report.json``, apply the gate.

    Returns the report's key; raises ``RecallGateFailed`` (after writing the
    report) when the target is missed for either query kind.
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    started = time.perf_counter()
    trained = read_trained_record(store, snapshot_id)
    spec = trained["spec"]
    records = read_shard_records(store, snapshot_id, nshards)
    inv = inventory(store, snapshot_id)
    nq = trained["nq"] if nq is None else nq
    if not 0 < nq <= trained["nq"]:
        raise ValueError(f"nq must be in [1, {trained['nq']}] (the queries held out at training)")
    tkey = text_queries
    if tkey is None and store.exists(text_queries_key(snapshot_id)):
        tkey = text_queries_key(snapshot_id)
    if tkey is None and require_text:
        raise ObjectNotFound(
            f"{snapshot_id}: the encoder has a text tower but there are no text queries "
            f"at {text_queries_key(snapshot_id)}"
        )
    inputs = {
        "shards": [r["sha256"] for r in records],
        "target": target_recall,
        "nq": nq,
        "text": store.sha256(tkey)[0] if tkey else None,
        "max_nprobe": max_nprobe,
        "max_query_ms": max_query_ms,
    }
    fingerprint = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    key = report_key(snapshot_id)
    old = get_json(store, key)
    if old and old.get("input_fingerprint") == fingerprint and not revalidate:
        log.info("%s: reusing the report of the same shards and queries", key)
        _gate(old, key)
        return key

    xq_image, qids = held_out_queries(store, inv, nq, trained["seed"])
    queries = {IMAGE: xq_image}
    own: dict[str, np.ndarray | None] = {IMAGE: qids, TEXT: None}
    if tkey:
        queries[TEXT] = _load_text_queries(store, tkey, inv.d)
    t0 = time.perf_counter()
    xq_all = np.concatenate(list(queries.values()))
    gt_k = min(GT_K, inv.n - 1)
    _, gt_all = knn_ground_truth(xq_all, iter_vectors(store, inv), gt_k + 1, spec["metric"])
    gt, i0 = {}, 0
    for kind, xq in queries.items():
        gt[kind] = _without_self(gt_all[i0 : i0 + len(xq)], own[kind], gt_k)
        i0 += len(xq)
    gt_seconds = time.perf_counter() - t0

    def search(kind: str, k: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        D, I = search_shards(indexes, queries[kind], k + 1, nprobe, spec["metric"])
        return D, _without_self(I, own[kind], k)

    indexes = [get_index(store, r["uri"], mmap=True) for r in records]
    grid: list[int | None] = (
        list(nprobe_grid(spec["nlist"], max_nprobe)) if spec["nlist"] else [None]
    )
    sweep: dict[str, list[list[float]]] = {kind: [] for kind in queries}
    curve: list[list[float]] = []
    reached = 0
    with faiss_threads(1):  # ms per query per core, comparable across machines' core counts
        for nprobe in grid:
            point_recall, point_ms = [], []
            for kind, xq in queries.items():
                I, ms = timed(len(xq), search, kind, 10, nprobe)
                r = recalls(I, gt[kind], (1, 10))
                sweep[kind].append([nprobe or 0, r["recall@1"], r["recall@10"], round(ms, 4)])
                point_recall.append(r["recall@10"])
                point_ms.append(ms * len(xq))
            ms_all = sum(point_ms) / sum(len(x) for x in queries.values())
            if nprobe is not None:
                curve.append([nprobe, min(point_recall), round(ms_all, 4)])
            reached += min(point_recall) >= target_recall
            if reached >= 2:  # one point past the target shows where the curve flattens
                break
    default = default_nprobe([(int(p), r) for p, r, _ in curve], target_recall) if curve else None
    # Recall at the default (or, failing one, the last nprobe tried): @1 and @10 from
    # the timed k=10 search, @100 from one more search at k=100.
    row = grid.index(default) if default is not None else len(sweep[IMAGE]) - 1
    final = {}
    for kind in queries:
        _, I = search(kind, gt_k, grid[row])
        _, r1, r10, _ = sweep[kind][row]
        final[kind] = {"recall@1": r1, "recall@10": r10} | recalls(I, gt[kind], (GT_K,))
    ntotal = sum(r["ntotal"] for r in records)
    total = sum(r["bytes"] for r in records)
    refine = sum(r.get("refine_bytes", 0) for r in records)
    missed = [k for k, r in final.items() if r["recall@10"] < target_recall]
    if spec["nlist"] and default is None:
        reason = (
            f"no nprobe up to {grid[row]} reaches recall@10 {target_recall} for {', '.join(missed)}"
        )
    elif missed:
        reason = f"recall@10 below {target_recall} for {', '.join(missed)}"
    else:
        reason = f"recall@10 >= {target_recall} for {', '.join(final)} at nprobe={default}"
    default_ms = next((ms for p, _, ms in curve if p == default), None)
    report = {
        "snapshot_id": snapshot_id,
        "input_fingerprint": fingerprint,
        "spec": spec,
        "metric": spec["metric"],
        "trained": {
            k: trained[k] for k in ("sha256", "bytes", "n_train", "seed", "train_seconds", "device")
        }
        | {"uri": trained_key(snapshot_id)},
        "shards": records,
        "ntotal": ntotal,
        "sizes": {
            "total_bytes": total,
            "resident_bytes_per_vector": round((total - refine) / max(ntotal, 1), 2),
            "disk_bytes_per_vector": round(total / max(ntotal, 1), 2),
            "refine_bytes_per_vector": round(refine / max(ntotal, 1), 2),
        },
        "queries": {kind: len(xq) for kind, xq in queries.items()} | {"text_key": tkey},
        "threads": 1,
        "target_recall": target_recall,
        "default_nprobe": default,
        "sweep": sweep,
        "curve": curve,
        "recall": {IMAGE: final[IMAGE], TEXT: final.get(TEXT)},
        "latency": {
            "ms_per_query_at_default": default_ms,
            "max_query_ms": max_query_ms,
            "ok": None
            if max_query_ms is None or default_ms is None
            else default_ms <= max_query_ms,
        },
        "gate": {
            "passed": not missed and (default is not None or not spec["nlist"]),
            "reason": reason,
        },
        "seconds": {
            "ground_truth": round(gt_seconds, 3),
            "validate": round(time.perf_counter() - started, 3),
        },
    }
    put_json(store, key, report)
    log.info("%s: %s", key, reason)
    _gate(report, key)
    return key


def _without_self(I: np.ndarray, qids: np.ndarray | None, k: int) -> np.ndarray:
    return I[:, :k] if qids is None else drop_self(I, qids, k)


def _gate(report: dict[str, Any], key: str) -> None:
    if not report["gate"]["passed"]:
        raise RecallGateFailed(
            f"{report['snapshot_id']}: recall gate failed: {report['gate']['reason']} (see {key})",
            key,
        )
