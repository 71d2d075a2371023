"""``SQLiteDeltaLog``: the embedded delta log, one SQLite file in WAL mode."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence

from vsearch.delta.delta_log import DeltaLog
from vsearch.delta.entries import (
    DeltaEntry,
    DeltaWrite,
    decode_entry,
    encode_write,
    recorded,
)
from vsearch.delta.watermarks import LOG_ORIGIN, format_entry_id, parse_entry_id


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
                    item INTEGER NOT NULL, vector BLOB, metadata TEXT, thumb BLOB,
                    PRIMARY KEY (ms, seq)) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS last (one INTEGER PRIMARY KEY CHECK (one = 1),
                    ms INTEGER NOT NULL, seq INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS served (replica TEXT PRIMARY KEY,
                    ms INTEGER NOT NULL, seq INTEGER NOT NULL, expires REAL NOT NULL);
                """
            )
            columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
            if "thumb" not in columns:  # a log written before thumbnails existed
                db.execute("ALTER TABLE entries ADD COLUMN thumb BLOB")

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
                vec, meta = encode_write(w)
                db.execute(
                    "INSERT INTO entries (ms, seq, op, item, vector, metadata, thumb)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (last_ms, last_seq, w.op, w.item, vec, meta, w.thumbnail),
                )
                entries.append(recorded(format_entry_id(last_ms, last_seq), w))
            db.execute("INSERT OR REPLACE INTO last VALUES (1, ?, ?)", (last_ms, last_seq))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return entries

    def read(self, after: str = LOG_ORIGIN, upto: str | None = None) -> list[DeltaEntry]:
        a_ms, a_seq = parse_entry_id(after)
        u_ms, u_seq = parse_entry_id(upto) if upto is not None else (1 << 62, 0)
        rows = self._conn().execute(
            "SELECT ms, seq, op, item, vector, metadata, thumb FROM entries"
            " WHERE (ms, seq) > (?, ?) AND (ms, seq) <= (?, ?) ORDER BY ms, seq",
            (a_ms, a_seq, u_ms, u_seq),
        )
        return [
            decode_entry(format_entry_id(ms, seq), op, item, v, m, t)
            for ms, seq, op, item, v, m, t in rows
        ]

    def thumbnail(self, entry_id: str) -> bytes | None:
        ms, seq = parse_entry_id(entry_id)
        row = (
            self._conn()
            .execute("SELECT thumb FROM entries WHERE ms = ? AND seq = ?", (ms, seq))
            .fetchone()
        )
        return bytes(row[0]) if row and row[0] else None

    def tail(self, after: str, timeout_s: float) -> list[DeltaEntry]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.read(after)
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def last_id(self) -> str:
        row = self._conn().execute("SELECT ms, seq FROM last").fetchone()
        return format_entry_id(*row) if row else LOG_ORIGIN

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
