"""Recall of a built snapshot against brute force: as built, after save/load (in
memory and memory-mapped, as the service loads shards) and through the S3 store."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from tests.index.snapshots import SID, captions, write_snapshot
from vsearch.index import (
    build_shard,
    search_params,
    train_index,
    validate_snapshot,
    write_text_queries,
)
from vsearch.index.evaluate import merge_results, recall_at
from vsearch.index.layout import report_key
from vsearch.index.structure import get_index
from vsearch.storage import ObjectStore

TARGET = 0.95


def search(indexes: list[faiss.Index], xq: np.ndarray, k: int, nprobe: int) -> np.ndarray:
    parts = [ix.search(xq, k, params=search_params(ix, nprobe)) for ix in indexes]
    return merge_results(parts, k, "ip")[1]


def test_recall_against_brute_force_then_after_save_load(
    store: ObjectStore, tmp_path: Path
) -> None:
    xb, ids = write_snapshot(store)
    write_text_queries(store, SID, captions())
    # No memory floor: the 48 B/vector budget compresses these 6,000 vectors (OPQ/IVF/PQ).
    train_index(store, SID, nshards=2, nq=300, memory_floor_mb=0)
    shards = [build_shard(store, SID, j, 2) for j in range(2)]
    validate_snapshot(store, SID, target_recall=TARGET, require_text=True)
    report = json.loads(store.get(report_key(SID)))
    nprobe = report["default_nprobe"]
    assert report["gate"]["passed"] and nprobe is not None

    # Our own brute force over the arrays we wrote, independent of the validator's.
    xq = np.vstack([xb[::40], captions()])
    _, gt = faiss.knn(xq, xb, 10, metric=faiss.METRIC_INNER_PRODUCT)
    gt = ids[gt]
    indexes = [get_index(store, s["uri"]) for s in shards]  # read back through the store
    assert sum(ix.ntotal for ix in indexes) == len(xb)
    found = search(indexes, xq, 10, nprobe)
    built = recall_at(found, gt, 10)
    assert built >= TARGET - 0.02, built  # different queries than the validator's sample
    assert abs(built - min(report["recall"][k]["recall@10"] for k in report["recall"])) < 0.05

    # Save/load: the file the service downloads, read in memory and memory-mapped
    # (the re-ranking codes stay on disk); results must not change at all.
    for j, s in enumerate(shards):
        path = tmp_path / f"shard-{j}.index"
        store.download_file(s["uri"], path)
    for flags in (0, faiss.IO_FLAG_MMAP_IFC):
        loaded = [faiss.read_index(str(tmp_path / f"shard-{j}.index"), flags) for j in range(2)]
        np.testing.assert_array_equal(search(loaded, xq, 10, nprobe), found)

    # More probes never lose recall: the sweep is monotone enough to pick a default.
    assert recall_at(search(indexes, xq, 10, 4 * nprobe), gt, 10) >= built - 0.01


def test_shards_are_identical_across_stores(store: ObjectStore, tmp_path: Path) -> None:
    """Same inputs and seed -> byte-identical trained index and shards, whichever
    store they go through: what makes a retried publish find the identical manifest."""
    from vsearch.storage import LocalStore

    other = LocalStore(tmp_path / "other")
    results = []
    for s in (store, other):
        write_snapshot(s, n=3000)
        train_index(s, SID, factory="IVF32,PQ8x4fs", nq=100, seed=7)
        results.append(build_shard(s, SID, 0, 1))
    assert results[0] == results[1]
