"""The ObjectStore contract, run against a local directory and S3 over HTTP (moto server)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from tests.conftest import make_s3_store
from vsearch.storage import (
    InvalidKey,
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
)


class FailingStream(io.RawIOBase):
    """Yields ``size`` bytes, then breaks, like a network read that dies mid-upload."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise ConnectionResetError("source died mid-stream")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


def test_put_get_roundtrip_reports_sha256(store: ObjectStore) -> None:
    data = os.urandom(100_000)
    info = store.put("a/b/c.bin", data)
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get("a/b/c.bin") == data
    assert store.head("a/b/c.bin").size == len(data)
    assert store.sha256("a/b/c.bin") == (info.sha256, len(data))


def test_streaming_put_of_a_large_object(store: ObjectStore, tmp_path: Path) -> None:
    data = os.urandom(12 << 20)  # above the S3 multipart threshold used below
    if not isinstance(store, LocalStore):
        store = make_s3_store(store.client.meta.endpoint_url, multipart_threshold=8 << 20)
    info = store.put("big/blob.bin", io.BytesIO(data))
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    got = store.download_file("big/blob.bin", tmp_path / "out" / "blob.bin")
    assert got.sha256 == info.sha256
    assert (tmp_path / "out" / "blob.bin").read_bytes() == data
    assert not list((tmp_path / "out").glob(".*.part"))


def test_ranged_reads(store: ObjectStore) -> None:
    data = os.urandom(10_000)
    store.put("r/pack.bin", data)
    assert store.get_range("r/pack.bin", 0, 10) == data[:10]
    assert store.get_range("r/pack.bin", 1234, 567) == data[1234:1801]
    assert store.get_range("r/pack.bin", 9_990, 100) == data[9_990:]  # short at the end
    assert store.get_range("r/pack.bin", 20_000, 5) == b""
    assert store.get_range("r/pack.bin", 5, 0) == b""
    with pytest.raises(ObjectNotFound):
        store.get_range("r/none.bin", 0, 5)
    with pytest.raises(ValueError):
        store.get_range("r/pack.bin", -1, 5)


def test_missing_object(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get("nope")
    with pytest.raises(ObjectNotFound):
        store.head("nope")
    assert not store.exists("nope")
    store.delete("nope")  # deleting a missing key is fine


def test_list_by_prefix_in_key_order(store: ObjectStore) -> None:
    for key in ["m/b.json", "m/a.json", "m/sub/c.json", "mx/d.json", "other/e"]:
        store.put(key, key.encode())
    assert [i.key for i in store.list("m/")] == ["m/a.json", "m/b.json", "m/sub/c.json"]
    assert [i.key for i in store.list("m")] == ["m/a.json", "m/b.json", "m/sub/c.json", "mx/d.json"]
    assert [i.key for i in store.list("m/a")] == ["m/a.json"]
    assert len(list(store.list())) == 5
    assert list(store.list("zzz/")) == []


def test_put_if_absent(store: ObjectStore) -> None:
    store.put_if_absent("k", b"first")
    with pytest.raises(PreconditionFailed):
        store.put_if_absent("k", b"second")
    assert store.get("k") == b"first"


def test_compare_and_swap(store: ObjectStore) -> None:
    first = store.compare_and_swap("ptr", b"1", None)
    second = store.compare_and_swap("ptr", b"2", first.etag)
    assert store.get("ptr") == b"2"
    with pytest.raises(PreconditionFailed):  # stale etag
        store.compare_and_swap("ptr", b"3", first.etag)
    with pytest.raises(PreconditionFailed):  # "only if absent", but it exists
        store.compare_and_swap("ptr", b"3", None)
    with pytest.raises(PreconditionFailed):  # If-Match on a key that does not exist
        store.compare_and_swap("other", b"3", second.etag)
    assert store.get("ptr") == b"2"
    data, info = store.get_with_info("ptr")
    assert (data, info.etag) == (b"2", second.etag)


def test_rewriting_same_content_still_changes_local_etag(tmp_path: Path) -> None:
    """Regression guard for ABA: an etag must not repeat after the key was rewritten."""
    store = LocalStore(tmp_path)
    etags = {store.put("k", b"same").etag for _ in range(50)}
    assert len(etags) == 50


def test_concurrent_cas_on_local_store_has_one_winner(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    etag = store.put("ptr", b"0").etag
    barrier = threading.Barrier(8)
    wins: list[int] = []

    def contender(i: int) -> None:
        barrier.wait()
        try:
            store.compare_and_swap("ptr", str(i).encode(), etag)
            wins.append(i)
        except PreconditionFailed:
            pass

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get("ptr") == str(wins[0]).encode()


@pytest.mark.parametrize("size", [1000, 20 << 20])
def test_a_failed_upload_leaves_no_partial_object(store: ObjectStore, size: int) -> None:
    if not isinstance(store, LocalStore):
        store = make_s3_store(store.client.meta.endpoint_url, multipart_threshold=8 << 20)
    store.put("obj", b"old")
    with pytest.raises(Exception, match="mid-stream"):
        store.put("obj", FailingStream(size))
    with pytest.raises(Exception, match="mid-stream"):
        store.put("fresh", FailingStream(size))
    assert store.get("obj") == b"old"
    assert not store.exists("fresh")
    assert [i.key for i in store.list()] == ["obj"]


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "a/../b", "../x", "a/./b", "dir/", ".vsearch-tmp/x"]
)
def test_invalid_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put(key, b"x")


def test_local_store_writes_leave_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a", b"1")
    store.put("a", io.BytesIO(b"2"))
    assert list((tmp_path / ".vsearch-tmp").iterdir()) == []
    assert [i.key for i in store.list()] == ["a"]
