"""Everything one app instance owns, built from settings and injected parts.

Lives in ``app.extensions["vsearch"]``; nothing here is module-global, so two
apps in one process (tests, a second replica) are independent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from flask import Flask, current_app

from service.embedding import QueryEmbedder, open_query_cache
from service.errors import ApiError
from service.metrics import ServiceMetrics
from service.registry import LoadedSnapshot, SnapshotRegistry, default_memory_budget
from service.replica import Replica, default_replica_id
from vsearch.config import Settings
from vsearch.delta import open_delta_log
from vsearch.encoders.base import Encoder, EncoderUnavailable
from vsearch.metadata import MetadataStore, open_metadata_store
from vsearch.safe_fetch import AddressPolicy, FetchError, FetchRefused, default_policy, fetch_url
from vsearch.storage import ObjectStore, open_store

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    settings: Settings
    store: ObjectStore
    registry: SnapshotRegistry
    replica: Replica
    metadata: MetadataStore
    embedder: QueryEmbedder
    metrics: ServiceMetrics
    encoder_error: str | None = None
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.replica.close()
            self.metadata.close()


def get_state() -> ServiceState:
    state: ServiceState = current_app.extensions["vsearch"]
    return state


class _LazyEncoder:
    """The injected encoder, or one built on first use from the ``query_encoder`` spec."""

    def __init__(self, injected: Encoder | None, spec: str) -> None:
        self.injected, self.spec = injected, spec
        self._encoder: Encoder | None = injected
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return self.injected is not None or bool(self.spec)

    def __call__(self) -> Encoder | None:
        if self._encoder is not None or not self.spec:
            return self._encoder
        with self._lock:
            if self._encoder is None:
                from vsearch.encoders import load_encoder

                try:
                    self._encoder = load_encoder(self.spec)
                except ValueError as e:  # a malformed spec: as unavailable, with the reason
                    raise EncoderUnavailable(f"query_encoder={self.spec!r}: {e}") from None
            return self._encoder


def build_state(app: Flask, settings: Settings, extra: Mapping[str, Any]) -> ServiceState:
    """Open the store, logs and caches; nothing is downloaded yet."""
    metrics = ServiceMetrics()
    store = extra.get("STORE_OBJECT") or open_store(settings=settings)
    metadata = open_metadata_store(settings.metadata_db)
    encoder = _LazyEncoder(extra.get("ENCODER"), settings.query_encoder)
    encoder_info, encoder_error = None, None
    if encoder.configured:
        try:
            enc = encoder()
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
    policy: AddressPolicy = extra.get("FETCH_POLICY") or default_policy
    max_bytes = int(settings.image_fetch_max_mb * 2**20)

    def fetch(url: str) -> bytes:
        try:
            return fetch_url(
                url, max_bytes=max_bytes, timeout_s=settings.image_fetch_timeout_s, policy=policy
            ).data
        except FetchRefused as e:
            raise ApiError(400, "image_url_refused", str(e)) from None
        except FetchError as e:
            raise ApiError(400, "image_url_unreachable", str(e)) from None

    embedder = QueryEmbedder(
        encoder,
        open_query_cache(settings.query_cache, settings.metadata_db, settings.query_cache_ttl_s),
        fetch=fetch,
        max_pixels=int(extra.get("MAX_IMAGE_PIXELS", 40_000_000)),
        on_cache=lambda result: metrics.query_cache.labels(result).inc(),
    )
    return ServiceState(
        settings, store, registry, replica, metadata, embedder, metrics, encoder_error
    )


def _record_swap(metrics: ServiceMetrics, old: LoadedSnapshot | None, new: LoadedSnapshot) -> None:
    """Swap listener: count the swap and show the snapshot about to serve."""
    metrics.swaps.inc()
    metrics.set_snapshot(new.snapshot_id, new.manifest.ntotal)
    metrics.load_seconds.observe(new.load_seconds)
