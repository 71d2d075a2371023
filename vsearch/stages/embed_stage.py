"""The ``embed`` stage: one planned partition in, one committed embedding partition out.

A thin wrapper over the embedding wing (``vsearch/embedding/``): images go through
the run's encoder (``worker.embed_partition``: decode pool, batches, failures recorded
with a reason); precomputed vectors are checked and written as they are
(``vector_import.import_vectors``). Either way the partition is committed with a
fingerprint of its input, so a retry or a rerun of a finished partition does
nothing, and ``embeddings/{snapshot}/encoder.json`` names the encoder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

from vsearch.config import Settings
from vsearch.embedding.partitions import partition_keys
from vsearch.stages.contracts import EmbedResult, Task
from vsearch.stages.run_records import StageError, read_run_record, write_encoder_info
from vsearch.storage import ObjectStore

if TYPE_CHECKING:
    from vsearch.encoders import Encoder

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
        from vsearch.embedding.vector_import import import_vectors

        done, info = import_vectors(store, snapshot_id, index, source, task["spec"])
        write_encoder_info(store, snapshot_id, info)
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
