"""``RedisDeltaLog``: the production delta log, one Redis stream.

``redis`` is imported only when such a log is opened.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from vsearch.delta.delta_log import DeltaLog
from vsearch.delta.entries import DeltaEntry, DeltaWrite, decode_entry, encode_write, recorded
from vsearch.delta.watermarks import LOG_ORIGIN, parse_entry_id

log = logging.getLogger(__name__)

_PAGE = 1000


class RedisDeltaLog(DeltaLog):
    """The production log: one Redis stream (``key``) plus per-replica watermark keys."""

    def __init__(self, url: str, key: str = "vsearch:delta") -> None:
        import redis  # only when Redis is configured
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.key = key
        # A write request waits on this: a bounded connect, and one retry, not redis-py's
        # ten, on a broken connection only (one a Redis restart left in the pool); never
        # after a timeout, when the batch may have been appended already.
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=10,
            socket_connect_timeout=2,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        # Readiness probes: one try within a second; a hanging Redis is a down Redis.
        self._probe = redis.Redis.from_url(
            url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
        )
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
            vec, meta = encode_write(w)
            fields: dict[str, Any] = {"op": w.op, "item": str(w.item)}
            if vec is not None:
                fields["vec"] = vec
            if meta is not None:
                fields["meta"] = meta
            if w.thumbnail:
                fields["thumb"] = w.thumbnail
            pipe.xadd(self.key, fields)  # type: ignore[arg-type]
        ids = pipe.execute()
        return [recorded(_text(eid), w) for eid, w in zip(ids, writes, strict=True)]

    def _entries(self, raw: Any) -> list[DeltaEntry]:
        out = []
        for eid, fields in raw:
            out.append(
                decode_entry(
                    _text(eid),
                    _text(fields[b"op"]),
                    int(fields[b"item"]),
                    fields.get(b"vec"),
                    fields.get(b"meta"),
                    fields.get(b"thumb"),
                )
            )
        return out

    def read(self, after: str = LOG_ORIGIN, upto: str | None = None) -> list[DeltaEntry]:
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

    def thumbnail(self, entry_id: str) -> bytes | None:
        parse_entry_id(entry_id)
        found: Any = self.client.xrange(self.key, entry_id, entry_id, count=1)
        thumb = found[0][1].get(b"thumb") if found else None
        return bytes(thumb) if thumb else None

    def tail(self, after: str, timeout_s: float) -> list[DeltaEntry]:
        block = max(1, int(timeout_s * 1000))
        found: Any = self.client.xread({self.key: after}, count=_PAGE, block=block)
        return self._entries(found[0][1]) if found else []

    def last_id(self) -> str:
        try:
            info = self.client.xinfo_stream(self.key)
        except Exception as e:
            if "no such key" in str(e).lower():
                return LOG_ORIGIN
            raise
        return _text(info.get("last-generated-id", LOG_ORIGIN.encode()))

    def ping(self) -> None:
        self._probe.ping()

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
        self._probe.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
