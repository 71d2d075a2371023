"""Loading one snapshot: fetch, verify, read within the memory budget, prove it answers.

``read_manifest`` reads the manifest CURRENT names and checks it against the sha256
CURRENT records; ``load_snapshot`` then loads what it describes:

1. Shards are downloaded into a content-addressed cache (``{cache}/{sha256}.index``,
   tmp file then rename) and their sha256 and size checked against the manifest; a
   cached copy is reused when it still matches (see ``fetch_shard`` for how a store
   copy that no longer matches is reported). The cache lives here.
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
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from service.snapshots.canary import default_nprobe, run_canary
from service.snapshots.refusal import SnapshotRefused
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
from vsearch.storage.object_store import InvalidKey, ObjectNotFound, StoreError

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


# -- the shard cache --------------------------------------------------------------


def fetch_shard(
    store: ObjectStore, cache: Path, uri: str, sha256: str, size: int, where: str
) -> tuple[Path, str | None]:
    """The cached, verified local copy of an object (downloaded when missing or bad), and a
    warning when the cache is reused although the store's copy no longer matches.

    Serving the cached copy then is intended: its bytes are exactly those the manifest
    names (sha256-checked), and a rollback must not depend on the store. But other
    replicas, without this cache, would refuse the snapshot, so it is reported. The
    check is cheap when nothing changed: the store's etag is compared with the one
    recorded when the copy was verified (``{sha256}.etags``); only an object rewritten
    since is hashed again.
    """
    path = cache / f"{sha256}.index"
    if path.exists() and _file_sha256(path) == (sha256, size):
        return path, _check_store_copy(store, path, uri, sha256, size, where)
    try:
        etag = store.head(uri).etag  # before the download: a later rewrite shows as changed
        info = store.download_file(uri, path)
    except (ObjectNotFound, InvalidKey) as e:
        raise SnapshotRefused(f"{where} {uri}: not in the store ({e})") from None
    if (info.sha256, info.size) != (sha256, size):
        path.unlink(missing_ok=True)
        raise SnapshotRefused(
            f"{where} {uri}: sha256 {str(info.sha256)[:12]}… ({info.size} bytes), "
            f"manifest says {sha256[:12]}… ({size} bytes)"
        )
    _record_etag(path, uri, etag)
    return path, None


def _check_store_copy(
    store: ObjectStore, path: Path, uri: str, sha256: str, size: int, where: str
) -> str | None:
    """Why the store's copy of a cached object differs from the manifest; None if it does not."""
    served = "serving the verified cached copy; replicas without it will refuse this snapshot"
    try:
        head = store.head(uri)
        if head.size != size:
            problem = f"the store's copy has {head.size} bytes, manifest says {size}"
        elif _etags(path).get(uri) == head.etag:
            return None
        elif (found := store.sha256(uri)) != (sha256, size):
            problem = f"the store's copy has sha256 {found[0][:12]}…, manifest says {sha256[:12]}…"
        else:
            _record_etag(path, uri, head.etag)
            return None
    except ObjectNotFound:
        problem = "the store has no copy"
    except (StoreError, OSError) as e:  # the store is down: nothing to say about its copy
        log.warning("%s %s: cannot check the store's copy: %s", where, uri, e)
        return None
    warning = f"{where} {uri}: {problem}; {served}"
    log.warning("%s", warning)
    return warning


def _etags(path: Path) -> dict[str, str]:
    try:
        found = json.loads(path.with_suffix(".etags").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _record_etag(path: Path, uri: str, etag: str) -> None:
    if not etag:
        return
    etags = {**_etags(path), uri: etag}
    tmp = path.with_suffix(".etags.tmp")
    tmp.write_text(json.dumps(etags))
    tmp.replace(path.with_suffix(".etags"))


def prune_shard_cache(cache: Path, keep: set[str]) -> None:
    """Delete cached shards (and their id lookups) whose sha256 is not in ``keep``,
    sparing any just written. A worker still mapping a deleted file keeps its pages."""
    for path in cache.iterdir():
        if path.name.split(".", 1)[0] in keep:
            continue
        try:  # another worker of this replica may be pruning the same cache
            if path.stat().st_mtime < time.time() - 1:
                path.unlink(missing_ok=True)
        except FileNotFoundError:
            continue


def _file_sha256(path: Path) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size
