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

import json
import logging
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

Op = Literal["upsert", "delete"]
_PAGE = 1000
MAX_ITEM_ID = (1 << 63) - 1


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """``"ms-seq"`` as a tuple that compares in log order; ValueError if malformed."""
    ms, sep, seq = entry_id.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"invalid delta entry id {entry_id!r}: expected 'ms-seq'")
    return int(ms), int(seq)


def format_entry_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


@dataclass(frozen=True)
class DeltaWrite:
    """One write to append: an upsert carries a vector (float32) and metadata."""

    op: Op
    item: int
    vector: np.ndarray | None = None
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.op not in ("upsert", "delete"):
            raise ValueError(f"op must be 'upsert' or 'delete', got {self.op!r}")
        if not 0 <= self.item <= MAX_ITEM_ID:
            raise ValueError(f"item id must be in [0, 2**63-1], got {self.item}")
        if self.op == "upsert" and self.vector is None:
            raise ValueError("an upsert needs a vector")


@dataclass(frozen=True)
class DeltaEntry:
    """A write as recorded in the log, with its ``ms-seq`` id."""

    id: str
    op: Op
    item: int
    vector: np.ndarray | None
    metadata: dict[str, Any] | None

    @property
    def key(self) -> tuple[int, int]:
        return parse_entry_id(self.id)


def _encode(w: DeltaWrite) -> tuple[bytes | None, str | None]:
    vec = None if w.vector is None else np.ascontiguousarray(w.vector, "<f4").tobytes()
    meta = None if w.metadata is None else json.dumps(w.metadata, separators=(",", ":"))
    return vec, meta


def _decode(
    eid: str, op: str, item: int, vec: bytes | None, meta: str | bytes | None
) -> DeltaEntry:
    vector = None if not vec else np.frombuffer(vec, dtype="<f4").copy()
    metadata = None if not meta else json.loads(meta)
    return DeltaEntry(eid, "delete" if op == "delete" else "upsert", item, vector, metadata)


