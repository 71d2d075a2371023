"""Prometheus metrics of one app (its own registry, so several apps can live in one process).

Each server process has its own numbers; the deployment runs one process per
container (see service/server.py), so a scrape sees the whole replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.snapshots.snapshot_loader import SnapshotMemory
from vsearch.delta import DeltaEntry

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_SEARCH_STAGES = ("parse", "embed", "metadata", "total")
_LOAD = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "vsearch_stage_seconds",
            "Latency of each stage of a request (parse, embed, base_search, delta_search, "
            "metadata, total)",
            ["endpoint", "stage"],
            buckets=_LATENCY,
            registry=r,
        )
        # The search view's children, labelled once: labels() costs a lock and a lookup.
        self.search_stages = {
            stage: self.stage_seconds.labels("search", stage)
            for stage in (*_SEARCH_STAGES, "base_search", "delta_search")
        }
        self.requests = Counter(
            "vsearch_requests",
            "Requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.snapshot = Gauge(
            "vsearch_snapshot_info", "1 for the snapshot being served", ["snapshot_id"], registry=r
        )
        self.snapshot_vectors = Gauge(
            "vsearch_snapshot_vectors", "Vectors in the served snapshot", registry=r
        )
        self.swaps = Counter("vsearch_snapshot_swaps", "Snapshots swapped in", registry=r)
        self.refusals = Counter(
            "vsearch_snapshot_refusals",
            "Snapshots refused, by snapshot",
            ["snapshot_id"],
            registry=r,
        )
        self.load_seconds = Histogram(
            "vsearch_snapshot_load_seconds",
            "Time to download, verify and open a snapshot",
            buckets=_LOAD,
            registry=r,
        )
        self.delta_items = Gauge(
            "vsearch_delta_items", "Items with a delta entry newer than the base", registry=r
        )
        self.delta_upserts = Gauge(
            "vsearch_delta_vectors", "Vectors in the in-memory delta index", registry=r
        )
        self.visible_lag = Histogram(
            "vsearch_delta_visible_lag_seconds",
            "From a write being logged to it being searchable here (path: local, tail, replay)",
            ["path"],
            buckets=_LATENCY,
            registry=r,
        )
        self.snapshot_bytes = Gauge(
            "vsearch_snapshot_bytes",
            "Memory of the served snapshot as the budget counts it: private (copied out of "
            "the files), scanned (mapped, read by every search), refine (mapped, read a few "
            "rows per query; not counted), resident = private + scanned",
            ["kind"],
            registry=r,
        )
        self.process_memory = Gauge(
            "vsearch_process_memory_bytes",
            "This process's memory (/proc): rss_anon (private), rss_file (mapped file pages "
            "it has touched, shared with other processes), pss (its proportional share)",
            ["kind"],
            registry=r,
        )
        for kind in ("rss_anon", "rss_file", "pss"):
            self.process_memory.labels(kind).set_function(_process_memory_reader(kind))
        self.encode_batch_size = Histogram(
            "vsearch_query_encode_batch_size",
            "Queries embedded by one encoder call (dynamic batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.query_cache = Counter(
            "vsearch_query_cache", "Query-embedding cache lookups", ["result"], registry=r
        )

    def track_delta(self, items: Callable[[], int], vectors: Callable[[], int]) -> None:
        self.delta_items.set_function(lambda: float(items()))
        self.delta_upserts.set_function(lambda: float(vectors()))

    def observe_applied(self, entries: Sequence[DeltaEntry], path: str) -> None:
        """Lag from the entry's log timestamp (its id's ms part) to now."""
        now_ms = time.time() * 1000
        for e in entries:
            ms = int(e.id.split("-", 1)[0])
            self.visible_lag.labels(path).observe(max(0.0, (now_ms - ms) / 1000))

    def set_snapshot(self, snapshot_id: str, vectors: int, memory: SnapshotMemory) -> None:
        self.snapshot.clear()
        self.snapshot.labels(snapshot_id).set(1)
        self.snapshot_vectors.set(vectors)
        for kind in ("private", "scanned", "refine", "resident"):
            self.snapshot_bytes.labels(kind).set(getattr(memory, kind))


def _process_memory_reader(kind: str) -> Callable[[], float]:
    return lambda: float(process_memory().get(kind, 0))


def process_memory() -> dict[str, int]:
    """RssAnon, RssFile (/proc/self/status) and Pss (/proc/self/smaps_rollup), in bytes."""
    found: dict[str, int] = {}
    wanted = {"RssAnon:": "rss_anon", "RssFile:": "rss_file", "Pss:": "pss"}
    for name in ("/proc/self/status", "/proc/self/smaps_rollup"):
        try:
            with open(name) as f:
                for line in f:
                    fields = line.split()
                    if fields and fields[0] in wanted:
                        found[wanted[fields[0]]] = int(fields[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return found
