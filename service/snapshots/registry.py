"""The snapshot registry: load what CURRENT names, verify it, swap it in, release the old.

Longer than 300 lines because the lifecycle (poll, refuse, lease, swap, release) is one
state under one lock; split, each part would reach into the others' fields.

Loading happens entirely off the request path (``service.snapshots.snapshot_loader``:
fetch, verify, read, canary); only then is the new snapshot swapped in, under a lock,
in one assignment. Requests take a *lease* on the snapshot they start with; an old
snapshot is closed (worker threads stopped, indexes freed) when it is both
retired and unleased — never under a running request. This module owns
that lifecycle.

A snapshot is refused — and the old one keeps serving — when its manifest is
malformed or does not match CURRENT's sha256, an object is missing or fails its
checksum, an index cannot be read within the memory budget, it fails the canary
(searches for its own vectors), or its encoder differs from the service's (or,
with no encoder configured, from the first snapshot served: the encoder the
service then derives for queries). A refusal is remembered for that CURRENT and
logged once; a transient failure (the store unreachable) is retried every poll.
``refusal`` and ``last_error`` always describe the latest poll.

Others follow the lifecycle through listeners, each called in registration
order (those given to the constructor first, then those added):

- *swap listeners* ``(old, new)`` run before ``new`` becomes visible, outside
  the lock: a request can reach ``new`` only once every one has returned (the
  replica readies its delta index for ``new``'s watermark here). One that
  raises stops the swap; the old snapshot keeps serving and the error goes to
  the caller of ``swap``/``refresh`` (``refresh`` closes ``new`` and tries again
  at the next poll).
- *release listeners* ``(snapshot)`` run after a retired snapshot is closed,
  i.e. once no request holds a lease on it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from service.snapshots.refusal import NotReady, SnapshotRefused
from service.snapshots.shard_cache import prune_shard_cache
from service.snapshots.snapshot_loader import (
    LoadedSnapshot,
    default_memory_budget,
    load_snapshot,
    read_manifest,
)
from service.snapshots.thumbnail_store import cache_key as thumbnail_cache_key
from vsearch.catalog import PublishError, read_pointer
from vsearch.delta import parse_entry_id
from vsearch.manifest import EncoderInfo, Manifest
from vsearch.search import Watermark
from vsearch.serving.metadata_store import MetadataStore
from vsearch.storage import ObjectStore
from vsearch.storage.object_store import StoreError

__all__ = [
    "LoadedSnapshot",
    "NotReady",
    "ReleaseListener",
    "SnapshotRefused",
    "SnapshotRegistry",
    "SwapListener",
    "default_memory_budget",
]

log = logging.getLogger(__name__)

# (old, new): called before ``new`` is served; ``old`` is None for the first snapshot.
SwapListener = Callable[[LoadedSnapshot | None, LoadedSnapshot], None]
# (snapshot): called once a retired snapshot is closed.
ReleaseListener = Callable[[LoadedSnapshot], None]


class SnapshotRegistry:
    def __init__(
        self,
        store: ObjectStore,
        cache_dir: str,
        metadata: MetadataStore,
        *,
        encoder_info: EncoderInfo | None,
        memory_budget_bytes: int,
        shard_threads: int = 2,
        max_batch: int = 32,
        swap_listeners: Iterable[SwapListener] = (),
        release_listeners: Iterable[ReleaseListener] = (),
        on_refusal: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store, self.metadata = store, metadata
        self.cache = Path(cache_dir) / "shards"
        self.encoder_info = encoder_info
        self.memory_budget_bytes = memory_budget_bytes
        self.shard_threads, self.max_batch = shard_threads, max_batch
        self.on_refusal = on_refusal
        self._swap_listeners: list[SwapListener] = list(swap_listeners)
        self._release_listeners: list[ReleaseListener] = list(release_listeners)
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._current: LoadedSnapshot | None = None
        self._retired: list[LoadedSnapshot] = []
        # CURRENT as last acted on: (snapshot_id, manifest_sha256, updated_at)
        self._seen_pointer: tuple[str, str, str] | None = None
        self.refusal: dict[str, Any] | None = None  # the refusal of what CURRENT names now
        self.last_error: str | None = None  # the last poll's transient failure
        self.swaps = 0

    def add_swap_listener(self, listener: SwapListener) -> None:
        """Call ``listener(old, new)`` before each swap, after those already registered."""
        with self._lock:
            self._swap_listeners.append(listener)

    def add_release_listener(self, listener: ReleaseListener) -> None:
        """Call ``listener(snapshot)`` once a retired snapshot is closed, after the others."""
        with self._lock:
            self._release_listeners.append(listener)

    @property
    def current(self) -> LoadedSnapshot | None:
        return self._current

    @contextlib.contextmanager
    def lease(self) -> Iterator[LoadedSnapshot]:
        """The live snapshot, kept open until the block ends even if a swap happens."""
        with self._lock:
            snap = self._current
            if snap is None:
                raise NotReady(self.not_ready_reason())
            snap.leases += 1
        try:
            yield snap
        finally:
            with self._lock:
                snap.leases -= 1
                done = snap.retired and snap.leases == 0 and not snap.closed
            if done:
                self._close(snap)

    def not_ready_reason(self) -> str:
        if self.refusal is not None:
            return f"snapshot {self.refusal['snapshot_id']} refused: {self.refusal['reason']}"
        if self.last_error is not None:
            return self.last_error
        return "no snapshot loaded yet"

    @property
    def store_warnings(self) -> tuple[str, ...]:
        """Objects of the served snapshot whose store copy no longer matches its manifest
        (served from the verified cache; see ``shard_cache.fetch_shard``)."""
        current = self._current
        return current.store_warnings if current is not None else ()

    def status(self) -> dict[str, Any]:
        """What ``/readyz`` reports about snapshots, as of the last poll."""
        current = self._current
        return {
            "snapshot_id": current.snapshot_id if current else None,
            "refused": self.refusal,
            "last_error": self.last_error,
            "store_warnings": list(self.store_warnings),
            "swaps": self.swaps,
        }

    def refresh(self) -> str:
        """Poll CURRENT; load and swap in what it names if that is new. Returns what happened.

        Each poll sets ``refusal`` and ``last_error`` to what holds now. A refusal (bad
        bytes, a malformed manifest, a missing object, out of memory, a failed canary)
        is remembered for that pointer (snapshot, manifest sha256, update time) and not
        retried until CURRENT changes; anything else is transient, retried every poll.
        """
        with self._refresh_lock:
            try:
                found = read_pointer(self.store)
            except Exception as e:  # the refusal, if any, still stands: CURRENT is unknown
                return self._transient(f"cannot read CURRENT: {e}", e)
            if found is None:
                self.refusal = None
                self.last_error = f"nothing is published in {self.store.url} (no CURRENT)"
                return "empty"
            pointer = found[0]
            seen = (pointer.snapshot_id, pointer.manifest_sha256, pointer.updated_at)
            current = self._current
            if current is not None and current.snapshot_id == pointer.snapshot_id:
                self._seen_pointer = seen
                self.refusal, self.last_error = None, None
                return "unchanged"
            if seen == self._seen_pointer:  # refused: not retried until CURRENT moves
                self.last_error = None
                return "unchanged"
            try:
                loaded = self.load(read_manifest(self.store, pointer))
            except SnapshotRefused as e:
                self._refuse(seen, str(e))
                return "refused"
            except MemoryError:
                self._refuse(seen, "out of memory while loading it")
                return "refused"
            except Exception as e:
                self.refusal = None  # any refusal was of an earlier CURRENT
                return self._transient(f"loading {pointer.snapshot_id} failed: {e}", e)
            try:
                self.swap(loaded)
            except BaseException as e:  # a swap listener: the caller hears of it; retried
                loaded.searcher.close()
                self.refusal = None
                self.last_error = f"swapping in {pointer.snapshot_id} failed: {e}"
                raise
            self._seen_pointer = seen
            self.refusal, self.last_error = None, None
            return "swapped"

    def _refuse(self, seen: tuple[str, str, str], reason: str) -> None:
        self._seen_pointer = seen
        self.refusal = {"snapshot_id": seen[0], "reason": reason, "at": time.time()}
        self.last_error = None
        current = self._current
        log.error(
            "refused snapshot %s: %s (still serving %s)",
            seen[0],
            reason,
            current.snapshot_id if current else "nothing",
        )
        if self.on_refusal:
            self.on_refusal(seen[0], reason)

    def _transient(self, message: str, error: Exception) -> str:
        """Record a failure worth retrying; one line per poll, a traceback only when the
        error first appears (the store is down; anything unforeseen is logged in full once)."""
        repeated = message == self.last_error
        self.last_error = message
        if isinstance(error, StoreError | OSError | PublishError) or repeated:
            log.warning("%s; will retry", message)
        else:
            log.exception("%s; will retry", message)
        return "error"

    @property
    def expected_encoder(self) -> EncoderInfo | None:
        """The encoder every snapshot must have been built with: the service's own, else
        (no encoder configured) the first snapshot's; None before there is either."""
        # The served snapshot passed this check, so by induction it has the first one's.
        current = self._current
        if self.encoder_info is None and current is not None:
            return current.manifest.encoder
        return self.encoder_info

    def load(self, manifest: Manifest) -> LoadedSnapshot:
        """Download, verify and open every shard and the metadata of ``manifest``."""
        return load_snapshot(
            manifest,
            self.store,
            self.metadata,
            self.cache,
            expected_encoder=self.expected_encoder,
            memory_budget_bytes=self.memory_budget_bytes,
            shard_threads=self.shard_threads,
            max_batch=self.max_batch,
        )

    def swap(self, new: LoadedSnapshot) -> None:
        """Make ``new`` the live snapshot, once every swap listener has run (in order)."""
        with self._lock:
            listeners, serving = tuple(self._swap_listeners), self._current
        for listener in listeners:
            listener(serving, new)
        with self._lock:
            old, self._current = self._current, new
            self.swaps += 1
            close_now = False
            if old is not None:
                old.retired = True
                self._retired.append(old)
                close_now = old.leases == 0
        log.info("serving %s (was %s)", new.snapshot_id, old.snapshot_id if old else None)
        if old is not None and close_now:
            self._close(old)
        self._prune_cache(new, old)

    def _close(self, snap: LoadedSnapshot) -> None:
        with self._lock:
            if snap.closed:
                return
            snap.closed = True
            if snap in self._retired:
                self._retired.remove(snap)
            listeners = tuple(self._release_listeners)
        snap.searcher.close()
        log.info("released %s", snap.snapshot_id)
        for listener in listeners:
            listener(snap)

    def live_watermarks(self) -> list[Watermark]:
        """Watermarks of every snapshot still in use (the current and leased old ones)."""
        with self._lock:
            snaps = [*self._retired, *([self._current] if self._current else [])]
            return [s.watermark for s in snaps]

    def retained_watermarks(self) -> list[Watermark]:
        """What the delta log must keep for the snapshots in use and their rollback targets."""
        with self._lock:
            snaps = [*self._retired, *([self._current] if self._current else [])]
            return [parse_entry_id(s.retain_from) for s in snaps]

    def _prune_cache(self, new: LoadedSnapshot, old: LoadedSnapshot | None) -> None:
        """Keep the shards of the new snapshot and of its predecessor (fast rollback), which
        is already closed (and out of ``_retired``) when no request held it."""
        keep: set[str] = set()
        with self._lock:
            for snap in [new, *([old] if old else []), *self._retired]:
                keep |= {s.sha256 for s in snap.manifest.shards}
                if thumbs := thumbnail_cache_key(snap.manifest):
                    keep.add(thumbs)
        prune_shard_cache(self.cache, keep)

    def close(self) -> None:
        with self._lock:
            snaps = [*self._retired, *([self._current] if self._current else [])]
            self._current = None
        for snap in snaps:
            snap.retired = True
            self._close(snap)
