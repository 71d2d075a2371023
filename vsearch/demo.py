"""The main job on embedded defaults, as far as the project has grown.

Today (the spine): builds two small snapshots of synthetic vectors with an
exact faiss index, publishes them through the real publish path, shows what
CURRENT names, rolls back and forward again. The embedding, index, Airflow and
service stages replace the synthetic parts as they land.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

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
from vsearch.snapshots import PublishResult, publish_snapshot, read_current, rollback
from vsearch.storage import ObjectStore

log = logging.getLogger(__name__)

DIM = 64


def build_synthetic_snapshot(
    store: ObjectStore,
    logical_date: datetime,
    *,
    n: int = 2000,
    nshards: int = 2,
    previous: str | None = None,
    seed: int = 0,
) -> Manifest:
    """Write shards and metadata for ``n`` random unit vectors; return their manifest."""
    import faiss  # heavy: only when building

    sid = snapshot_id_for(logical_date)
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((n, DIM)).astype("float32")
    faiss.normalize_L2(xb)
    ids = np.arange(n, dtype="int64")
    shards = []
    for j, part in enumerate(np.array_split(ids, nshards)):
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
        index.add_with_ids(xb[part], part)
        data = faiss.serialize_index(index).tobytes()
        info = store.put(f"indexes/{sid}/shard-{j:04d}.index", data)
        assert info.sha256 is not None
        shards.append(
            ShardInfo(info.key, info.sha256, info.size, len(part), (int(part[0]), int(part[-1])))
        )
    meta = "".join(json.dumps({"id": int(i), "key": f"synthetic-{i:06d}"}) + "\n" for i in ids)
    minfo = store.put(f"embeddings/{sid}/part-00000.meta.jsonl", io.BytesIO(meta.encode()))
    assert minfo.sha256 is not None
    return Manifest(
        schema_version=SCHEMA_VERSION,
        snapshot_id=sid,
        created_at=logical_date.astimezone(UTC).isoformat(),
        previous_snapshot_id=previous,
        encoder=EncoderInfo("synthetic", "none", "0", DIM, True),
        metric="ip",
        index=IndexInfo("IDMap2,Flat", None, None, None, False, None, None, None),
        shards=tuple(shards),
        metadata=MetadataInfo((ObjectRef(minfo.key, minfo.sha256, minfo.size),), n),
        # An exact index: recall against exact search is 1 by construction, not measured.
        recall=RecallInfo(1.0, None, ()),
        delta_watermark="0-0",
        lineage=Lineage(None, None, ("synthetic",), n, 0),
    )


def run_demo(store: ObjectStore, say: Callable[[str], None] = print) -> list[PublishResult]:
    """Publish two snapshots, roll back, roll forward; narrate each step with ``say``."""
    start = time.perf_counter()
    day1 = datetime(2026, 1, 1, tzinfo=UTC)
    day2 = day1 + timedelta(days=1)
    results = []
    say(f"store: {store.url}")
    m1 = build_synthetic_snapshot(store, day1)
    results.append(publish_snapshot(store, m1))
    say(
        f"1. built {m1.snapshot_id}: {m1.ntotal} vectors in {len(m1.shards)} shards; "
        f"publish: {results[-1].message}"
    )
    m2 = build_synthetic_snapshot(store, day2, previous=m1.snapshot_id, seed=1)
    results.append(publish_snapshot(store, m2))
    say(f"2. built {m2.snapshot_id}; publish: {results[-1].message}")
    results.append(publish_snapshot(store, m1))
    say(f"3. re-published the older {m1.snapshot_id}: {results[-1].message}")
    results.append(rollback(store))
    say(f"4. rollback: {results[-1].message}")
    results.append(publish_snapshot(store, m2))
    say(f"5. publish {m2.snapshot_id} again: {results[-1].message}")
    live = read_current(store)
    assert live is not None
    say(f"CURRENT names {live.snapshot_id} ({live.ntotal} vectors, every object sha256-verified)")
    say(f"done in {time.perf_counter() - start:.1f}s")
    return results
