"""Loading one snapshot: fetch, verify, read within the memory budget, prove it answers.

``read_manifest`` reads the manifest CURRENT names and checks it against the sha256
CURRENT records; ``load_snapshot`` then loads what it describes:

1. Shards are downloaded into a content-addressed cache (``{cache}/{sha256}.index``,
   tmp file then rename) and their sha256 and size checked against the manifest; a
   cached copy is reused when it still matches (``service.snapshots.shard_cache``
   says how a store copy that no longer matches is reported).
2. The shards are read first in a child process whose address space is capped at
   the memory budget (``service.snapshots.shard_reader``); only files that read there, within
   the budget, are read here — the same verified bytes, so the same allocations.
   Both read memory-mapped: the codes stay in the cached file (page cache, shared by
   the worker processes); the budget counts what faiss copied out of the files plus
   the mapped bytes every search reads (``SnapshotMemory``).
3. The canary (``service.snapshots.canary``): the opened snapshot must answer searches for a
   few of its own stored vectors through the searcher requests use, at its default
   nprobe.

``SnapshotRefused`` (``service.snapshots.refusal``) says why a snapshot cannot be served; the
registry remembers it until CURRENT moves. Anything else that goes wrong is treated
as transient.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from service.snapshots.canary import default_nprobe, run_canary
from service.snapshots.refusal import SnapshotRefused
from service.snapshots.shard_cache import fetch_shard
from service.snapshots.shard_reader import read_mapped, read_shards_bounded
from service.snapshots.thumbnail_store import SnapshotThumbnails, ThumbnailsRefused, load_thumbnails
from vsearch.catalog import Pointer
from vsearch.delta import parse_entry_id
from vsearch.delta.watermarks import LOG_ORIGIN
from vsearch.index.structure import refine_store_bytes
from vsearch.manifest import EncoderInfo, Manifest
from vsearch.search import ShardSearcher, SnapshotSearcher, Watermark
from vsearch.serving.metadata_store import MetadataError, MetadataStore, load_snapshot_metadata
from vsearch.storage import ObjectStore
from vsearch.storage.object_store import InvalidKey, ObjectNotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotMemory:
    """What a loaded snapshot takes, in bytes, as the memory budget counts it.

    ``private``: measured, what faiss copied out of the files (quantizers, transforms,
    id maps) — every worker process holds its own. ``scanned``: the mapped bytes that
    searches read through (inverted lists, flat codes) and the id lookups: in the page
    cache while the snapshot serves, shared by the workers. ``refine``: the re-ranking
    codes, mapped and read a few rows per query; they stay on disk until touched and
    are the first pages the kernel drops, so the budget leaves them out, as the index
    report's resident figure does.
    """

    private: int
    scanned: int
    refine: int
    vectors: int

    @property
    def resident(self) -> int:
        return self.private + self.scanned

    @classmethod
    def measure(
        cls, heap_bytes: int, shards: list[ShardSearcher], file_bytes: int
    ) -> SnapshotMemory:
        refine = sum(refine_store_bytes(s.index) for s in shards)
        lookups = sum(s.stored.nbytes for s in shards)
        vectors = sum(s.ntotal for s in shards)
        return cls(heap_bytes, file_bytes - refine + lookups, refine, vectors)

    def describe(self) -> str:
        per = max(self.vectors, 1)
        return (
            f"{self.private / 2**20:.1f} MiB private + {self.scanned / 2**20:.1f} MiB mapped "
            f"and scanned ({self.resident / per:.1f} B/vector), "
            f"{self.refine / 2**20:.1f} MiB of re-ranking codes mapped"
        )


@dataclass
class LoadedSnapshot:
    manifest: Manifest
    searcher: SnapshotSearcher
    dim: int
    nbytes: int  # the manifest's shard bytes: mapped, in the page cache as they are used
    leases: int = 0
    retired: bool = False
    closed: bool = False
    load_seconds: float = 0.0
    # The log is kept from here on: min(own watermark, the rollback target's watermark).
    retain_from: str = LOG_ORIGIN
    loaded_at: float = field(default_factory=time.time)
    memory: SnapshotMemory = field(default_factory=lambda: SnapshotMemory(0, 0, 0, 0))
    # Objects whose store copy no longer matches the manifest, served from the verified cache.
    store_warnings: tuple[str, ...] = ()
    thumbnails: SnapshotThumbnails | None = None

    @property
    def snapshot_id(self) -> str:
        return self.manifest.snapshot_id

    @property
    def watermark(self) -> Watermark:
        return parse_entry_id(self.manifest.delta_watermark)

    @property
    def default_nprobe(self) -> int | None:
        return default_nprobe(self.manifest, self.searcher)


def encoder_identity(info: EncoderInfo) -> tuple[str, str, str, int]:
    return (info.name, info.model_id, info.revision, info.dim)


def _describe(info: EncoderInfo) -> str:
    return f"{info.name}/{info.model_id}@{info.revision} dim {info.dim}"


def read_manifest(store: ObjectStore, pointer: Pointer) -> Manifest:
    """The manifest CURRENT names, checked against the sha256 it records for it."""
    try:
        data = store.get(pointer.manifest)
    except (ObjectNotFound, InvalidKey) as e:
        raise SnapshotRefused(f"manifest {pointer.manifest}: not in the store ({e})") from None
    sha = hashlib.sha256(data).hexdigest()
    if sha != pointer.manifest_sha256:
        raise SnapshotRefused(
            f"manifest {pointer.manifest}: sha256 {sha[:12]}…, CURRENT records "
            f"{pointer.manifest_sha256[:12]}…"
        )
    try:
        manifest = Manifest.from_json(data)
    except ValueError as e:  # ManifestError and JSON syntax errors name the problem
        raise SnapshotRefused(f"manifest {pointer.manifest}: {e}") from None
    if manifest.snapshot_id != pointer.snapshot_id:
        raise SnapshotRefused(
            f"manifest {pointer.manifest} is snapshot {manifest.snapshot_id}, "
            f"CURRENT says {pointer.snapshot_id}"
        )
    return manifest


def load_snapshot(
    manifest: Manifest,
    store: ObjectStore,
    metadata: MetadataStore,
    cache: Path,
    *,
    expected_encoder: EncoderInfo | None,
    memory_budget_bytes: int,
    shard_threads: int,
    max_batch: int,
) -> LoadedSnapshot:
    """Download, verify, read (bounded), open and canary every shard; load the metadata."""
    started = time.perf_counter()
    _check_encoder(manifest.encoder, expected_encoder)
    nbytes = sum(s.bytes for s in manifest.shards)
    paths, warnings = [], []
    for j, info in enumerate(manifest.shards):
        path, warning = fetch_shard(store, cache, info.uri, info.sha256, info.bytes, f"shards[{j}]")
        paths.append(path)
        warnings += [warning] if warning else []
    read = read_shards_bounded(paths, memory_budget_bytes or _physical_memory())
    for j, (info, (ntotal, d)) in enumerate(zip(manifest.shards, read.shapes, strict=True)):
        if ntotal != info.ntotal or d != manifest.encoder.dim:
            raise SnapshotRefused(
                f"shards[{j}] {info.uri}: {ntotal} vectors of dim {d}, "
                f"manifest says {info.ntotal} of dim {manifest.encoder.dim}"
            )
    shards: list[ShardSearcher] = []
    try:
        for j, (info, path) in enumerate(zip(manifest.shards, paths, strict=True)):
            try:
                index = read_mapped(path)
            except (RuntimeError, MemoryError) as e:  # read fine in the child: unexpected
                raise SnapshotRefused(f"shards[{j}] {info.uri}: unreadable index: {e}") from None
            name = f"{manifest.snapshot_id}-{j}"
            try:
                shard = ShardSearcher(
                    index,
                    name,
                    threads=shard_threads,
                    max_batch=max_batch,
                    lookup_cache=path.with_suffix(""),
                )
            except (RuntimeError, ValueError, IndexError) as e:  # an inconsistent index
                raise SnapshotRefused(f"shards[{j}] {info.uri}: cannot be served: {e}") from None
            shards.append(shard)
        memory = SnapshotMemory.measure(read.heap_bytes, shards, nbytes)
        if memory_budget_bytes and memory.resident > memory_budget_bytes:
            raise SnapshotRefused(
                f"takes {memory.resident / 2**20:.1f} MiB resident once read (measured: "
                f"{memory.describe()}), over the memory budget of "
                f"{memory_budget_bytes / 2**20:.1f} MiB"
            )
        searcher = SnapshotSearcher(shards, manifest.metric)
        run_canary(searcher, manifest)
        try:
            load_snapshot_metadata(store, manifest, metadata)
        except (MetadataError, ObjectNotFound, InvalidKey) as e:
            raise SnapshotRefused(f"metadata: {e}") from None
        try:
            thumbs = load_thumbnails(store, manifest, cache)
        except (ThumbnailsRefused, ObjectNotFound, InvalidKey) as e:
            raise SnapshotRefused(f"thumbnails: {e}") from None
    except BaseException:
        for s in shards:
            s.close()
        raise
    elapsed = time.perf_counter() - started
    log.info(
        "loaded %s: %d vectors in %d shards, %s, %.2fs",
        manifest.snapshot_id,
        manifest.ntotal,
        len(shards),
        memory.describe(),
        elapsed,
    )
    return LoadedSnapshot(
        manifest,
        searcher,
        manifest.encoder.dim,
        nbytes,
        load_seconds=elapsed,
        memory=memory,
        store_warnings=tuple(warnings),
        thumbnails=thumbs,
    )


def _check_encoder(info: EncoderInfo, expected: EncoderInfo | None) -> None:
    if expected is not None and encoder_identity(info) != encoder_identity(expected):
        raise SnapshotRefused(
            f"built by encoder {_describe(info)}, but this service embeds queries with "
            f"{_describe(expected)}"
        )


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        return 1 << 40


def default_memory_budget() -> int:
    """Half of the machine's physical memory, in bytes."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        return 0
