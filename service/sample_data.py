"""Small published snapshots (flat or OPQ+IVF+PQ shards) for the demo, benchmarks and tests.

The vectors are random unit vectors; the shards, metadata files and manifest
follow docs/contracts.md exactly, and ``publish`` goes through the real
publish path (verify, immutable manifest, compare-and-swap of CURRENT).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from vsearch.manifest import (
    SCHEMA_VERSION,
    EncoderInfo,
    IndexInfo,
    Lineage,
    Manifest,
    MetadataInfo,
    ObjectRef,
    RecallInfo,
    ShardInfo,
    snapshot_id_for,
)
from vsearch.snapshots import PublishResult, publish_snapshot
from vsearch.storage import ObjectStore

# The encoder identity of vsearch.demo's synthetic snapshots.
SYNTHETIC_ENCODER = EncoderInfo("synthetic", "none", "0", 64, True)
FLAT = "IDMap2,Flat"


def snapshot_id(day: int, tag: str | None = None) -> str:
    """A valid snapshot id ``day`` days after 2026-01-01 (ids sort like ``day``)."""
    return snapshot_id_for(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=day), tag)


def unit_vectors(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def build_snapshot(
    store: ObjectStore,
    sid: str,
    xb: np.ndarray,
    ids: np.ndarray,
    *,
    factory: str = FLAT,
    nshards: int = 2,
    watermark: str = "0-0",
    encoder: EncoderInfo = SYNTHETIC_ENCODER,
    previous: str | None = None,
    default_nprobe: int | None = 8,
) -> Manifest:
    """Write shards and metadata of ``xb`` (ids ``ids``) under ``sid``; return the manifest."""
    import faiss as faiss_module

    faiss: Any = faiss_module  # its stubs miss SearchParameters keywords and chain access

    d = xb.shape[1]
    ivf = factory != FLAT
    if ivf:
        trained = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
        sample = xb[: max(20_000, 40 * 256)]  # a sample trains as well, and faster
        with _quick_training(trained, factory, len(sample)):
            trained.train(sample)
    shards, parts = [], np.array_split(np.arange(len(ids)), nshards)
    for j, rows in enumerate(parts):
        index = faiss.clone_index(trained) if ivf else faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        index.add_with_ids(xb[rows], ids[rows])
        info = store.put(
            f"indexes/{sid}/shard-{j:04d}.index", faiss.serialize_index(index).tobytes()
        )
        assert info.sha256 is not None
        lo, hi = (int(ids[rows].min()), int(ids[rows].max())) if len(rows) else (0, 0)
        shards.append(ShardInfo(info.key, info.sha256, info.size, len(rows), (lo, hi)))
    meta = "".join(
        json.dumps({"id": int(i), "key": f"{sid}/{int(i)}", "snapshot": sid}) + "\n" for i in ids
    )
    minfo = store.put(f"embeddings/{sid}/part-00000.meta.jsonl", io.BytesIO(meta.encode()))
    assert minfo.sha256 is not None
    nlist = int(faiss.extract_index_ivf(trained).nlist) if ivf else None
    curve = recall_curve(xb, ids, factory, trained) if ivf else ()
    return Manifest(
        schema_version=SCHEMA_VERSION,
        snapshot_id=sid,
        created_at=datetime.strptime(sid[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).isoformat(),
        previous_snapshot_id=previous,
        encoder=encoder,
        metric="ip",
        index=IndexInfo(
            factory,
            nlist,
            None,
            None,
            "OPQ" in factory,
            None,
            default_nprobe if ivf else None,
            None,
        ),
        shards=tuple(shards),
        metadata=MetadataInfo((ObjectRef(minfo.key, minfo.sha256, minfo.size),), len(ids)),
        recall=RecallInfo(None if ivf else 1.0, None, curve),
        delta_watermark=watermark,
        lineage=Lineage(None, None, ("synthetic",), len(ids), 0),
    )


@contextlib.contextmanager
def _quick_training(index: Any, factory: str, n: int) -> Iterator[None]:
    """Train as the index stage does (``configure_training``: seeds, OPQ rounds, OPQ
    rotations for the 4-bit PQ they serve, the refine shortlist), without polysemous
    codes: sample data needs a valid index quickly."""
    import faiss

    from vsearch.index.spec import spec_from_factory
    from vsearch.index.structure import layers
    from vsearch.index.train import configure_training, release_training

    spec = spec_from_factory(factory, n, index.d, metric="ip")
    keep = configure_training(index, spec, seed=0)
    ivf = faiss.downcast_index(layers(index).ivf)
    if hasattr(ivf, "do_polysemous_training"):
        ivf.do_polysemous_training = False
    try:
        yield
    finally:
        release_training(index, keep)


def recall_curve(
    xb: np.ndarray, ids: np.ndarray, factory: str, trained: Any, nq: int = 100
) -> tuple[tuple[int, float, float], ...]:
    """recall@10 of one unsharded index against exact search, per nprobe."""
    import faiss as faiss_module

    from vsearch.index.structure import search_params

    faiss: Any = faiss_module  # its stubs miss SearchParameters keywords and chain access

    index = faiss.clone_index(trained)
    index.add_with_ids(xb, ids)
    xq = xb[:: max(1, len(xb) // nq)][:nq]
    exact = faiss.IndexIDMap2(faiss.IndexFlatIP(xb.shape[1]))
    exact.add_with_ids(xb, ids)
    _, truth = exact.search(xq, 10)
    nlist = faiss.extract_index_ivf(index).nlist
    points = []
    for nprobe in (p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256) if p <= nlist):
        params = search_params(index, nprobe)
        t = time.perf_counter()
        _, found = index.search(xq, 10, params=params)
        ms = (time.perf_counter() - t) * 1000 / len(xq)
        hits = sum(
            len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist(), strict=True)
        )
        points.append((nprobe, hits / truth.size, round(ms, 4)))
    return tuple(points)


def publish(store: ObjectStore, manifest: Manifest) -> PublishResult:
    """Publish and move CURRENT to it, even when it is older (a rollback)."""
    return publish_snapshot(store, manifest, force=True)


def publish_series(
    store: ObjectStore, days: Sequence[int], *, n: int = 1000, d: int = 64, factory: str = FLAT
) -> list[Manifest]:
    """One snapshot per day with disjoint ids (day * 1_000_000 + i), each published in turn."""
    out = []
    for day in days:
        xb = unit_vectors(n, d, seed=day)
        ids = np.arange(n, dtype="int64") + day * 1_000_000
        m = build_snapshot(store, snapshot_id(day), xb, ids, factory=factory)
        publish(store, m)
        out.append(m)
    return out
