"""Search over a snapshot's shards plus the live delta: fan-out, merge, tombstones.

- ``DeltaIndex``: the replica's in-memory view of the delta log — an exact
  (brute-force) index of upserted vectors and the latest entry id of every
  item written since the snapshot. An item with an entry newer than the served
  snapshot's watermark hides its base copy (a delete, or an upsert replacing it).
- ``ShardSearcher``: one faiss shard, searched on the caller's thread or by
  worker threads that take queued queries in batches (one faiss call for the
  queries that arrived while the previous call ran; no waiting window, so a
  lone query is not delayed).
- ``SnapshotSearcher``: searches every shard, searches the delta, drops hidden
  base hits, merges the top k. Without micro-batching (the default) the first
  shard is searched on the request's own thread and the others by their
  workers at the same time (faiss releases the GIL); when the shards are fast
  enough that waking a thread costs more than it saves, all of them are
  searched in turn on the request's thread. A thread hand-off is tens of
  microseconds on an idle machine and can be milliseconds on a busy one; most
  of the service's overhead over raw faiss is the HTTP stack itself
  (bench/results/service.md measures that floor).

Per-request ``nprobe`` goes through faiss ``SearchParameters``; shared index
state is never mutated while serving.
"""

from vsearch.delta.watermarks import Watermark
from vsearch.search.delta_index import DeltaIndex
from vsearch.search.fanout import MAX_OVERFETCH, SnapshotSearcher
from vsearch.search.hits import Hit, Source, nprobe_for_recall
from vsearch.search.shard_searcher import ShardSearcher

__all__ = [
    "MAX_OVERFETCH",
    "DeltaIndex",
    "Hit",
    "ShardSearcher",
    "SnapshotSearcher",
    "Source",
    "Watermark",
    "nprobe_for_recall",
]
