"""Item metadata for search hits: Redis in production, SQLite when embedded.

Rows come from a snapshot's metadata files (``manifest.metadata.files``: JSONL,
one object per line with an integer ``"id"``). Loading is idempotent: rows are
keyed by item id (last writer wins, and the same snapshot always writes the
same rows) and a marker per snapshot makes a second load — by another replica
or after a restart — a no-op. Each file's sha256 is checked against the
manifest while it streams, before the marker is set.

Metadata of delta upserts travels in the delta log itself, not here.

Rows are kept as the JSON text the snapshot wrote (checked to be strict JSON when
loaded): ``get_raw`` hands that text out unparsed, for the service to splice into its
answers (``orjson.Fragment``); ``get_many`` parses it.

A store that cannot be reached raises ``MetadataUnavailable`` (from ``get_many``
and ``ping``): the service answers 503 and reports itself unready, never 500.
The Redis client fails fast (short timeouts, one retry for a connection that a
restart left stale) so that a request never waits long on a dead store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from vsearch import strict_json
from vsearch.manifest import Manifest, ObjectRef
from vsearch.storage import ObjectStore

log = logging.getLogger(__name__)

_BATCH = 2000


class MetadataError(ValueError):
    """A metadata file is malformed or does not match its manifest entry."""


class MetadataUnavailable(Exception):
    """The store cannot be reached (Redis down, SQLite file unreadable): a dependency outage."""


class MetadataStore(ABC):
    url: str

    @abstractmethod
    def get_raw(self, ids: Sequence[int]) -> dict[int, str | bytes]:
        """The stored JSON text of the ids that have some, in one round trip; missing ids
        are left out.

        Raises MetadataUnavailable when the store cannot be reached.
        """

    def get_many(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """``get_raw``, parsed."""
        return {i: json.loads(text) for i, text in self.get_raw(ids).items()}

    @abstractmethod
    def ping(self) -> None:
        """One cheap round trip; raises MetadataUnavailable when the store cannot be reached."""

    @abstractmethod
    def put_many(self, rows: Iterable[tuple[int, str]]) -> None:
        """Write ``(id, json text)`` rows."""

    @abstractmethod
    def is_loaded(self, snapshot_id: str) -> bool: ...

    @abstractmethod
    def mark_loaded(self, snapshot_id: str) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release connections."""


