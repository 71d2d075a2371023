"""The in-memory delta index: idempotent apply, tombstones, watermarks, exact search."""

from __future__ import annotations

import numpy as np

from vsearch.delta import DeltaEntry
from vsearch.delta.watermarks import LOG_ORIGIN
from vsearch.search import DeltaIndex

D = 8


def up(eid: str, item: int, seed: int) -> DeltaEntry:
    v = np.random.default_rng(seed).standard_normal(D).astype("float32")
    return DeltaEntry(eid, "upsert", item, v / np.linalg.norm(v), {"seed": seed})


def rm(eid: str, item: int) -> DeltaEntry:
    return DeltaEntry(eid, "delete", item, None, None)


def test_latest_entry_per_item_wins_whatever_the_arrival_order() -> None:
    a, b = DeltaIndex(D, "ip"), DeltaIndex(D, "ip")
    entries = [
        up("10-0", 1, 1),
        up("11-0", 2, 2),
        rm("12-0", 1),
        up("13-0", 2, 3),
        up("14-0", 1, 4),
    ]
    a.apply(entries)
    b.apply(list(reversed(entries)))
    b.apply(entries)  # replays are no-ops
    for index in (a, b):
        assert index.lookup(1, (0, 0)).tolist() == entries[4].vector.tolist()  # type: ignore[union-attr]
        assert index.lookup(2, (0, 0)).tolist() == entries[3].vector.tolist()  # type: ignore[union-attr]
        assert index.metadata([1, 2]) == {1: {"seed": 4}, 2: {"seed": 3}}
        assert index.upserts == 2


def test_search_is_exact_and_respects_the_watermark() -> None:
    index = DeltaIndex(D, "ip")
    entries = [up(f"{100 + i}-0", 1000 + i, i) for i in range(50)]
    index.apply(entries)
    q = entries[7].vector
    assert q is not None
    X = np.stack([e.vector for e in entries if e.vector is not None])
    truth = np.argsort(-(X @ q))[:5] + 1000
    _, ids = index.search(q[None], 5, (0, 0))
    assert ids[0].tolist() == truth.tolist()
    _, ids = index.search(q[None], 100, (120, 0))  # entries at or below 120-0 are in the base
    assert sorted(ids[0].tolist()) == list(range(1021, 1050))


def test_tombstones_hide_base_ids_only_above_the_watermark() -> None:
    index = DeltaIndex(D, "ip")
    index.apply([rm("50-0", 7), up("60-0", 8, 1)])
    base = np.array([7, 8, 9])
    assert index.hides(base, (0, 0)).tolist() == [True, True, False]
    assert index.hides(base, (55, 0)).tolist() == [False, True, False]
    assert index.lookup(7, (0, 0)) == "deleted" and index.lookup(9, (0, 0)) == "absent"


def test_compact_drops_folded_entries_and_refuses_older_replays() -> None:
    index = DeltaIndex(D, "ip")
    index.apply([up("10-0", 1, 1), up("20-0", 2, 2), rm("30-0", 3)])
    assert index.compact("20-0") == 2
    assert len(index) == 1 and index.upserts == 0
    index.apply([up("15-0", 1, 5)])  # below the floor: already in the snapshot
    assert index.lookup(1, (0, 0)) == "absent"
    index.reopen(LOG_ORIGIN)  # a rollback lowers the floor; the log replays what it needs
    index.apply([up("15-0", 1, 5)])
    assert isinstance(index.lookup(1, (0, 0)), np.ndarray)
    slots_before = len(index._ids)
    for i in range(100):
        index.apply([up(f"{100 + i}-0", 500, i)])  # rewriting one item reuses its slot
    assert len(index._ids) == slots_before
