"""Small synthetic snapshots (random unit vectors, exact faiss index) for tests and examples.

They go through the real store and manifest: real shard files with sha256,
metadata files, a manifest that ``publish_snapshot`` verifies. The main job
(``make demo``, ``scripts/demo.sh``) builds real snapshots through Airflow.
"""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime

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
