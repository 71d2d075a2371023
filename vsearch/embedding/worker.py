"""The embedding stage's partition worker: items in, one committed embedding partition out.

``embed_partition`` is the worker behind the ``embed`` stage
(``vsearch.stages.embed``), which Airflow's mapped task, ``vsearch embed`` and the
tests call. Decoding and resizing run in a thread pool
(Pillow releases the GIL while it decodes and resamples) a few batches ahead of
the model, so the model rarely waits; on a GPU each batch is copied from pinned
memory. Items that cannot be embedded (undecodable, rejected, failed upstream,
duplicate key, id collision) are recorded in the partition's failures file with
a reason and never stop the partition.

Rerunning a partition whose input fingerprint matches its commit record does
nothing and writes nothing; a partition whose exact input (items, encoder, dtype) was
embedded for another snapshot — a backfill of the same images — is copied from there
(``embeddings/by-input/{fingerprint}.json`` points to it), not embedded again (see
``docs/contracts.md``, embedding partitions).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from vsearch.embedding.admission import Admission
from vsearch.embedding.partitions import (
    PartitionRecord,
    copy_embedded,
    read_record,
    remember_input,
    write_partition,
)
from vsearch.embedding.thumbnails import THUMB_SIDE, make_thumbnail
from vsearch.encoders import Encoder, PixelEncoder
from vsearch.ids import ID_SCHEME
from vsearch.imaging import DEFAULT_MAX_PIXELS, ImageRejected, decode_image
from vsearch.sources import FAILED, Item
from vsearch.storage import ObjectStore

log = logging.getLogger(__name__)

FINGERPRINT_VERSION = 2  # 2: partitions carry thumbnails
_RESERVED_META = ("id", "key", "caption")


def default_workers() -> int:
    """Decode threads: one per core, at most 16. Pillow releases the GIL while it decodes
    and resamples, so they overlap with the model even on 2 cores (bench/results)."""
    return max(1, min(16, (os.cpu_count() or 2)))


def fingerprint_items(items: Sequence[Item]) -> str:
    """A digest of the items' keys, bytes, captions and metadata, in order."""
    sha = hashlib.sha256()
    for item in items:
        sha.update(repr((item.key, item.caption, sorted(item.metadata.items()))).encode())
        sha.update(hashlib.sha256(item.data).digest())
    return sha.hexdigest()


def _full_fingerprint(input_digest: str, encoder: Encoder, dtype: str, thumb_side: int) -> str:
    parts = f"v{FINGERPRINT_VERSION}|{ID_SCHEME}|{encoder.encoder_id}|{dtype}|{input_digest}"
    if thumb_side != THUMB_SIDE:
        parts += f"|thumbs:{thumb_side}"
    return hashlib.sha256(parts.encode()).hexdigest()


class _Prepared:
    """One item after decoding: pixels (or a decoded image) and its thumbnail, or the
    reason it failed."""

    __slots__ = ("item", "pixels", "reason", "thumb")

    def __init__(
        self, item: Item, pixels: Any = None, reason: str | None = None, thumb: bytes = b""
    ) -> None:
        self.item, self.pixels, self.reason, self.thumb = item, pixels, reason, thumb


def _prepare(
    item: Item, pixel_encoder: PixelEncoder | None, max_pixels: int, thumb_side: int
) -> _Prepared:
    if item.metadata.get(FAILED):
        return _Prepared(item, reason=str(item.metadata[FAILED]))
    try:
        image = decode_image(
            item.data,
            max_pixels=max_pixels,
            min_side=pixel_encoder.min_side if pixel_encoder else None,
        )
        thumb = make_thumbnail(image, thumb_side) if thumb_side else b""
        pixels = pixel_encoder.preprocess(image) if pixel_encoder else image
        return _Prepared(item, pixels, thumb=thumb)
    except ImageRejected as e:
        return _Prepared(item, reason=e.reason)
    except (ValueError, OSError) as e:  # preprocessing an odd image (e.g. 1-pixel wide)
        return _Prepared(item, reason=f"preprocess:{type(e).__name__}")


def _prepared_stream(
    items: Iterable[Item],
    pixel_encoder: PixelEncoder | None,
    workers: int,
    ahead: int,
    max_pixels: int,
    thumb_side: int,
) -> Iterator[_Prepared]:
    """Items decoded by ``workers`` threads, in input order, at most ``ahead`` in flight.

    ``workers == 0`` decodes on the calling thread, between model batches.
    """
    if workers == 0:
        for item in items:
            yield _prepare(item, pixel_encoder, max_pixels, thumb_side)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        pending: deque[Future[_Prepared]] = deque()
        for item in items:
            pending.append(pool.submit(_prepare, item, pixel_encoder, max_pixels, thumb_side))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _BatchEncoder:
    """Runs the model on a batch; on CUDA it stacks into one reused pinned host buffer.

    Reusing the buffer is safe: ``encode_pixels`` returns host arrays, so the
    previous batch's copy to the device has finished before the next fill.
    """

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.pixel_encoder = encoder if isinstance(encoder, PixelEncoder) else None
        cuda = self.pixel_encoder is not None and self.pixel_encoder.device.startswith("cuda")
        self._pinned: Any = None if cuda else False

    def __call__(self, batch: list[Any]) -> np.ndarray:
        if self.pixel_encoder is None:
            return self.encoder.encode_images(batch)
        if self._pinned is False:
            return self.pixel_encoder.encode_pixels(np.stack(batch))
        import torch

        shape = (len(batch), *batch[0].shape)
        if self._pinned is None or tuple(self._pinned.shape) != shape:
            self._pinned = torch.empty(shape, dtype=torch.uint8).pin_memory()
        np.stack(batch, out=self._pinned.numpy())
        return self.pixel_encoder.encode_pixels(self._pinned)


