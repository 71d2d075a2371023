"""Embeddings for the index tests: partitions written directly through vsearch.embedding.partitions
(``write_snapshot``, for unit tests of the index modules), or precomputed vectors on disk
that a run plans and imports through the stage API (``write_vectors``, ``planned``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vsearch import stages
from vsearch.embedding.partitions import write_partition
from vsearch.index.synthetic import clustered_vectors, text_queries
from vsearch.index.trained_record import read_trained_record as read_trained
from vsearch.manifest import EncoderInfo, Lineage
from vsearch.storage import ObjectStore

SID = "20260301T000000Z"
D = 32


def write_snapshot(
    store: ObjectStore,
    snapshot_id: str = SID,
    *,
    n: int = 6000,
    d: int = D,
    nparts: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``n`` clustered unit vectors in ``nparts`` partitions; return (xb, ids).

    Ids are sparse and shuffled, so nothing can rely on ids being row numbers.
    """
    xb, _ = clustered_vectors(n, d, nclusters=48, seed=seed)
    rng = np.random.default_rng(seed)
    ids = rng.permutation(n).astype("int64") * 13 + 1_000_003
    for i, rows in enumerate(np.array_split(np.arange(n), nparts)):
        write_partition(
            store,
            snapshot_id,
            i,
            xb[rows],
            ids[rows],
            [{"id": int(j), "key": f"item-{j}"} for j in ids[rows]],
            [{"key": f"broken-{i}", "reason": "truncated JPEG"}],
            input_fingerprint=f"synthetic-{seed}-{i}",
            encoder_id="synthetic@1#test",
        )
    return xb, ids


def captions(nq: int = 200, d: int = D, seed: int = 0) -> np.ndarray:
    return text_queries(nq, d, nclusters=48, seed=seed)


def encoder(d: int = D) -> EncoderInfo:
    return EncoderInfo("synthetic", "synthetic/clustered", "1", d, True)


def lineage(n: int = 6000, failures: int = 3) -> Lineage:
    return Lineage("test_dag", "manual__1", ("synthetic",), n, failures)


def write_vectors(
    folder: Path, *, n: int = 6000, d: int = D, nfiles: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clustered unit vectors as precomputed embeddings (``part-i.npy`` with ids and
    metadata, and an ``encoder.json`` naming the synthetic encoder); return (xb, ids)."""
    xb, _ = clustered_vectors(n, d, nclusters=48, seed=seed)
    rng = np.random.default_rng(seed)
    ids = rng.permutation(n).astype("int64") * 13 + 1_000_003
    folder.mkdir(parents=True, exist_ok=True)
    for i, rows in enumerate(np.array_split(np.arange(n), nfiles)):
        np.save(folder / f"part-{i}.npy", xb[rows])
        np.save(folder / f"part-{i}.ids.npy", ids[rows])
        lines = [json.dumps({"key": f"item-{j}"}) + "\n" for j in ids[rows]]
        (folder / f"part-{i}.meta.jsonl").write_text("".join(lines))
    info = encoder(d)
    (folder / "encoder.json").write_text(
        json.dumps({"name": info.name, "model_id": info.model_id, "revision": info.revision})
    )
    return xb, ids


def planned(
    store: ObjectStore, folder: Path, snapshot_id: str = SID, **kwargs: int
) -> tuple[np.ndarray, np.ndarray]:
    """``write_vectors`` into ``folder``, then the run's first stages: plan and embed."""
    xb, ids = write_vectors(folder, **kwargs)
    for task in stages.plan(store, snapshot_id, [str(folder)], run={"dag_id": "test_dag"}):
        stages.embed(store, snapshot_id, task)
    return xb, ids


def read_trained_record(store: ObjectStore, snapshot_id: str = SID) -> dict[str, Any]:
    """The trained record as stored (its JSON fields), read through the typed record."""
    return read_trained(store, snapshot_id).to_dict()
