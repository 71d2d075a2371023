"""Embedding partitions for the index tests, written through vsearch.partitions."""

from __future__ import annotations

import numpy as np

from vsearch.index.synthetic import clustered_vectors, text_queries
from vsearch.manifest import EncoderInfo, Lineage
from vsearch.partitions import write_partition
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
