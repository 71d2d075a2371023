"""Loading one snapshot: fetch its shards into the cache, verify them, open them in faiss.

Shards are downloaded into a content-addressed cache (``{cache}/{sha256}.index``,
tmp file then rename) and their sha256 and size checked against the manifest;
a cached copy is reused when it still matches. ``SnapshotRefused`` says why a
snapshot cannot be served: a bad checksum, an unreadable index, an encoder other
than the expected one, or shards over the memory budget.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vsearch.delta import parse_entry_id
from vsearch.manifest import EncoderInfo, Manifest
from vsearch.metadata import MetadataError, MetadataStore, load_snapshot_metadata
from vsearch.search import ShardSearcher, SnapshotSearcher, Watermark
from vsearch.storage import ObjectStore
from vsearch.watermarks import LOG_ORIGIN

log = logging.getLogger(__name__)


class SnapshotRefused(Exception):
    """The snapshot cannot be served; the message says why."""


@dataclass
class LoadedSnapshot:
    manifest: Manifest
    searcher: SnapshotSearcher
    dim: int
    nbytes: int
    leases: int = 0
    retired: bool = False
    closed: bool = False
    load_seconds: float = 0.0
    # The log is kept from here on: min(own watermark, the rollback target's watermark).
    retain_from: str = LOG_ORIGIN
    loaded_at: float = field(default_factory=time.time)

    @property
    def snapshot_id(self) -> str:
        return self.manifest.snapshot_id

    @property
    def watermark(self) -> Watermark:
        return parse_entry_id(self.manifest.delta_watermark)


def encoder_identity(info: EncoderInfo) -> tuple[str, str, str, int]:
    return (info.name, info.model_id, info.revision, info.dim)


def _describe(info: EncoderInfo) -> str:
    return f"{info.name}/{info.model_id}@{info.revision} dim {info.dim}"


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
    """Download, verify and open every shard and the metadata of ``manifest``."""
    import faiss

    started = time.perf_counter()
    _check_encoder(manifest.encoder, expected_encoder)
    nbytes = sum(s.bytes for s in manifest.shards)
    if memory_budget_bytes and nbytes > memory_budget_bytes:
        raise SnapshotRefused(
            f"needs {nbytes / 2**20:.1f} MiB of shards, over the memory budget of "
            f"{memory_budget_bytes / 2**20:.1f} MiB"
        )
    shards = []
    try:
        for j, info in enumerate(manifest.shards):
            path = fetch_shard(store, cache, info.uri, info.sha256, info.bytes, f"shards[{j}]")
            try:
                index = faiss.read_index(str(path))
            except RuntimeError as e:
                raise SnapshotRefused(f"shards[{j}] {info.uri}: unreadable index: {e}") from None
            if index.ntotal != info.ntotal or index.d != manifest.encoder.dim:
                raise SnapshotRefused(
                    f"shards[{j}] {info.uri}: {index.ntotal} vectors of dim {index.d}, "
                    f"manifest says {info.ntotal} of dim {manifest.encoder.dim}"
                )
            _enable_id_lookup(index)
            name = f"{manifest.snapshot_id}-{j}"
            shards.append(ShardSearcher(index, name, threads=shard_threads, max_batch=max_batch))
        try:
            load_snapshot_metadata(store, manifest, metadata)
        except MetadataError as e:
            raise SnapshotRefused(f"metadata: {e}") from None
    except BaseException:
        for s in shards:
            s.close()
        raise
    searcher = SnapshotSearcher(shards, manifest.metric)
    log.info(
        "loaded %s: %d vectors in %d shards, %.1f MiB, %.2fs",
        manifest.snapshot_id,
        manifest.ntotal,
        len(shards),
        nbytes / 2**20,
        time.perf_counter() - started,
    )
    elapsed = time.perf_counter() - started
    return LoadedSnapshot(manifest, searcher, manifest.encoder.dim, nbytes, load_seconds=elapsed)


def _check_encoder(info: EncoderInfo, expected: EncoderInfo | None) -> None:
    if expected is not None and encoder_identity(info) != encoder_identity(expected):
        raise SnapshotRefused(
            f"built by encoder {_describe(info)}, but this service embeds queries with "
            f"{_describe(expected)}"
        )


def fetch_shard(
    store: ObjectStore, cache: Path, uri: str, sha256: str, size: int, where: str
) -> Path:
    """The cached, verified local copy of an object; downloaded when missing or bad."""
    path = cache / f"{sha256}.index"
    if path.exists() and _file_sha256(path) == (sha256, size):
        return path
    info = store.download_file(uri, path)
    if (info.sha256, info.size) != (sha256, size):
        path.unlink(missing_ok=True)
        raise SnapshotRefused(
            f"{where} {uri}: sha256 {str(info.sha256)[:12]}… ({info.size} bytes), "
            f"manifest says {sha256[:12]}… ({size} bytes)"
        )
    return path


def prune_shard_cache(cache: Path, keep: set[str]) -> None:
    """Delete cached shards whose sha256 is not in ``keep`` (sparing any just written)."""
    for path in cache.glob("*.index"):
        if path.stem not in keep and path.stat().st_mtime < time.time() - 1:
            path.unlink(missing_ok=True)


def _enable_id_lookup(index: Any) -> None:
    """IVF shards get a hash-table direct map, so that ``id`` queries can reconstruct vectors."""
    import faiss as faiss_module

    faiss: Any = faiss_module
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return  # IndexIDMap2 and flat indexes look ids up already
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)


def _file_sha256(path: Path) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size
