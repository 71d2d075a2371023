"""The delta log on both backends: order, ids, ranges, trimming, and Redis durability."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.service.redis_proc import KillableRedis
from vsearch.delta import DeltaLog, DeltaWrite, open_delta_log, parse_entry_id


@pytest.fixture(scope="module")
def redis_for_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillableRedis]:
    server = KillableRedis(tmp_path_factory.mktemp("redis-log"), appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def delta_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeltaLog]:
    if request.param == "sqlite":
        log = open_delta_log(f"sqlite://{tmp_path}/delta.sqlite3")
    else:
        server: KillableRedis = request.getfixturevalue("redis_for_logs")
        log = open_delta_log(server.url)
        log.client.flushdb()  # type: ignore[attr-defined]
    yield log
    log.close()


def upsert(item: int, value: float = 1.0) -> DeltaWrite:
    return DeltaWrite("upsert", item, np.full(4, value, "float32"), {"n": item})


def test_entries_come_back_in_order_with_increasing_ms_seq_ids(delta_log: DeltaLog) -> None:
    assert delta_log.last_id() == "0-0" and delta_log.first_id() is None
    written = delta_log.append([upsert(i) for i in range(5)]) + delta_log.append(
        [DeltaWrite("delete", 3)]
    )
    keys = [parse_entry_id(e.id) for e in written]
    assert keys == sorted(keys) and len(set(keys)) == 6
    back = delta_log.read()
    assert [(e.id, e.op, e.item) for e in back] == [(e.id, e.op, e.item) for e in written]
    assert back[0].metadata == {"n": 0} and back[0].vector is not None
    assert np.array_equal(back[0].vector, np.full(4, 1.0, "float32"))
    assert back[-1].vector is None and back[-1].op == "delete"
    assert delta_log.last_id() == written[-1].id
    assert delta_log.first_id() == written[0].id
    assert [e.item for e in delta_log.read(after=written[1].id, upto=written[3].id)] == [2, 3]
    assert delta_log.read(after=written[-1].id) == []


def test_an_upsert_carries_its_thumbnail(delta_log: DeltaLog) -> None:
    thumb = b"RIFF\x00\x00\x00\x00WEBP" + bytes(range(256)) * 4
    written = delta_log.append(
        [DeltaWrite("upsert", 1, np.ones(4, "float32"), {}, thumbnail=thumb), upsert(2)]
    )
    assert written[0].thumbnail == thumb and written[1].thumbnail is None
    back = delta_log.read()
    assert [e.thumbnail for e in back] == [thumb, None]
    assert delta_log.tail("0-0", 0.1)[0].thumbnail == thumb
    assert delta_log.thumbnail(written[0].id) == thumb  # one entry, by id
    assert delta_log.thumbnail(written[1].id) is None
    assert delta_log.thumbnail("1-0") is None  # no such entry


def test_a_sqlite_log_from_before_thumbnails_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the schema before thumbnails existed
        db.execute(
            "CREATE TABLE entries (ms INTEGER NOT NULL, seq INTEGER NOT NULL, op TEXT NOT NULL,"
            " item INTEGER NOT NULL, vector BLOB, metadata TEXT, PRIMARY KEY (ms, seq))"
            " WITHOUT ROWID"
        )
        db.execute("INSERT INTO entries VALUES (5, 0, 'delete', 9, NULL, NULL)")
    log = open_delta_log(f"sqlite://{path}")
    try:
        assert [(e.id, e.op, e.item, e.thumbnail) for e in log.read()] == [
            ("5-0", "delete", 9, None)
        ]
        log.append([DeltaWrite("upsert", 1, np.ones(4, "float32"), {}, thumbnail=b"t")])
        assert log.read()[-1].thumbnail == b"t"
    finally:
        log.close()


def test_a_reachable_log_answers_pings(delta_log: DeltaLog) -> None:
    delta_log.ping()  # what /readyz asks (cached), on both backends


def test_tail_returns_new_entries_and_waits_when_there_are_none(delta_log: DeltaLog) -> None:
    last = delta_log.last_id()
    t = time.monotonic()
    assert delta_log.tail(last, 0.2) == []
    assert time.monotonic() - t >= 0.15
    e = delta_log.append([upsert(7)])
    assert [x.id for x in delta_log.tail(last, 1.0)] == [e[0].id]


def test_trim_only_below_the_oldest_served_watermark(delta_log: DeltaLog) -> None:
    written = delta_log.append([upsert(i) for i in range(6)])
    assert delta_log.trim_to_served() == 0  # no replica has said what it serves
    delta_log.record_served("replica-a", written[4].id, ttl_s=60)
    delta_log.record_served("replica-b", written[2].id, ttl_s=60)
    assert delta_log.oldest_served() == written[2].id
    assert delta_log.trim_to_served() == 2
    assert [e.item for e in delta_log.read()] == [2, 3, 4, 5]
    delta_log.record_served("replica-b", written[1].id, ttl_s=0.05)  # expires: no longer served
    time.sleep(0.2)
    assert delta_log.oldest_served() == written[4].id
    delta_log.trim_to_served()
    assert [e.item for e in delta_log.read()] == [4, 5]
    assert delta_log.last_id() == written[-1].id  # ids keep growing after a trim
    later = delta_log.append([upsert(9)])
    assert parse_entry_id(later[0].id) > parse_entry_id(written[-1].id)


@pytest.mark.parametrize("appendonly", [True, False])
def test_acknowledged_redis_writes_survive_a_kill_only_with_appendfsync_always(
    tmp_path: Path, appendonly: bool
) -> None:
    """appendonly yes + appendfsync always: every acknowledged XADD is on disk before the reply.

    The contrast (appendonly no, no RDB) shows the test detects a loss.
    """
    server = KillableRedis(tmp_path / "redis", appendonly=appendonly, appendfsync="always")
    server.start()
    try:
        log = open_delta_log(server.url)
        written = []
        for i in range(20):
            written += log.append([upsert(i)])
        log.close()
        server.kill()
        server.start()
        log = open_delta_log(server.url)
        survived = [e.id for e in log.read()]
        log.close()
    finally:
        server.stop()
    if appendonly:
        assert survived == [e.id for e in written]
    else:
        assert survived == []