class DeltaLog(ABC):
    """An ordered, shared, durable log of upserts and deletes. See the module docstring."""

    url: str

    @abstractmethod
    def append(self, writes: Sequence[DeltaWrite]) -> list[DeltaEntry]:
        """Append ``writes`` atomically, in order; return them with their ids."""

    @abstractmethod
    def read(self, after: str = "0-0", upto: str | None = None) -> list[DeltaEntry]:
        """Entries with ``after < id <= upto`` (``upto=None``: to the end), in log order."""

    @abstractmethod
    def tail(self, after: str, timeout_s: float) -> list[DeltaEntry]:
        """Entries after ``after``; waits up to ``timeout_s`` for one when there are none."""

    @abstractmethod
    def last_id(self) -> str:
        """Id of the newest entry ever appended; ``"0-0"`` for an empty log."""

    @abstractmethod
    def first_id(self) -> str | None:
        """Id of the oldest entry still kept (None when empty): detects trimmed gaps."""

    @abstractmethod
    def record_served(self, replica: str, watermark: str, ttl_s: float) -> None:
        """Say that ``replica`` serves a snapshot with ``watermark``, for ``ttl_s`` seconds."""

    @abstractmethod
    def oldest_served(self) -> str | None:
        """The lowest watermark any live replica serves; None when none has said."""

    @abstractmethod
    def trim_below(self, entry_id: str) -> int:
        """Drop entries with id < ``entry_id``; return how many went."""

    def trim_to_served(self) -> int:
        """Trim below the oldest watermark still served; nothing when no replica says."""
        oldest = self.oldest_served()
        if oldest is None or oldest == "0-0":
            return 0
        return self.trim_below(oldest)

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release connections."""


class SQLiteDeltaLog(DeltaLog):
    """The embedded log: one SQLite file, safe across threads and processes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite://{path}"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._local = threading.local()
        with self._conn() as db:
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS entries (
                    ms INTEGER NOT NULL, seq INTEGER NOT NULL, op TEXT NOT NULL,
                    item INTEGER NOT NULL, vector BLOB, metadata TEXT,
                    PRIMARY KEY (ms, seq)) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS last (one INTEGER PRIMARY KEY CHECK (one = 1),
                    ms INTEGER NOT NULL, seq INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS served (replica TEXT PRIMARY KEY,
                    ms INTEGER NOT NULL, seq INTEGER NOT NULL, expires REAL NOT NULL);
                """
            )

    def _conn(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged append is on disk, like appendfsync always.
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    def append(self, writes: Sequence[DeltaWrite]) -> list[DeltaEntry]:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT ms, seq FROM last").fetchone()
            last_ms, last_seq = row if row else (0, 0)
            now = int(time.time() * 1000)
            entries = []
            for w in writes:
                if now > last_ms:
                    last_ms, last_seq = now, 0
                else:
                    last_seq += 1
                vec, meta = _encode(w)
                db.execute(
                    "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                    (last_ms, last_seq, w.op, w.item, vec, meta),
                )
                entries.append(
                    DeltaEntry(
                        format_entry_id(last_ms, last_seq), w.op, w.item, w.vector, w.metadata
                    )
                )
            db.execute("INSERT OR REPLACE INTO last VALUES (1, ?, ?)", (last_ms, last_seq))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return entries

    def read(self, after: str = "0-0", upto: str | None = None) -> list[DeltaEntry]:
        a_ms, a_seq = parse_entry_id(after)
        u_ms, u_seq = parse_entry_id(upto) if upto is not None else (1 << 62, 0)
        rows = self._conn().execute(
            "SELECT ms, seq, op, item, vector, metadata FROM entries"
            " WHERE (ms, seq) > (?, ?) AND (ms, seq) <= (?, ?) ORDER BY ms, seq",
            (a_ms, a_seq, u_ms, u_seq),
        )
        return [
            _decode(format_entry_id(ms, seq), op, item, v, m) for ms, seq, op, item, v, m in rows
        ]

    def tail(self, after: str, timeout_s: float) -> list[DeltaEntry]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.read(after)
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def last_id(self) -> str:
        row = self._conn().execute("SELECT ms, seq FROM last").fetchone()
        return format_entry_id(*row) if row else "0-0"

    def first_id(self) -> str | None:
        row = (
            self._conn().execute("SELECT ms, seq FROM entries ORDER BY ms, seq LIMIT 1").fetchone()
        )
        return format_entry_id(*row) if row else None

    def record_served(self, replica: str, watermark: str, ttl_s: float) -> None:
        ms, seq = parse_entry_id(watermark)
        self._conn().execute(
            "INSERT OR REPLACE INTO served VALUES (?, ?, ?, ?)",
            (replica, ms, seq, time.time() + ttl_s),
        )

    def oldest_served(self) -> str | None:
        row = (
            self._conn()
            .execute(
                "SELECT ms, seq FROM served WHERE expires > ? ORDER BY ms, seq LIMIT 1",
                (time.time(),),
            )
            .fetchone()
        )
        return format_entry_id(*row) if row else None

    def trim_below(self, entry_id: str) -> int:
        ms, seq = parse_entry_id(entry_id)
        cur = self._conn().execute("DELETE FROM entries WHERE (ms, seq) < (?, ?)", (ms, seq))
        return cur.rowcount

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class RedisDeltaLog(DeltaLog):
    """The production log: one Redis stream (``key``) plus per-replica watermark keys."""

    def __init__(self, url: str, key: str = "vsearch:delta") -> None:
        import redis  # only when Redis is configured

        self.url = url
        self.key = key
        self.client = redis.Redis.from_url(url, socket_timeout=10, health_check_interval=30)
        self._warn_if_not_durable()

    def _warn_if_not_durable(self) -> None:
        try:
            cfg = self.client.config_get("append*")
        except Exception:  # managed Redis often disables CONFIG; then we cannot tell
            return
        aof, fsync = _text(cfg.get("appendonly", b"")), _text(cfg.get("appendfsync", b""))
        if (aof, fsync) != ("yes", "always"):
            log.warning(
                "Redis at %s has appendonly=%s appendfsync=%s: acknowledged delta writes can be "
                "lost if Redis crashes; set appendonly yes and appendfsync always",
                self.url,
                aof,
                fsync,
            )

    def append(self, writes: Sequence[DeltaWrite]) -> list[DeltaEntry]:
        pipe = self.client.pipeline(transaction=True)
        for w in writes:
            vec, meta = _encode(w)
            fields: dict[str, Any] = {"op": w.op, "item": str(w.item)}
            if vec is not None:
                fields["vec"] = vec
            if meta is not None:
                fields["meta"] = meta
            pipe.xadd(self.key, fields)  # type: ignore[arg-type]
        ids = pipe.execute()
        return [
            DeltaEntry(_text(eid), w.op, w.item, w.vector, w.metadata)
            for eid, w in zip(ids, writes, strict=True)
        ]

    def _entries(self, raw: Any) -> list[DeltaEntry]:
        out = []
        for eid, fields in raw:
            out.append(
                _decode(
                    _text(eid),
                    _text(fields[b"op"]),
                    int(fields[b"item"]),
                    fields.get(b"vec"),
                    fields.get(b"meta"),
                )
            )
        return out

    def read(self, after: str = "0-0", upto: str | None = None) -> list[DeltaEntry]:
        parse_entry_id(after)
        end = "+" if upto is None else upto
        out: list[DeltaEntry] = []
        start = f"({after}"
        while True:
            page = self._entries(self.client.xrange(self.key, start, end, count=_PAGE))
            out.extend(page)
            if len(page) < _PAGE:
                return out
            start = f"({page[-1].id}"

    def tail(self, after: str, timeout_s: float) -> list[DeltaEntry]:
        block = max(1, int(timeout_s * 1000))
        found: Any = self.client.xread({self.key: after}, count=_PAGE, block=block)
        return self._entries(found[0][1]) if found else []

    def last_id(self) -> str:
        try:
            info = self.client.xinfo_stream(self.key)
        except Exception as e:
            if "no such key" in str(e).lower():
                return "0-0"
            raise
        return _text(info.get("last-generated-id", b"0-0"))

    def first_id(self) -> str | None:
        first = self.client.xrange(self.key, "-", "+", count=1)
        return _text(first[0][0]) if first else None

    def _served_key(self, replica: str) -> str:
        return f"{self.key}:served:{replica}"

    def record_served(self, replica: str, watermark: str, ttl_s: float) -> None:
        parse_entry_id(watermark)
        self.client.set(self._served_key(replica), watermark, px=max(1, int(ttl_s * 1000)))

    def oldest_served(self) -> str | None:
        keys = list(self.client.scan_iter(match=self._served_key("*"), count=500))
        values = [_text(v) for v in self.client.mget(keys)] if keys else []
        marks = [v for v in values if v]
        return min(marks, key=parse_entry_id) if marks else None

    def trim_below(self, entry_id: str) -> int:
        parse_entry_id(entry_id)
        return int(self.client.xtrim(self.key, minid=entry_id, approximate=False))

    def close(self) -> None:
        self.client.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
