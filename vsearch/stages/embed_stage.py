"""The ``embed`` stage: one planned partition in, one committed embedding partition out.

Images go through the run's encoder (``vsearch.embedding.worker.embed_partition``: decode
pool, batches, failures recorded with a reason). Precomputed vectors are checked
and written as they are. Either way the partition is committed with a
fingerprint of its input, so a retry or a rerun of a finished partition does
nothing, and ``embeddings/{snapshot}/encoder.json`` names the encoder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from vsearch.config import Settings
from vsearch.embedding.partitions import partition_keys
from vsearch.stages.contracts import EmbedResult, Task
from vsearch.stages.run_records import StageError, read_run_record, write_encoder_info
from vsearch.storage import ObjectStore

if TYPE_CHECKING:
    from vsearch.embedding.partitions import PartitionRecord
    from vsearch.encoders import Encoder
    from vsearch.sources import VectorSource

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0


@lru_cache(maxsize=2)
def _encoder(spec: str, device: str | None) -> Encoder:
    from vsearch.encoders import load_encoder

    return load_encoder(spec, device=device)


def embed(
    store: ObjectStore,
    snapshot_id: str,
    task: Task,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    dtype: str | None = None,
    settings: Settings | None = None,
    progress: Callable[[int], object] | None = None,
) -> EmbedResult:
    """Embed one task of ``plan`` with the run's encoder; returns the commit record's key
    and counts: ``{"partition", "key", "count", "failures"}``.

    Without ``progress`` (a callback taking a number of items), a log line every
    ``PROGRESS_EVERY_S`` seconds reports items/s: what a user sees in Airflow.
    """
    from vsearch.sources import VectorSource, open_source

    settings = settings or Settings.load()
    record = read_run_record(store, snapshot_id)
    index = int(task["partition"])
    source = open_source(task["source"], store=store, settings=settings, **task["options"])
    if isinstance(source, VectorSource):
        done = _import_vectors(store, snapshot_id, index, source, task["spec"])
    else:
        if record.encoder_spec is None:
            raise StageError(f"{snapshot_id}: the run record names no encoder for images")
        from vsearch.embedding.worker import embed_partition

        encoder = _encoder(record.encoder_spec, settings.device or None)
        done = embed_partition(
            store,
            snapshot_id,
            index,
            source.items(task["spec"]),
            encoder,
            batch_size=batch_size or settings.embed_batch_size,
            num_workers=workers or settings.embed_workers or None,
            input_fingerprint=source.fingerprint(task["spec"]),
            dtype=dtype or settings.embed_dtype,
            progress=progress or _log_progress(snapshot_id, index),
        )
        write_encoder_info(store, snapshot_id, encoder.info)
    return {
        "partition": done.index,
        "key": partition_keys(snapshot_id, done.index).record,
        "count": done.count,
        "failures": done.failures,
    }


def _log_progress(snapshot_id: str, index: int) -> Callable[[int], None]:
    started = last = time.monotonic()
    total = 0

    def step(n: int) -> None:
        nonlocal last, total
        total += n
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S:
            last = now
            log.info("%s partition %d: %d items, %.1f items/s", snapshot_id, index, total,
                     total / (now - started))  # fmt: skip

    return step


def _import_vectors(
    store: ObjectStore, snapshot_id: str, index: int, source: VectorSource, spec: dict[str, Any]
) -> PartitionRecord:
    """Check and write precomputed vectors as partition ``index``."""
    import numpy as np

    from vsearch.canonical_json import fingerprint
    from vsearch.embedding.partitions import read_record, write_partition
    from vsearch.ids import ID_SCHEME, IdAllocator, IdCollision

    info = source.encoder_info()
    encoder_id = f"{info.name}@{info.revision}#{info.model_id}"
    input_fingerprint = fingerprint(["vectors", source.fingerprint(spec), encoder_id])
    done = read_record(store, snapshot_id, index)
    if done is not None and done.input_fingerprint == input_fingerprint:
        write_encoder_info(store, snapshot_id, info)
        return done
    rows = source.rows(spec)
    finite = np.isfinite(rows.xb).all(axis=1)
    allocator = IdAllocator()
    keep, ids, failures = [], [], []
    for i, key in enumerate(rows.keys):
        reason = None if finite[i] else "non-finite vector"
        id_ = -1 if rows.ids is None else int(rows.ids[i])
        if reason is None and rows.ids is not None and id_ < 0:
            reason = "negative id"
        if reason is None:
            try:
                id_ = allocator.allocate(key) if rows.ids is None else allocator.claim(id_, key)
            except IdCollision as e:
                reason = e.reason
        if reason is not None:
            failures.append({"key": key, "reason": reason})
            continue
        keep.append(i)
        ids.append(id_)
    meta = [{**rows.meta[i], "id": ids[j], "key": rows.keys[i]} for j, i in enumerate(keep)]
    record = write_partition(
        store, snapshot_id, index, np.ascontiguousarray(rows.xb[keep]),
        np.asarray(ids, dtype=np.int64), meta, failures,
        input_fingerprint=input_fingerprint, encoder_id=encoder_id,
        stats={"items": len(rows.keys), "imported": len(keep), "id_scheme": ID_SCHEME
               if rows.ids is None else "given"},
    )  # fmt: skip
    write_encoder_info(store, snapshot_id, info)
    log.info("%s partition %d: %d vectors imported, %d refused", snapshot_id, index, len(keep),
             len(failures))  # fmt: skip
    return record
