"""The delta log: every real-time upsert and delete, in order, shared by all replicas.

Two backends with one interface (``DeltaLog``), picked by URL in ``open_delta_log``:

- ``redis://host:port/db`` — a Redis stream (production). Entry ids are the
  stream's ``ms-seq`` ids. Durability: with ``appendonly yes`` and
  ``appendfsync always`` Redis fsyncs the AOF before it answers XADD, so an
  acknowledged write survives a crash or restart of Redis (tested by
  SIGKILLing a real redis-server). With the default ``everysec`` up to one
  second of acknowledged writes can be lost; ``open`` logs a warning then.
- ``sqlite:///abs/path`` — an SQLite file in WAL mode with ``synchronous=FULL``
  (embedded default). It emits the same ``ms-seq`` ids, strictly increasing even
  if the clock steps back or the log is trimmed empty.

A batch of writes is appended atomically (one transaction / MULTI). Replicas
record the snapshot watermark they serve (with an expiry); the log is trimmed
only below the oldest of those (``XTRIM MINID``), never by length.

The compaction DAG reads it with ``read(after, upto)`` and ``last_id()``.
"""

from __future__ import annotations

from vsearch.delta.delta_log import DeltaLog
from vsearch.delta.entries import (
    MAX_ITEM_ID,
    DeltaEntry,
    DeltaWrite,
    Op,
)
from vsearch.delta.redis_log import RedisDeltaLog
from vsearch.delta.sqlite import SQLiteDeltaLog
from vsearch.delta.watermarks import LOG_ORIGIN, format_entry_id, parse_entry_id

__all__ = [
    "LOG_ORIGIN",
    "MAX_ITEM_ID",
    "DeltaEntry",
    "DeltaLog",
    "DeltaWrite",
    "Op",
    "RedisDeltaLog",
    "SQLiteDeltaLog",
    "format_entry_id",
    "open_delta_log",
    "parse_entry_id",
]


def open_delta_log(url: str) -> DeltaLog:
    """The log at ``url``: ``sqlite:///abs/path`` or ``redis://host:port/db``."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if not path:
            raise ValueError(f"{url!r}: expected sqlite:///path/to/file")
        return SQLiteDeltaLog(path)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisDeltaLog(url)
    raise ValueError(
        f"{url!r}: unsupported delta log URL; use sqlite:///path or redis://host:port/db"
    )
