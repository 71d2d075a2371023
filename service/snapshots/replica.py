"""One replica's moving parts: the snapshot registry, the delta log and its in-memory view.

Two background threads, both started by ``start()``:

- the *watcher* polls CURRENT every ``watch_interval_s`` (the registry loads and
  swaps), records this replica's served watermark in the log with an expiry,
  and trims the log below the oldest watermark any replica still serves;
- the *tailer* follows the delta log into the ``DeltaIndex`` (blocking reads),
  so that writes taken by other replicas become visible here.

A write taken here is appended to the log and applied to the local index
before the request returns: it is visible to the next search on this replica.
After a swap, delta entries at or below the new watermark are dropped once no
request uses an older snapshot; a swap to a lower watermark (rollback) replays
the log above it.

The replica follows the registry's swaps through two listeners that whoever
builds both registers (``service.state.build_state``): ``prepare_delta`` as a
swap listener, first, so that the delta index is ready for a snapshot before
any request can reach it, and ``compact_delta`` as a release listener.

What a replica records as served is what the log must keep for it: per snapshot
in use, ``retain_from`` = the lower of its watermark and the watermark of its
``previous_snapshot_id`` (a rollback one step back replays the log above that).
``prepare_delta`` sets it from the previous manifest before the snapshot is
served; while that manifest cannot be read it stays at ``LOG_ORIGIN`` (keep
everything) and the watcher tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from service.snapshots.registry import LoadedSnapshot, SnapshotRegistry
from vsearch.catalog import SnapshotNotFound, read_manifest
from vsearch.delta import DeltaEntry, DeltaLog, DeltaWrite, format_entry_id, parse_entry_id
from vsearch.delta.watermarks import LOG_ORIGIN
from vsearch.search import DeltaIndex

log = logging.getLogger(__name__)


class Replica:
    def __init__(
        self,
        registry: SnapshotRegistry,
        delta_log: DeltaLog,
        *,
        replica_id: str,
        watch_interval_s: float,
        on_applied: Callable[[Sequence[DeltaEntry], str], None] | None = None,
    ) -> None:
        self.registry, self.log = registry, delta_log
        self.replica_id = replica_id
        self.watch_interval_s = watch_interval_s
        self.on_applied = on_applied
        self.delta: DeltaIndex | None = None
        self._cursor = LOG_ORIGIN  # the newest log entry the tailer has read
        # Snapshots whose rollback target's manifest could not be read yet, by id.
        self._retain_unknown: dict[str, LoadedSnapshot] = {}
        self._delta_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- snapshots -------------------------------------------------------

    def prepare_delta(self, old: LoadedSnapshot | None, new: LoadedSnapshot) -> None:
        """Swap listener: ready the delta index for ``new`` before it is served.

        The first snapshot creates the index and replays the log above its
        watermark; a swap to a lower watermark (rollback) reopens it there and
        replays up to what the tailer has read. Sets what the log must keep for ``new``.
        """
        self._resolve_retain_from(new)
        with self._delta_lock:
            if self.delta is None:
                self.delta = DeltaIndex(new.dim, new.manifest.metric)
                self._cursor = new.manifest.delta_watermark
                self._replay(new.manifest.delta_watermark)
            elif old is not None and new.watermark < old.watermark:
                # Rollback: entries above the lower watermark come back from the log. Searches
                # still on the old snapshot filter them out by its higher watermark.
                self.delta.reopen(new.manifest.delta_watermark)
                self._replay(new.manifest.delta_watermark, upto=self._cursor)

    def _resolve_retain_from(self, snap: LoadedSnapshot) -> None:
        """``snap.retain_from``: min(its watermark, its rollback target's watermark)."""
        own, previous = snap.manifest.delta_watermark, snap.manifest.previous_snapshot_id
        if previous is None:
            snap.retain_from = own
            return
        try:
            target = read_manifest(self.registry.store, previous).delta_watermark
        except SnapshotNotFound:  # deleted: nothing to roll back to
            target = own
        except Exception as e:  # the store is unreachable: keep everything, ask again later
            log.warning(
                "cannot read %s, the rollback target of %s: %s", previous, snap.snapshot_id, e
            )
            snap.retain_from = LOG_ORIGIN
            self._retain_unknown[snap.snapshot_id] = snap
            return
        snap.retain_from = min(own, target, key=parse_entry_id)
        self._retain_unknown.pop(snap.snapshot_id, None)

    def _replay(self, after: str, upto: str | None = None) -> None:
        """Read the log above ``after`` into the delta index (startup, rollback)."""
        assert self.delta is not None
        first = self.log.first_id()
        if (
            first is not None
            and after != LOG_ORIGIN
            and parse_entry_id(first) > parse_entry_id(after)
        ):
            log.warning(
                "delta log starts at %s, after %s: writes in between may have been "
                "trimmed (they are in newer snapshots only)",
                first,
                after,
            )
        entries = self.log.read(after, upto)
        self._apply(entries, "replay")
        if entries and upto is None:
            self._cursor = max(self._cursor, entries[-1].id, key=parse_entry_id)

    def compact_delta(self, released: LoadedSnapshot) -> None:
        """Release listener: drop the delta entries every live snapshot has folded in."""
        marks = self.registry.live_watermarks()
        if self.delta is not None and marks:
            dropped = self.delta.compact(format_entry_id(*min(marks)))
            log.info(
                "released %s; dropped %d delta items folded into the base",
                released.snapshot_id,
                dropped,
            )

    # -- writes ----------------------------------------------------------

    def write(self, writes: Sequence[DeltaWrite]) -> list[DeltaEntry]:
        """Append to the log, then apply here: visible to this replica's next search."""
        entries = self.log.append(writes)
        self._apply(entries, "local")
        return entries

    def _apply(self, entries: Sequence[DeltaEntry], path: str) -> None:
        if self.delta is None or not entries:
            return
        applied = self.delta.apply(entries)
        if applied and self.on_applied:
            self.on_applied(applied, path)

    # -- background threads ----------------------------------------------

    def start(self, *, load_now: bool = False) -> None:
        """Start the tailer and the watcher (``load_now``: its first poll right away)."""
        if self._threads:
            return
        targets: list[tuple[str, Callable[[], None]]] = [("vsearch-tailer", self._tail_loop)]
        if self.watch_interval_s > 0 or load_now:
            targets.append(("vsearch-watcher", lambda: self._watch_loop(load_now)))
        for name, target in targets:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def tick(self) -> str:
        """One watcher step: poll CURRENT, record the served watermark, trim the log."""
        outcome = self.registry.refresh()
        for sid, snap in list(self._retain_unknown.items()):
            if snap.closed:
                del self._retain_unknown[sid]
            else:
                self._resolve_retain_from(snap)
        self._record_served()
        try:
            trimmed = self.log.trim_to_served()
            if trimmed:
                log.info("trimmed %d delta entries below the oldest served watermark", trimmed)
        except Exception:
            log.exception("trimming the delta log failed")
        return outcome

    def _record_served(self) -> None:
        marks = self.registry.retained_watermarks()
        if not marks:
            return
        ttl = max(60.0, 10 * self.watch_interval_s)
        try:
            self.log.record_served(self.replica_id, format_entry_id(*min(marks)), ttl)
        except Exception:
            log.exception("recording the served watermark failed")

    def _watch_loop(self, tick_first: bool) -> None:
        if tick_first:
            self._safe_tick()
        if self.watch_interval_s <= 0:
            return
        while not self._stop.wait(self.watch_interval_s):
            self._safe_tick()

    def _safe_tick(self) -> None:
        try:
            self.tick()
        except Exception:
            log.exception("snapshot watcher step failed")

    def _tail_loop(self) -> None:
        while not self._stop.is_set():
            if self.delta is None:
                self._stop.wait(0.05)
                continue
            try:
                entries = self.log.tail(self._cursor, 0.1)
            except Exception:
                log.exception("tailing the delta log failed; retrying")
                self._stop.wait(1.0)
                continue
            if entries:
                with self._delta_lock:
                    self._apply(entries, "tail")
                    self._cursor = max(self._cursor, entries[-1].id, key=parse_entry_id)

    def close(self) -> None:
        self.stop()
        self.registry.close()
        self.log.close()


def default_replica_id() -> str:
    import os
    import socket

    return f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"
