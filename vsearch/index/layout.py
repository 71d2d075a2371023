"""Where the index stage keeps its objects, and which ids go where.

Every key is a function of the snapshot id (and the shard), so a retry or a
backfill rewrites the same keys. Besides the objects of the contract
(``trained.index``, ``shard-XXXX.index``, ``report.json``) the stage keeps a
small commit record beside each built object (``trained.json``,
``shard-XXXX.json``): what it was built from, so a rerun with the same inputs
does nothing and the manifest of a retried publish is byte-identical.

Id-to-shard assignment and the held-out/training samples are decided by a
hash of the id, never by row order: the same id lands in the same shard in
every snapshot, whatever partition it comes from, and no global pass over
the ids is needed.
"""

from __future__ import annotations

import numpy as np

from vsearch.manifest import check_snapshot_id

INDEXES = "indexes/"
# Fixed salt: the shard of an id must not depend on the snapshot or the seed.
_SHARD_SALT = 0x5EED_0F_5AD
_U64 = np.uint64


def prefix(snapshot_id: str) -> str:
    return f"{INDEXES}{check_snapshot_id(snapshot_id)}/"


def trained_key(snapshot_id: str) -> str:
    return f"{prefix(snapshot_id)}trained.index"


def trained_record_key(snapshot_id: str) -> str:
    return f"{prefix(snapshot_id)}trained.json"


def shard_key(snapshot_id: str, shard: int) -> str:
    return f"{prefix(snapshot_id)}shard-{shard:04d}.index"


def shard_record_key(snapshot_id: str, shard: int) -> str:
    return f"{prefix(snapshot_id)}shard-{shard:04d}.json"


def report_key(snapshot_id: str) -> str:
    return f"{prefix(snapshot_id)}report.json"


def text_queries_key(snapshot_id: str) -> str:
    """Caption vectors for text->image validation: float32 (nq, d) .npy, written by the
    stage that owns the text tower (see docs/index.md)."""
    return f"{prefix(snapshot_id)}queries-text.npy"


def mix64(ids: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 finaliser of ``ids ^ salt``: well-spread uint64 even for sequential ids."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.int64).view(_U64) ^ _U64(salt & 0xFFFF_FFFF_FFFF_FFFF)
        z = z + _U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        return np.asarray(z ^ (z >> _U64(31)))


def shard_of(ids: np.ndarray, nshards: int) -> np.ndarray:
    """The shard (0..nshards-1) of each id: consistent across snapshots and partitions."""
    if nshards < 1:
        raise ValueError(f"nshards must be >= 1, got {nshards}")
    return np.asarray(mix64(ids, _SHARD_SALT) % _U64(nshards), dtype=np.int64)


def unit_hash(ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per id, fixed by ``seed``: the sampling key."""
    return np.asarray((mix64(ids, seed) >> _U64(11)).astype(np.float64) * 2.0**-53)


def run_record_key(snapshot_id: str) -> str:
    """The run record (``build.json``): what the run decided when it was planned."""
    return f"{prefix(snapshot_id)}build.json"
