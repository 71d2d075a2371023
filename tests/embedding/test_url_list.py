"""URL lists: fetched over real HTTP from 127.0.0.1, every failure recorded, none fatal."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.embedding.image_server import image_server
from tests.servers import free_port
from vsearch.sources import FAILED, SourceError, open_source
from vsearch.storage import LocalStore, ObjectStore

FAST: dict[str, Any] = {"read_timeout_s": 0.5, "connect_timeout_s": 0.5, "retries": 1,
                        "backoff_s": 0.05, "max_bytes": 2 << 20, "max_side": 256,
                        "concurrency": 4}  # fmt: skip


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, int]]]:
    with image_server() as running:
        yield running


def _rows(base: str) -> list[dict[str, str]]:
    closed_port = free_port()  # nothing listens there: connection refused
    return [
        {"url": f"{base}/ok/1.jpg", "key": "one", "caption": "first", "licence": "cc-by"},
        {"url": f"{base}/ok/2.jpg", "key": "two", "caption": "second"},
        {"url": f"{base}/big.jpg", "key": "big", "caption": "large photo"},
        {"url": f"{base}/no-content-type.png", "key": "png", "caption": ""},
        {"url": f"{base}/flaky.jpg", "key": "flaky", "caption": "503 then ok"},
        {"url": f"{base}/redirect.jpg", "key": "moved", "caption": "302"},
        {"url": f"{base}/missing.jpg", "key": "missing", "caption": "404"},
        {"url": f"{base}/page.html", "key": "html", "caption": "not an image"},
        {"url": f"{base}/truncated.jpg", "key": "trunc", "caption": "truncated"},
        {"url": f"{base}/bomb.png", "key": "bomb", "caption": "decompression bomb"},
        {"url": f"{base}/huge.jpg", "key": "huge", "caption": "over max_bytes"},
        {"url": f"{base}/slow.jpg", "key": "slow", "caption": "times out"},
        {"url": f"http://127.0.0.1:{closed_port}/x.jpg", "key": "refused", "caption": ""},
        {"url": "ftp://example.invalid/x.jpg", "key": "ftp", "caption": ""},
        {"url": f"{base}/ok/3.jpg", "key": "one", "caption": "duplicate key"},
    ]


EXPECTED_FAILURES = {
    "missing": "http-404",
    "html": "content-type:text/html",
    "trunc": "truncated",
    "bomb": "too-many-pixels",
    "huge": "too-large",
    "slow": "timeout",
    "refused": "connection-error",
    "ftp": "bad-url",
    "one": "duplicate-key",
}


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["url", "key", "caption", "licence"])
        writer.writeheader()
        writer.writerows(rows)


def test_fetch_records_every_failure_and_keeps_the_rest(
    server: tuple[str, dict[str, int]], tmp_path: Path, store: ObjectStore
) -> None:
    base, hits = server
    _write_csv(tmp_path / "list.csv", _rows(base))
    uri = str(tmp_path / "list.csv")
    source = open_source(uri, store=store, dataset="web", shard_size=100, **FAST)
    (spec,) = source.partitions()
    stats = open_source(uri, store=store, dataset="web", shard_size=100, **FAST).fetch(spec)

    assert (stats["rows"], stats["ok"], stats["failed"]) == (15, 6, 9)
    assert {f["key"]: f["reason"] for f in stats["failures"]} == EXPECTED_FAILURES
    assert hits["/flaky.jpg"] == 2  # retried after the 503
    assert store.exists("images/web/00000.tar")
    assert json.loads(store.get("images/web/00000.stats.json")) == stats

    items = list(source.items(spec))
    good = {i.key: i for i in items if not i.metadata.get(FAILED)}
    assert set(good) == {f"web/{k}" for k in ["one", "two", "big", "png", "flaky", "moved"]}
    assert good["web/one"].caption == "first" and good["web/one"].metadata["licence"] == "cc-by"
    big = good["web/big"].metadata
    assert (big["original_width"], big["width"], big["height"]) == (1600, 256, 192)
    failed = {i.key: i.metadata[FAILED] for i in items if i.metadata.get(FAILED)}
    assert failed == {f"web/{k}": f"fetch:{r}" for k, r in EXPECTED_FAILURES.items()}

    # Done once: a second fetch (a retry of the task) downloads nothing.
    before = dict(hits)
    etag = store.head("images/web/00000.tar").etag
    assert open_source(uri, store=store, dataset="web", shard_size=100, **FAST).fetch(spec) == stats
    assert hits == before and store.head("images/web/00000.tar").etag == etag


def test_jsonl_list_from_the_store_in_shards(
    server: tuple[str, dict[str, int]], tmp_path: Path
) -> None:
    base, _ = server
    store = LocalStore(tmp_path / "store")
    lines = [json.dumps({"url": f"{base}/ok/{i}.jpg", "caption": f"image {i}"}) for i in range(5)]
    store.put("lists/five.jsonl", ("\n".join(lines) + "\n").encode())
    source = open_source("store:lists/five.jsonl", store=store, shard_size=2, **FAST)
    specs = source.partitions()
    assert [(s["start"], s["stop"], s["dataset"]) for s in specs] == [
        (0, 2, "five"), (2, 4, "five"), (4, 5, "five"),
    ]  # fmt: skip
    keys = [i.key for s in specs for i in source.items(s)]
    assert keys == [f"five/{i:09d}" for i in range(5)]  # row numbers when there is no key
    assert sorted(k.key for k in store.list("images/five/")) == [
        f"images/five/{i:05d}.{ext}" for i in range(3) for ext in ("stats.json", "tar")
    ]


def test_bad_lists_are_clear_errors(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    (tmp_path / "bad.jsonl").write_text('{"url": "x"}\nnot json\n')
    with pytest.raises(SourceError, match="line 2 is not JSON"):
        open_source(str(tmp_path / "bad.jsonl"), store=store).partitions()
    (tmp_path / "empty.csv").write_text("url,caption\n")
    with pytest.raises(SourceError, match="empty"):
        open_source(str(tmp_path / "empty.csv"), store=store).partitions()
    with pytest.raises(SourceError, match="unknown option"):
        open_source(str(tmp_path / "empty.csv"), store=store, colour="red")
    with pytest.raises(SourceError, match="dataset name"):
        open_source(str(tmp_path / "empty.csv"), store=store, dataset="../x")


def test_parquet_lists_need_pyarrow_and_say_so(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    try:
        import pyarrow  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        (tmp_path / "list.parquet").write_bytes(b"PAR1")
        with pytest.raises(SourceError, match="needs pyarrow"):
            open_source(str(tmp_path / "list.parquet"), store=store).partitions()
        return
    import pyarrow as pa  # type: ignore[import-not-found,unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-not-found,unused-ignore]

    buf = io.BytesIO()
    pq.write_table(pa.table({"url": ["http://127.0.0.1:1/a.jpg"], "caption": ["a"]}), buf)
    (tmp_path / "list.parquet").write_bytes(buf.getvalue())
    (spec,) = open_source(str(tmp_path / "list.parquet"), store=store).partitions()
    assert (spec["start"], spec["stop"]) == (0, 1)


def test_a_shard_of_which_the_network_let_nothing_through_is_retried(
    tmp_path: Path, store: ObjectStore
) -> None:
    """Every download refused (the servers, or the network, down): the shard is not stored
    as all-failed but raises a transient error; once the server is up, the retry fetches."""
    from vsearch.sources.fetch import FetchUnavailable
    from vsearch.stages import is_permanent

    port = free_port()  # nothing listens there yet
    rows = [{"url": f"http://127.0.0.1:{port}/ok/{i}.jpg", "key": f"k{i}"} for i in range(3)]
    _write_csv(tmp_path / "list.csv", rows)
    uri = str(tmp_path / "list.csv")
    (spec,) = open_source(uri, store=store, dataset="web", **FAST).partitions()
    with pytest.raises(FetchUnavailable, match="none of 3 images") as down:
        open_source(uri, store=store, dataset="web", **FAST).fetch(spec)
    assert not is_permanent(down.value)
    assert not store.exists("images/web/00000.stats.json")
    with image_server(port):
        stats = open_source(uri, store=store, dataset="web", **FAST).fetch(spec)
    assert (stats["ok"], stats["failed"]) == (3, 0)


def test_a_shard_with_only_final_failures_is_stored(tmp_path: Path, store: ObjectStore) -> None:
    """Nothing came, but for reasons a retry cannot fix (404): recorded, not retried."""
    with image_server() as (base, _):
        _write_csv(tmp_path / "list.csv", [{"url": f"{base}/missing.jpg", "key": "gone"}])
        uri = str(tmp_path / "list.csv")
        (spec,) = open_source(uri, store=store, dataset="web", **FAST).partitions()
        stats = open_source(uri, store=store, dataset="web", **FAST).fetch(spec)
    assert (stats["ok"], stats["reasons"]) == (0, {"http-404": 1})
    assert store.exists("images/web/00000.stats.json")


def test_a_host_dripping_bytes_is_given_up_at_the_total_deadline(
    server: tuple[str, dict[str, int]], tmp_path: Path, store: ObjectStore
) -> None:
    """Every byte comes well within the read timeout, so only the total deadline can stop
    the download; the worker records the row as failed and fetches the rest."""
    base, _ = server
    rows = [{"url": f"{base}/drip.jpg", "key": "drip", "caption": "tarpit"},
            {"url": f"{base}/ok/1.jpg", "key": "one", "caption": "fine"}]  # fmt: skip
    _write_csv(tmp_path / "list.csv", rows)
    options = {**FAST, "read_timeout_s": 2.0, "total_timeout_s": 1.5, "retries": 0}
    source = open_source(str(tmp_path / "list.csv"), store=store, dataset="web", **options)
    (spec,) = source.partitions()
    started = time.monotonic()
    stats = source.fetch(spec)
    elapsed = time.monotonic() - started

    assert elapsed < 1.5 + 2.0, f"held {elapsed:.1f}s by a host dripping bytes"
    assert (stats["ok"], stats["failures"]) == (1, [
        {"key": "drip", "url": f"{base}/drip.jpg", "reason": "timeout"}])  # fmt: skip
