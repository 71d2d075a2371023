"""Everything one app instance owns, built from settings and injected parts.

Lives in ``app.extensions["vsearch"]``; nothing here is module-global, so two
apps in one process (tests, a second replica) are independent.

``DependencyCheck`` says whether a store the requests need answers (the metadata
store for searches, the delta log for writes) from a cached ping, for ``/readyz``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from flask import Flask, current_app

from service.errors import ApiError
from service.metrics import ServiceMetrics
from service.queries.query_batcher import EncodeBatcher
from service.queries.query_embedder import QueryEmbedder, open_query_cache
from service.queries.query_encoder import ConfiguredEncoder, SnapshotEncoder
from service.queries.work_slots import image_decode_slots, image_fetch_slots
from service.snapshots.registry import LoadedSnapshot, SnapshotRegistry, default_memory_budget
from service.snapshots.replica import Replica, default_replica_id
from service.snapshots.thumbnail_store import ThumbnailCache
from vsearch.config import ConfigError, Settings
from vsearch.delta import open_delta_log
from vsearch.encoders.encoder_base import EncoderUnavailable
from vsearch.serving.metadata_store import MetadataStore, open_metadata_store
from vsearch.serving.safe_fetch import (
    AddressPolicy,
    FetchBusy,
    FetchError,
    FetchRefused,
    TrustedHosts,
    default_policy,
    fetch_url,
)
from vsearch.storage import ObjectStore, open_store

log = logging.getLogger(__name__)

QueryEncoder = ConfiguredEncoder | SnapshotEncoder

# How long a dependency's last ping stands: /readyz costs at most one round trip per
# dependency per second, however often the load balancer probes.
DEPENDENCY_CHECK_TTL_S = 1.0


class DependencyCheck:
    """Whether one dependency answers, from a ping cached for ``ttl_s`` seconds.

    While one thread pings, the others read the last answer rather than queue behind
    a store that may hang. A request that finds the dependency down says so
    (``failed``): readiness drops at once, and comes back with the first ping that
    succeeds after the TTL.
    """

    def __init__(
        self, name: str, ping: Callable[[], None], ttl_s: float = DEPENDENCY_CHECK_TTL_S
    ) -> None:
        self.name, self._ping, self.ttl_s = name, ping, ttl_s
        self._lock = threading.Lock()
        self._error: str | None = None
        self._checked_at = -math.inf

    def status(self) -> str | None:
        """None while the dependency answers, else why not (no addresses: /readyz is public)."""
        stale = time.monotonic() - self._checked_at >= self.ttl_s
        if stale and self._lock.acquire(blocking=False):
            try:
                self._ping()
            except Exception as e:
                self._record(e)
            else:
                self._record(None)
            finally:
                self._lock.release()
        return self._error

    def failed(self, error: Exception) -> None:
        """A request found the dependency down."""
        self._record(error)

    def _record(self, error: Exception | None) -> None:
        cause = None if error is None else error.__cause__ or error
        reason = None if cause is None else f"{self.name} unreachable ({type(cause).__name__})"
        if reason != self._error:
            if reason is None:
                log.warning("%s answers again", self.name)
            else:
                log.warning("%s: %s", reason, cause)
        self._error, self._checked_at = reason, time.monotonic()


@dataclass
class ServiceState:
    settings: Settings
    store: ObjectStore
    registry: SnapshotRegistry
    replica: Replica
    metadata: MetadataStore
    embedder: QueryEmbedder
    metrics: ServiceMetrics
    encoder: QueryEncoder
    metadata_check: DependencyCheck
    delta_log_check: DependencyCheck
    thumbnail_cache: ThumbnailCache
    encoder_error: str | None = None
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.replica.close()
            self.metadata.close()
            self.embedder.batcher.close()


def get_state() -> ServiceState:
    state: ServiceState = current_app.extensions["vsearch"]
    return state


def build_state(app: Flask, settings: Settings, extra: Mapping[str, Any]) -> ServiceState:
    """Open the store, logs and caches; nothing is downloaded yet."""
    try:
        trusted = TrustedHosts.parse(settings.image_fetch_allow)
    except ValueError as e:
        raise ConfigError(f"image_fetch_allow: {e}") from None
    metrics = ServiceMetrics()
    store = extra.get("STORE_OBJECT") or open_store(settings=settings)
    metadata = open_metadata_store(settings.metadata_db)
    configured: ConfiguredEncoder | None = None
    encoder_info, encoder_error = None, None
    if extra.get("ENCODER") is not None or settings.query_encoder:
        configured = ConfiguredEncoder(extra.get("ENCODER"), settings.query_encoder)
        try:
            enc = configured()
            encoder_info = enc.info if enc is not None else None
        except EncoderUnavailable as e:
            encoder_error = f"query encoder unavailable: {e}"
            log.error("%s", encoder_error)
    budget = extra.get("MEMORY_BUDGET_BYTES")
    if budget is None:
        budget = (
            settings.memory_budget_mb << 20
            if settings.memory_budget_mb
            else default_memory_budget()
        )
    registry = SnapshotRegistry(
        store,
        settings.cache_dir,
        metadata,
        encoder_info=encoder_info,
        memory_budget_bytes=int(budget),
        shard_threads=settings.shard_threads,
        max_batch=settings.max_batch,
        on_refusal=lambda sid, reason: metrics.refusals.labels(sid).inc(),
    )
    replica = Replica(
        registry,
        open_delta_log(settings.delta_log),
        replica_id=settings.replica_id or default_replica_id(),
        watch_interval_s=settings.watch_interval_s,
        on_applied=metrics.observe_applied,
    )
    # Swap listeners run in this order before a snapshot is served: the delta index must be
    # ready for its watermark (created, or rolled back and replayed) before any request can
    # reach it; the metrics then record the snapshot about to serve.
    registry.add_swap_listener(replica.prepare_delta)
    registry.add_swap_listener(partial(_record_swap, metrics))
    registry.add_release_listener(replica.compact_delta)
    metrics.track_delta(
        lambda: len(replica.delta) if replica.delta is not None else 0,
        lambda: replica.delta.upserts if replica.delta is not None else 0,
    )
    # Nothing configured: queries are embedded by the encoder the snapshots were built with.
    encoder: QueryEncoder = (
        configured if configured is not None else SnapshotEncoder(lambda: registry.expected_encoder)
    )
    policy: AddressPolicy = extra.get("FETCH_POLICY") or default_policy
    max_bytes = int(settings.image_fetch_max_mb * 2**20)

    def fetch(url: str) -> bytes:
        try:
            return fetch_url(
                url,
                max_bytes=max_bytes,
                timeout_s=settings.image_fetch_timeout_s,
                policy=policy,
                trusted=trusted,
            ).data
        except FetchBusy as e:
            raise ApiError(503, "image_fetch_busy", str(e), retry_after=1) from None
        except FetchRefused as e:
            raise ApiError(400, "image_url_refused", str(e)) from None
        except FetchError as e:
            raise ApiError(400, "image_url_unreachable", str(e)) from None

    embedder = QueryEmbedder(
        encoder,
        open_query_cache(settings.query_cache, settings.metadata_db, settings.query_cache_ttl_s),
        fetch=fetch,
        max_pixels=int(extra.get("MAX_IMAGE_PIXELS", 40_000_000)),
        batcher=EncodeBatcher(
            settings.query_batch_max,
            settings.query_batch_wait_ms,
            on_batch=metrics.encode_batch_size.observe,
        ),
        on_cache=lambda result: metrics.query_cache.labels(result).inc(),
        fetch_slots=image_fetch_slots(settings.image_fetch_concurrency, settings.service_threads),
        decode_slots=image_decode_slots(settings.image_decode_concurrency),
    )
    return ServiceState(
        settings,
        store,
        registry,
        replica,
        metadata,
        embedder,
        metrics,
        encoder,
        metadata_check=DependencyCheck("metadata store", metadata.ping),
        delta_log_check=DependencyCheck("delta log", replica.log.ping),
        thumbnail_cache=ThumbnailCache(settings.thumbnail_cache_mb << 20),
        encoder_error=encoder_error,
    )


def _record_swap(metrics: ServiceMetrics, old: LoadedSnapshot | None, new: LoadedSnapshot) -> None:
    """Swap listener: count the swap and show the snapshot about to serve."""
    metrics.swaps.inc()
    metrics.set_snapshot(new.snapshot_id, new.manifest.ntotal, new.memory)
    metrics.load_seconds.observe(new.load_seconds)
