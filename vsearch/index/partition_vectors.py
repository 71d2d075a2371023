"""Reading embedding partitions for the index stage, one partition at a time.

Nothing here holds more than one partition plus the sample being collected,
so a shard build or the ground truth streams over any number of vectors.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vsearch.canonical_json import fingerprint
from vsearch.embedding.partitions import (
    PartitionRecord,
    list_partitions,
    partition_keys,
    read_record,
)
from vsearch.index.layout import unit_hash
from vsearch.storage import ObjectNotFound, ObjectStore


class NoEmbeddings(ObjectNotFound):
    """The snapshot has no committed embedding partition."""


@dataclass(frozen=True)
class Inventory:
    """The committed partitions of a snapshot: what the index is built from."""

    snapshot_id: str
    records: tuple[PartitionRecord, ...]

    @property
    def n(self) -> int:
        return sum(r.count for r in self.records)

    @property
    def d(self) -> int:
        return self.records[0].dim

    @property
    def failures(self) -> int:
        return sum(r.failures for r in self.records)

    def fingerprint(self) -> str:
        """Changes whenever any committed partition's content does."""
        return fingerprint([[r.index, r.count, r.sha256] for r in self.records])


def inventory(store: ObjectStore, snapshot_id: str) -> Inventory:
    records = []
    for i in list_partitions(store, snapshot_id):
        record = read_record(store, snapshot_id, i)
        if record is not None:
            records.append(record)
    if not records:
        raise NoEmbeddings(f"no committed embedding partitions under embeddings/{snapshot_id}/")
    dims = {r.dim for r in records}
    if len(dims) != 1:
        raise ValueError(f"partitions of {snapshot_id} disagree on the dimension: {sorted(dims)}")
    return Inventory(snapshot_id, tuple(records))


def load_partition(store: ObjectStore, record: PartitionRecord) -> tuple[np.ndarray, np.ndarray]:
    """(xb float32, ids int64) of one committed partition, checked against its record."""
    keys = partition_keys(record.snapshot_id, record.index)
    xb = np.load(io.BytesIO(store.get(keys.vectors)), allow_pickle=False)
    ids = np.load(io.BytesIO(store.get(keys.ids)), allow_pickle=False)
    where = f"partition {record.index} of {record.snapshot_id}"
    if xb.shape != (record.count, record.dim) or ids.shape != (record.count,):
        raise ValueError(
            f"{where}: vectors {xb.shape} / ids {ids.shape} do not match its record "
            f"({record.count} x {record.dim})"
        )
    if ids.dtype != np.int64:
        raise ValueError(f"{where}: ids must be int64, got {ids.dtype}")
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    if not np.isfinite(xb).all():
        bad = ids[~np.isfinite(xb).all(axis=1)][:5].tolist()
        raise ValueError(f"{where}: non-finite vectors, e.g. ids {bad}")
    return xb, ids


def iter_vectors(store: ObjectStore, inv: Inventory) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for record in inv.records:
        yield load_partition(store, record)


def sample(
    store: ObjectStore, inv: Inventory, *, lo: float, hi: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xs, ids, u) of the rows whose ``unit_hash(id, seed)`` falls in [lo, hi), by u."""
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for xb, ids in iter_vectors(store, inv):
        u = unit_hash(ids, seed)
        keep = (u >= lo) & (u < hi)
        parts.append((xb[keep], ids[keep], u[keep]))
    xs = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, inv.d), "float32")
    ids = np.concatenate([p[1] for p in parts])
    u = np.concatenate([p[2] for p in parts])
    order = np.argsort(u, kind="stable")
    return xs[order], ids[order], u[order]


MAX_HELD_OUT = 0.25


def held_out_fraction(n: int, nq: int) -> float:
    """The hash range reserved for held-out queries: a little over nq/n, so that
    taking the nq smallest hashes almost always finds nq rows — but never more than
    MAX_HELD_OUT of the items, so a small snapshot still has vectors to train on
    (it then validates with fewer queries)."""
    return float(min(MAX_HELD_OUT, (nq + 4.0 * nq**0.5 + 8) / max(n, 1)))


def held_out_queries(
    store: ObjectStore, inv: Inventory, nq: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(xq, ids): ``nq`` embedded items chosen by hash; never in the training sample."""
    xq, ids, _ = sample(store, inv, lo=0.0, hi=held_out_fraction(inv.n, nq), seed=seed)
    return xq[:nq], ids[:nq]


def training_sample(
    store: ObjectStore, inv: Inventory, n_train: int, nq: int, seed: int
) -> np.ndarray:
    """About ``n_train`` vectors, disjoint from the held-out queries of the same seed."""
    lo = held_out_fraction(inv.n, nq)
    hi = min(1.0, lo + n_train / max(inv.n, 1))
    xt, _, _ = sample(store, inv, lo=lo, hi=hi, seed=seed)
    return xt