def embed_partition(
    store: ObjectStore,
    snapshot_id: str,
    index: int,
    items: Iterable[Item],
    encoder: Encoder,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    input_fingerprint: str | None = None,
    dtype: str = "float32",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Callable[[int], object] | None = None,
    thumb_side: int = THUMB_SIDE,
) -> PartitionRecord:
    """Embed ``items`` into partition ``index`` of ``snapshot_id``; see the module docstring.

    ``input_fingerprint`` identifies the items (a source's ``fingerprint(spec)``);
    without it, a list of items is fingerprinted by content up front, and an
    iterator while it is consumed (a rerun then embeds again but writes nothing).
    ``thumb_side``: the thumbnails' longest side in px; 0 makes none.
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype {dtype!r}: use float32 or float16")
    if input_fingerprint is None and isinstance(items, Sequence):
        input_fingerprint = fingerprint_items(items)
    if input_fingerprint is not None:
        done = _committed(store, snapshot_id, index, input_fingerprint, encoder, dtype, thumb_side)
        if done is not None:
            return done
    started = time.monotonic()
    workers = default_workers() if num_workers is None else num_workers
    digest = hashlib.sha256()
    admitted = Admission(index)
    ids, failures = admitted.ids, admitted.failures
    vectors: list[np.ndarray] = []
    meta: list[dict[str, Any]] = []
    thumbs: dict[int, bytes] = {}
    batch: list[Any] = []
    batch_rows: list[dict[str, Any]] = []

    def flush() -> None:
        if batch:
            vectors.append(encode(batch).astype(dtype, copy=False))
            if progress:
                progress(len(batch))
            batch.clear()
            meta.extend(batch_rows)
            batch_rows.clear()

    def consumed(unhashed: Iterable[Item]) -> Iterator[Item]:
        for item in unhashed:
            digest.update(repr((item.key, item.caption, sorted(item.metadata.items()))).encode())
            digest.update(hashlib.sha256(item.data).digest())
            yield item

    encode = _BatchEncoder(encoder)
    ahead = batch_size * 4
    source = consumed(items) if input_fingerprint is None else items
    stream = _prepared_stream(source, encode.pixel_encoder, workers, ahead, max_pixels, thumb_side)
    for prepared in stream:
        item = prepared.item
        id_ = admitted.admit(item.key, prepared.reason)
        if id_ < 0:
            if progress:
                progress(1)
            continue
        extra = {k: v for k, v in item.metadata.items() if not k.startswith("_")}
        row = {k: v for k, v in extra.items() if k not in _RESERVED_META}
        batch_rows.append({**row, "id": id_, "key": item.key, "caption": item.caption})
        if prepared.thumb:
            thumbs[id_] = prepared.thumb
        batch.append(prepared.pixels)
        if len(batch) >= batch_size:
            flush()
    flush()

    if input_fingerprint is None:
        input_fingerprint = digest.hexdigest()
        done = _committed(store, snapshot_id, index, input_fingerprint, encoder, dtype, thumb_side)
        if done is not None:
            return done
    fingerprint = _full_fingerprint(input_fingerprint, encoder, dtype, thumb_side)
    xb = np.concatenate(vectors) if vectors else np.zeros((0, encoder.dim), dtype)
    elapsed = time.monotonic() - started
    reasons = Counter(f["reason"] for f in failures)
    stats = {
        "items": len(ids) + len(failures),
        "embedded": len(ids),
        "failed_by_reason": dict(sorted(reasons.items())),
        "elapsed_s": round(elapsed, 3),
        "items_per_s": round((len(ids) + len(failures)) / elapsed, 1) if elapsed else None,
        "batch_size": batch_size,
        "decode_workers": workers,
        "device": getattr(encoder, "device", "cpu"),
        "id_scheme": ID_SCHEME,
        "thumbnails": len(thumbs),
        "thumbnail_bytes": sum(map(len, thumbs.values())),
    }
    record = write_partition(
        store,
        snapshot_id,
        index,
        xb,
        admitted.id_array(),
        meta,
        failures,
        input_fingerprint=fingerprint,
        encoder_id=encoder.encoder_id,
        stats=stats,
        thumbs=thumbs,
    )
    remember_input(store, record)
    log.info(
        "partition %d of %s: %d embedded, %d failed %s in %.1fs",
        index, snapshot_id, len(ids), len(failures), dict(reasons), elapsed,
    )  # fmt: skip
    return record


def _committed(
    store: ObjectStore,
    snapshot_id: str,
    index: int,
    input_digest: str,
    encoder: Encoder,
    dtype: str,
    thumb_side: int,
) -> PartitionRecord | None:
    fingerprint = _full_fingerprint(input_digest, encoder, dtype, thumb_side)
    record = read_record(store, snapshot_id, index)
    if record is not None and record.input_fingerprint == fingerprint:
        log.info("partition %d of %s is already done; nothing to do", index, snapshot_id)
        return record
    copied = copy_embedded(store, fingerprint, snapshot_id, index)
    if copied is not None:
        log.info("partition %d of %s: the same input was embedded for %s; copied",
                 index, snapshot_id, copied.stats["copied_from"])  # fmt: skip
    return copied
