"""The compact stage on the embedded defaults (local store, SQLite delta log), without
Airflow: the delta is folded into a new snapshot, a retry rewrites nothing, and a
deleted id never returns through search, neither from the folded base nor from the log.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.app import close_app, create_app
from tests.fixtures.photos import PHOTOS_SID, PhotoSnapshot
from tests.index.snapshots import SID, planned
from vsearch import stages
from vsearch.catalog import read_current, verify_objects
from vsearch.config import Settings
from vsearch.delta import DeltaWrite, open_delta_log
from vsearch.embedding.partitions import list_partitions, read_partition
from vsearch.embedding.thumbnails import make_thumbnail
from vsearch.storage import LocalStore

COMPACTED = "20260301T060000Z-c"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(environ={}, data_dir=str(tmp_path / "data"))


@pytest.fixture
def base(tmp_path: Path, settings: Settings) -> tuple[LocalStore, np.ndarray, np.ndarray]:
    store = LocalStore(settings.store)
    xb, ids = planned(store, tmp_path / "vectors", n=2000, nfiles=2)
    stages.build_index(store, SID, train_options={"nq": 100, "factory": "IDMap,IVF16,Flat"},
                       validate_options={"target_recall": 0.9}, settings=settings)  # fmt: skip
    return store, xb, ids


def searched_ids(store: LocalStore, settings: Settings, tmp_path: Path, x: np.ndarray) -> set[int]:
    """Ids of an exact top-50 search for ``x`` through the service on the live snapshot."""
    app = create_app({"SETTINGS": settings, "STORE_OBJECT": store, "LOAD_ON_START": "sync",
                      "WATCH_INTERVAL_S": 0, "REPLICA_ID": "test"})  # fmt: skip
    try:
        r = app.test_client().post("/v1/search", json={"vector": x.tolist(), "k": 50,
                                                        "exact": True})  # fmt: skip
        assert r.status_code == 200, r.json
        return {h["id"] for h in r.json["hits"]}
    finally:
        close_app(app)


@pytest.fixture
def delta(settings: Settings) -> Iterator[object]:
    log = open_delta_log(settings.delta_log)
    yield log
    log.close()


def test_compaction_folds_the_delta_and_deleted_ids_never_return(
    base: tuple[LocalStore, np.ndarray, np.ndarray], settings: Settings, delta: object,
    tmp_path: Path,
) -> None:  # fmt: skip
    store, xb, ids = base
    deleted, replaced, new = int(ids[0]), int(ids[1]), 77
    assert deleted in searched_ids(store, settings, tmp_path, xb[0])
    moved = xb[2] + 0.01  # the replaced item moves next to item 2
    delta.append([  # type: ignore[attr-defined]
        DeltaWrite("upsert", new, xb[3], {"key": "new/77"}),
        DeltaWrite("delete", deleted),
        DeltaWrite("upsert", replaced, moved / np.linalg.norm(moved), {"key": "replaced"}),
        DeltaWrite("upsert", deleted, xb[0], {"key": "back for a moment"}),
        DeltaWrite("delete", deleted),  # the last write wins: deleted
    ])  # fmt: skip
    watermark = delta.last_id()  # type: ignore[attr-defined]
    assert stages.delta_backlog(store, settings) == 5

    summary = stages.compact(store, COMPACTED, settings=settings)
    assert (summary["entries"], summary["upserts"], summary["deletes"]) == (5, 2, 1)
    assert summary["delta_watermark"] == watermark
    before = {i.key: i.etag for i in store.list(f"embeddings/{COMPACTED}/")}
    assert stages.compact(store, COMPACTED, settings=settings) == summary  # a retry
    assert {i.key: i.etag for i in store.list(f"embeddings/{COMPACTED}/")} == before
    stages.complete_snapshot(store, COMPACTED, validate_options={"target_recall": 0.9},
                             settings=settings)  # fmt: skip

    live = read_current(store)
    assert live is not None and live.snapshot_id == COMPACTED
    assert live.delta_watermark == watermark and live.previous_snapshot_id == SID
    assert verify_objects(store, live) == [] and live.ntotal == len(ids)  # +1 new, -1 deleted
    folded: set[int] = set()
    for i in list_partitions(store, COMPACTED):
        folded |= {int(x) for x in read_partition(store, COMPACTED, i)[1]}
    assert deleted not in folded and {new, replaced} <= folded
    assert stages.delta_backlog(store, settings) == 0

    # Through the service: the base no longer holds it, and the log above the watermark
    # (empty) cannot bring it back; a later write can, and only then.
    assert deleted not in searched_ids(store, settings, tmp_path, xb[0])
    hits = searched_ids(store, settings, tmp_path, xb[2])
    assert replaced in hits
    delta.append([DeltaWrite("upsert", 5, xb[0], {"key": "unrelated"})])  # type: ignore[attr-defined]
    assert deleted not in searched_ids(store, settings, tmp_path, xb[0])


def test_compaction_needs_a_live_snapshot_and_a_newer_id(
    base: tuple[LocalStore, np.ndarray, np.ndarray], settings: Settings, tmp_path: Path
) -> None:
    store, _, _ = base
    with pytest.raises(stages.StageError, match="not newer than the live"):
        stages.compact(store, "20260201T000000Z-c", settings=settings)
    empty = LocalStore(tmp_path / "empty")
    with pytest.raises(stages.StageError, match="nothing is published"):
        stages.compact(empty, COMPACTED, settings=settings)
    assert stages.delta_backlog(empty, settings) == 0


def test_compaction_carries_thumbnails_of_kept_items_and_of_upserts(
    photo_snapshot: PhotoSnapshot, settings: Settings, delta: object, tmp_path: Path
) -> None:
    store = LocalStore(settings.store)
    shutil.copytree(photo_snapshot.store.root, store.root, dirs_exist_ok=True)
    keys = list(photo_snapshot.photos)
    deleted, replaced = photo_snapshot.id_of(keys[0]), photo_snapshot.id_of(keys[1])
    kept = photo_snapshot.id_of(keys[2])
    dim = photo_snapshot.manifest.encoder.dim
    x = np.full(dim, dim**-0.5, "float32")
    thumb = make_thumbnail(Image.new("RGB", (300, 200), (10, 120, 200)))
    delta.append([  # type: ignore[attr-defined]
        DeltaWrite("upsert", 77, x, {"key": "new/77"}, thumbnail=thumb),
        DeltaWrite("delete", deleted),
        DeltaWrite("upsert", replaced, x, {"key": "replaced, no image"}),
    ])  # fmt: skip
    compacted = f"{PHOTOS_SID}-c"
    stages.compact(store, compacted, settings=settings)
    stages.complete_snapshot(store, compacted, settings=settings)
    live = read_current(store)
    assert live is not None and live.snapshot_id == compacted and live.thumbnails is not None
    assert live.thumbnails.count == 256 - 2 + 1 and verify_objects(store, live) == []

    app = create_app({"SETTINGS": settings, "STORE_OBJECT": store, "LOAD_ON_START": "sync",
                      "WATCH_INTERVAL_S": 0, "REPLICA_ID": "test"})  # fmt: skip
    try:
        client = app.test_client()
        new = client.get("/v1/items/77/thumbnail")  # folded: now from the new snapshot's pack
        assert new.status_code == 200 and new.data == thumb
        assert not new.headers["ETag"].startswith('"d-')
        old = photo_snapshot.store  # the base partition's bytes, carried over unchanged
        assert client.get(f"/v1/items/{kept}/thumbnail").data == _base_thumbnail(old, kept)
        for item, why in ((deleted, "is not in"), (replaced, "has no thumbnail")):
            r = client.get(f"/v1/items/{item}/thumbnail")
            assert r.status_code == 404 and why in r.json["error"]["message"]
    finally:
        close_app(app)


def _base_thumbnail(store: LocalStore, item: int) -> bytes:
    from vsearch.embedding.partitions import read_record, read_thumbnails

    for i in list_partitions(store, PHOTOS_SID):
        record = read_record(store, PHOTOS_SID, i)
        assert record is not None
        found = read_thumbnails(store, record)
        if item in found:
            return found[item]
    raise AssertionError(f"{item} has no thumbnail in {PHOTOS_SID}")