class SQLiteMetadataStore(MetadataStore):
    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite://{path}"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(
            "CREATE TABLE IF NOT EXISTS metadata (id INTEGER PRIMARY KEY, data TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS loaded (snapshot_id TEXT PRIMARY KEY);"
        )

    def _conn(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    def get_raw(self, ids: Sequence[int]) -> dict[int, str | bytes]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        query = f"SELECT id, data FROM metadata WHERE id IN ({marks})"
        try:
            rows = self._conn().execute(query, [int(i) for i in ids]).fetchall()
        except sqlite3.OperationalError as e:  # locked past the timeout, disk I/O error
            raise MetadataUnavailable(f"metadata store {self.path}: {e}") from e
        return dict(rows)

    def ping(self) -> None:
        try:
            self._conn().execute("SELECT 1 FROM metadata LIMIT 1").fetchall()
        except sqlite3.Error as e:
            raise MetadataUnavailable(f"metadata store {self.path}: {e}") from e

    def put_many(self, rows: Iterable[tuple[int, str]]) -> None:
        db = self._conn()
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO metadata VALUES (?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def is_loaded(self, snapshot_id: str) -> bool:
        q = "SELECT 1 FROM loaded WHERE snapshot_id = ?"
        return self._conn().execute(q, (snapshot_id,)).fetchone() is not None

    def mark_loaded(self, snapshot_id: str) -> None:
        self._conn().execute("INSERT OR IGNORE INTO loaded VALUES (?)", (snapshot_id,))

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class RedisMetadataStore(MetadataStore):
    """One string key per item (``{prefix}:{id}``): MGET fetches a page of hits at once."""

    def __init__(self, url: str, prefix: str = "vsearch:meta") -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.prefix = prefix
        # Hits wait on this: fail within seconds, not after redis-py's default ten retries.
        # One retry, on a broken connection only (one a Redis restart left in the pool).
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        # Readiness probes: one try within a second; a hanging Redis is a down Redis.
        self._probe = redis.Redis.from_url(
            url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)

    def get_raw(self, ids: Sequence[int]) -> dict[int, str | bytes]:
        if not ids:
            return {}
        try:
            values = self.client.mget([f"{self.prefix}:{int(i)}" for i in ids])
        except self._errors as e:
            raise MetadataUnavailable(f"metadata store unreachable: {e}") from e
        return {int(i): v for i, v in zip(ids, values, strict=True) if v is not None}

    def ping(self) -> None:
        try:
            self._probe.ping()
        except self._errors as e:
            raise MetadataUnavailable(f"metadata store unreachable: {e}") from e

    def put_many(self, rows: Iterable[tuple[int, str]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for n, (item, data) in enumerate(rows, 1):
            pipe.set(f"{self.prefix}:{item}", data)
            if n % _BATCH == 0:
                pipe.execute()
        pipe.execute()

    def is_loaded(self, snapshot_id: str) -> bool:
        return bool(self.client.exists(f"{self.prefix}:loaded:{snapshot_id}"))

    def mark_loaded(self, snapshot_id: str) -> None:
        self.client.set(f"{self.prefix}:loaded:{snapshot_id}", "1")

    def close(self) -> None:
        self.client.close()
        self._probe.close()


def open_metadata_store(url: str) -> MetadataStore:
    """``sqlite:///abs/path`` or ``redis://host:port/db``."""
    if url.startswith("sqlite://") and len(url) > len("sqlite://"):
        return SQLiteMetadataStore(url[len("sqlite://") :])
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisMetadataStore(url)
    raise ValueError(
        f"{url!r}: unsupported metadata URL; use sqlite:///path or redis://host:port/db"
    )


def _rows(store: ObjectStore, ref: ObjectRef) -> Iterator[tuple[int, str]]:
    """Rows of one JSONL file, after its size and sha256 matched the manifest.

    The file is spooled to a temporary file first, so that no row of a corrupted
    file is ever written.
    """
    sha, size = hashlib.sha256(), 0
    with tempfile.TemporaryFile() as tmp:
        with store.open(ref.uri) as src:
            while chunk := src.read(1 << 20):
                sha.update(chunk)
                size += len(chunk)
                tmp.write(chunk)
        if size != ref.bytes or sha.hexdigest() != ref.sha256:
            raise MetadataError(f"{ref.uri}: does not match the manifest's size/sha256")
        tmp.seek(0)
        for lineno, line in enumerate(tmp, 1):
            if not line.strip():
                continue
            try:  # strict: the text is served as it is, inside the service's JSON answers
                row = strict_json.loads(line)
                item = row["id"]
            except (ValueError, KeyError, TypeError, RecursionError):
                raise MetadataError(f"{ref.uri}:{lineno}: not a JSON object with an 'id'") from None
            if not isinstance(item, int) or isinstance(item, bool):
                raise MetadataError(f"{ref.uri}:{lineno}: 'id' must be an integer")
            yield item, line.decode().strip()  # already valid JSON: stored as written


def load_snapshot_metadata(store: ObjectStore, manifest: Manifest, into: MetadataStore) -> int:
    """Write the snapshot's metadata rows into ``into``; 0 if it was loaded before.

    A file that does not match the manifest raises MetadataError before any of
    its rows is written; the marker is set only once every file is in.
    """
    if into.is_loaded(manifest.snapshot_id):
        return 0
    count = 0
    for ref in manifest.metadata.files:
        batch: list[tuple[int, str]] = []
        for row in _rows(store, ref):
            batch.append(row)
            if len(batch) >= _BATCH:
                into.put_many(batch)
                count += len(batch)
                batch = []
        into.put_many(batch)
        count += len(batch)
    into.mark_loaded(manifest.snapshot_id)
    log.info("loaded metadata of %s: %d rows", manifest.snapshot_id, count)
    return count
