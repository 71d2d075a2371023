"""Shards are memory-mapped: the codes stay in the cached files, shared by the workers.

Regression: the service read shards with ``faiss.read_index(path)``, so every worker
held the whole file in private memory, re-ranking codes included (12x the index
report's resident figure at 512-d).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from service.snapshots.shard_cache import prune_shard_cache
from tests.service.conftest import AppFactory, BuiltSnapshot, vector_query
from vsearch.index.structure import refine_store_bytes


def mapped_files() -> set[str]:
    """Paths of the files this process has mapped (/proc/self/maps)."""
    with open("/proc/self/maps") as f:
        return {line.split(maxsplit=5)[5].strip() for line in f if len(line.split()) == 6}


def metric(text: str, name: str, label: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{kind="{label}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"{name}{{kind={label!r}}} not in /metrics")


def test_shards_and_id_lookups_are_mapped_and_the_budget_counts_private_and_scanned(
    built_snapshot: BuiltSnapshot, make_app: AppFactory
) -> None:
    app = make_app(built_snapshot.store)
    state = app.extensions["vsearch"]
    snap = state.registry.current
    cached = sorted(Path(state.registry.cache).glob("*.index"))
    assert len(cached) == len(built_snapshot.manifest.shards)
    maps = mapped_files()
    for path in cached:
        assert str(path) in maps, f"{path} is not memory-mapped"
        for lookup in (".ids.npy", ".where.npy"):
            assert str(path.with_suffix(lookup)) in maps, f"{path.stem}{lookup} is not mapped"

    memory = snap.memory
    refine = sum(refine_store_bytes(s.index) for s in snap.searcher.shards)
    assert refine > 0 and memory.refine == refine
    assert memory.scanned == snap.nbytes - refine + sum(
        s.stored.nbytes for s in snap.searcher.shards
    )
    # Private: quantizers, OPQ, the id maps: far below the files, re-ranking codes apart.
    assert 0 < memory.private < snap.nbytes - refine
    assert memory.resident == memory.private + memory.scanned

    client = app.test_client()
    r = vector_query(client, built_snapshot.xb[5], k=3)
    assert r.status_code == 200 and r.json["hits"][0]["id"] == int(built_snapshot.ids[5])
    text = client.get("/metrics").get_data(as_text=True)
    for kind in ("private", "scanned", "refine", "resident"):
        assert metric(text, "vsearch_snapshot_bytes", kind) == getattr(memory, kind)
    assert metric(text, "vsearch_process_memory_bytes", "rss_file") > 0
    assert metric(text, "vsearch_process_memory_bytes", "pss") > 0


def test_a_second_worker_maps_the_id_lookups_the_first_wrote(
    built_snapshot: BuiltSnapshot, make_app: AppFactory, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "shared-data")
    first = make_app(built_snapshot.store, "w1", DATA_DIR=data_dir)
    cache = Path(first.extensions["vsearch"].registry.cache)
    written = {p: p.stat().st_mtime_ns for p in cache.glob("*.npy")}
    assert len(written) == 2 * len(built_snapshot.manifest.shards)
    second = make_app(built_snapshot.store, "w2", DATA_DIR=data_dir)
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.npy")} == written  # reused
    item = int(built_snapshot.ids[17])
    for app in (first, second):
        r = app.test_client().post("/v1/search", json={"id": item, "k": 5})
        assert r.status_code == 200 and item not in [h["id"] for h in r.json["hits"]]


def test_pruning_the_cache_tolerates_files_another_worker_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers of one replica share the cache and prune it after each swap, concurrently."""
    files = [tmp_path / name for name in ("aaa.index", "aaa.ids.npy", "bbb.where.npy")]
    for path in [*files, tmp_path / "kept.index"]:
        path.write_bytes(b"x")
        os.utime(path, (time.time() - 10, time.time() - 10))
    real_stat = Path.stat

    def stat(self: Path, *args: Any, **kwargs: Any) -> os.stat_result:
        if self.name == "aaa.ids.npy" and os.path.exists(self):
            os.unlink(self)  # the other worker got there first
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    prune_shard_cache(tmp_path, keep={"kept"})
    assert [p.name for p in tmp_path.iterdir()] == ["kept.index"]
