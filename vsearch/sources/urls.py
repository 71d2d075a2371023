"""URL lists (CSV, JSONL, Parquet): fetched once into webdataset shards in the store.

A list has a ``url`` column and optionally ``key`` and ``caption`` (other
columns are kept as metadata). Rows are cut into shards of ``shard_size``;
``fetch_partition`` downloads one shard with bounded concurrency and writes

- ``images/{dataset}/{shard:05d}.tar``: the images that made it, as JPEG, with
  ``.txt`` captions and ``.json`` metadata (url, sizes, extra columns);
- ``images/{dataset}/{shard:05d}.stats.json``: ok / failed counts, failures by
  reason, and every failed row's key, url and reason. Written last: a shard is
  fetched once it exists, and a rerun does nothing. A shard of which no image came,
  every one for a network reason (refused, timed out, 5xx, 429), is not stored: it
  raises ``FetchUnavailable``, and a retry of the task fetches it again.

Reading a shard's items yields the images, then one item per failed row with
empty bytes and the reason in ``metadata["_failed"]``, so that the embedding
stage's failures file accounts for every row of the list.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vsearch.canonical_json import json_bytes
from vsearch.sources.fetch import Fetcher, FetchFailed, FetchOptions, FetchUnavailable
from vsearch.sources.source_base import (
    FAILED,
    Item,
    PartitionSpec,
    SourceError,
    chunk_bounds,
    digest,
)
from vsearch.sources.webdataset import ShardWriter, iter_samples
from vsearch.storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

LIST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")
_DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_-]")


def shard_keys(dataset: str, shard: int) -> tuple[str, str]:
    """(tar key, stats key) of one fetched shard."""
    return f"images/{dataset}/{shard:05d}.tar", f"images/{dataset}/{shard:05d}.stats.json"


def parse_url_list(data: bytes, name: str) -> list[dict[str, Any]]:
    """Rows of a CSV/TSV/JSONL/Parquet URL list as dicts; the format comes from ``name``."""
    lower = name.lower()
    if lower.endswith((".csv", ".tsv")):
        text = data.decode("utf-8-sig")
        delimiter = "\t" if lower.endswith(".tsv") else ","
        return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
    if lower.endswith((".jsonl", ".ndjson")):
        rows = []
        for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise SourceError(f"{name}: line {n} is not JSON: {e}") from None
                rows.append(row if isinstance(row, dict) else {"url": row})
        return rows
    if lower.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise SourceError(
                f"{name}: reading Parquet URL lists needs pyarrow, which is not installed "
                "(pip install pyarrow); CSV and JSONL lists need nothing extra"
            ) from None
        rows_pq: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
        return rows_pq
    raise SourceError(f"{name}: unknown URL list format; use one of {', '.join(LIST_SUFFIXES)}")


class UrlListSource:
    """See the module docstring. ``read_list`` returns the list file's bytes."""

    def __init__(
        self,
        uri: str,
        read_list: Callable[[], bytes],
        *,
        store: ObjectStore,
        dataset: str,
        shard_size: int = 10_000,
        url_column: str = "url",
        key_column: str = "key",
        caption_column: str = "caption",
        fetch_options: FetchOptions | None = None,
    ) -> None:
        if not _DATASET_RE.match(dataset):
            raise SourceError(f"dataset name {dataset!r}: use letters, digits, '.', '_', '-'")
        self.uri = uri
        self.store = store
        self.dataset = dataset
        self.shard_size = shard_size
        self.columns = (url_column, key_column, caption_column)
        self.fetch_options = fetch_options or FetchOptions()
        self._read_list = read_list
        self._rows: list[dict[str, Any]] | None = None

    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = parse_url_list(self._read_list(), self.uri.split("?")[0])
        return self._rows

    def partitions(self) -> list[PartitionSpec]:
        rows = self.rows()
        if not rows:
            raise SourceError(f"{self.uri}: the URL list is empty")
        listing = digest(rows)
        return [
            {"source": self.uri, "kind": "urls", "index": i, "dataset": self.dataset,
             "start": a, "stop": b, "listing": listing}
            for i, (a, b) in enumerate(chunk_bounds(len(rows), self.shard_size))
        ]  # fmt: skip

    def _shard_rows(self, spec: PartitionSpec) -> list[dict[str, Any]]:
        if spec.get("source") != self.uri or spec.get("kind") != "urls":
            raise SourceError(f"partition {spec!r} is not one of URL list {self.uri!r}")
        rows = self.rows()
        if digest(rows) != spec["listing"]:
            raise SourceError(f"{self.uri}: the URL list changed since its partitions were made")
        return rows[spec["start"] : spec["stop"]]

    def fetch(
        self, spec: PartitionSpec, *, progress: Callable[[int], object] | None = None
    ) -> dict[str, Any]:
        """Download one shard into the store (once); returns its stats."""
        tar_key, stats_key = shard_keys(self.dataset, spec["index"])
        try:
            stats: dict[str, Any] = json.loads(self.store.get(stats_key))
            if stats.get("listing") == spec["listing"]:
                log.info("%s already fetched (%d ok, %d failed)", tar_key, stats["ok"],
                         stats["failed"])  # fmt: skip
                return stats
        except ObjectNotFound:
            pass
        started = time.monotonic()
        rows = self._shard_rows(spec)
        url_col, key_col, caption_col = self.columns
        fetcher = Fetcher(self.fetch_options)
        writer, failures, seen = ShardWriter(), [], set()
        network_failures = 0

        def one(row_number: int, row: dict[str, Any]) -> tuple[str, dict[str, Any], Any]:
            key = _row_key(row.get(key_col), row_number)
            url = str(row.get(url_col) or "")
            try:
                result: Any = fetcher.fetch(url) if url else FetchFailed("no-url")
            except FetchFailed as e:
                result = e
            return key, row, result

        with ThreadPoolExecutor(self.fetch_options.concurrency) as pool:
            for key, row, result in pool.map(one, range(spec["start"], spec["stop"]), rows):
                url = str(row.get(url_col) or "")
                if key in seen:
                    result = FetchFailed("duplicate-key")
                seen.add(key)
                if isinstance(result, FetchFailed):
                    failures.append({"key": key, "url": url, "reason": result.reason})
                    network_failures += result.retryable
                else:
                    extra = {k: v for k, v in row.items() if k not in self.columns}
                    caption = row.get(caption_col)
                    writer.add(key, result.jpeg, None if caption is None else str(caption), {
                        **extra, "url": url, "key": key, "width": result.width,
                        "height": result.height, "original_width": result.original_width,
                        "original_height": result.original_height,
                    })  # fmt: skip
                if progress:
                    progress(1)
        if rows and writer.count == 0 and network_failures == len(failures):
            # Nothing came, all for network reasons (refused, timeouts, 5xx, 429): the
            # network or the servers are down. Store nothing, so that a retry fetches again.
            reasons = dict(Counter(f["reason"] for f in failures))
            raise FetchUnavailable(
                f"{self.uri} shard {spec['index']}: none of {len(rows)} images could be "
                f"downloaded, all for network reasons {reasons}; nothing stored"
            )
        stats = {
            "dataset": self.dataset, "shard": spec["index"], "source": self.uri,
            "listing": spec["listing"], "rows": len(rows), "ok": writer.count,
            "failed": len(failures), "reasons": dict(Counter(f["reason"] for f in failures)),
            "failures": failures, "elapsed_s": round(time.monotonic() - started, 3),
        }  # fmt: skip
        self.store.put(tar_key, writer.getvalue())
        self.store.put(stats_key, json_bytes(stats))
        log.info("fetched %s: %d ok, %d failed %s", tar_key, stats["ok"], stats["failed"],
                 stats["reasons"])  # fmt: skip
        return stats

    def items(self, spec: PartitionSpec) -> Iterator[Item]:
        stats = self.fetch(spec)
        tar_key, _ = shard_keys(self.dataset, spec["index"])
        with self.store.open(tar_key) as stream:
            yield from iter_samples(stream, key_prefix=f"{self.dataset}/")
        for failure in stats["failures"]:
            key = f"{self.dataset}/{failure['key']}"
            reason = f"fetch:{failure['reason']}"
            yield Item(key, b"", None, {"url": failure["url"], FAILED: reason})

    def fingerprint(self, spec: PartitionSpec) -> str:
        self.fetch(spec)
        tar_key, stats_key = shard_keys(self.dataset, spec["index"])
        heads = [self.store.head(k) for k in (tar_key, stats_key)]
        versions = [(h.key, h.etag, h.size) for h in heads]
        return digest(spec, versions)


def _row_key(value: Any, row_number: int) -> str:
    if value is None or value == "":
        return f"{row_number:09d}"
    cleaned = _UNSAFE_KEY.sub("_", str(value))[:200]
    return cleaned or f"{row_number:09d}"
