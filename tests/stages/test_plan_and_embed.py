"""The first stages: ``plan`` writes the run record once, ``embed`` takes images or
precomputed vectors (``.npy`` with ids and metadata), bad rows become failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vsearch import stages
from vsearch.embedding.partitions import read_partition, read_record
from vsearch.ids import item_id
from vsearch.index.layout import run_record_key
from vsearch.sources.samples import write_sample_images
from vsearch.stages.run_records import read_encoder_info
from vsearch.storage import LocalStore, ObjectStore

SID = "20260105T000000Z"


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return LocalStore(tmp_path / "store")


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype("float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_plan_writes_the_run_record_and_a_rerun_keeps_its_answers(
    store: ObjectStore, tmp_path: Path
) -> None:
    write_sample_images(tmp_path / "photos", 7)
    tasks = stages.plan(store, SID, [str(tmp_path / "photos")], partition_size=3,
                        run={"dag_id": "d", "run_id": "first"})  # fmt: skip
    assert [t["partition"] for t in tasks] == [0, 1, 2]
    assert json.loads(json.dumps(tasks)) == tasks  # travels through XCom
    record = stages.read_run_record(store, SID)
    assert record.kind == "build" and record.partitions == 3
    assert record.encoder_spec == "efficientnet-lite0"  # the encoder setting's default
    assert record.run.run_id == "first" and record.previous_snapshot_id is None
    etag = store.head(run_record_key(SID)).etag
    stages.plan(store, SID, [str(tmp_path / "photos")], partition_size=3,
                run={"dag_id": "d", "run_id": "retry"})  # fmt: skip
    assert stages.read_run_record(store, SID).run.run_id == "first"
    assert store.head(run_record_key(SID)).etag == etag  # same bytes, untouched


def test_plan_refuses_no_sources_and_mixed_kinds(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(stages.StageError, match="no sources"):
        stages.plan(store, SID, [])
    write_sample_images(tmp_path / "photos", 2)
    np.save(tmp_path / "x.npy", unit(4, 8, 0))
    with pytest.raises(stages.StageError, match="not both"):
        stages.plan(store, SID, [str(tmp_path / "photos"), str(tmp_path / "x.npy")])
    with pytest.raises(stages.StageError, match="plan the run"):
        stages.embed(store, "20260106T000000Z", {"partition": 0, "source": "x", "spec": {},
                                                 "options": {}})  # fmt: skip


def test_precomputed_vectors_with_ids_metadata_and_bad_rows(
    store: ObjectStore, tmp_path: Path
) -> None:
    folder = tmp_path / "vectors"
    folder.mkdir()
    xb = unit(6, 8, 1)
    xb[2, 3] = np.nan
    ids = np.array([10, 11, 12, -4, 10, 15], dtype=np.int64)
    np.save(folder / "a.npy", xb)
    np.save(folder / "a.ids.npy", ids)
    (folder / "a.meta.jsonl").write_text(
        "".join(json.dumps({"caption": f"row {i}"}) + "\n" for i in range(6))
    )
    (folder / "encoder.json").write_text(
        json.dumps({"name": "clip", "model_id": "openai/clip-vit-base-patch32", "revision": "r1"})
    )
    (task,) = stages.plan(store, SID, [str(folder)])
    assert stages.read_run_record(store, SID).encoder_spec is None  # nothing to embed with
    done = stages.embed(store, SID, task)
    assert (done["count"], done["failures"]) == (3, 3)
    vectors, got_ids, meta = read_partition(store, SID, 0)
    assert got_ids.tolist() == [10, 11, 15]
    assert np.array_equal(vectors, xb[[0, 1, 5]])
    assert [m["caption"] for m in meta] == ["row 0", "row 1", "row 5"]
    assert meta[0]["key"] == "a/0" and meta[0]["id"] == 10
    failures = store.get("embeddings/20260105T000000Z/part-00000.failures.jsonl").decode()
    reasons = sorted(json.loads(line)["reason"] for line in failures.splitlines())
    assert reasons == ["id-collision", "negative id", "non-finite vector"]
    info = read_encoder_info(store, SID)
    assert (info.name, info.model_id, info.revision, info.dim, info.normalized) == (
        "clip", "openai/clip-vit-base-patch32", "r1", 8, True,
    )  # fmt: skip
    etags = {i.key: i.etag for i in store.list("embeddings/")}
    assert stages.embed(store, SID, task) == done  # a retry writes nothing
    assert {i.key: i.etag for i in store.list("embeddings/")} == etags


def test_precomputed_vectors_without_ids_take_ids_from_keys(
    store: ObjectStore, tmp_path: Path
) -> None:
    xb = unit(5, 4, 2) * 3.0  # not unit vectors: the metric will be L2
    np.save(tmp_path / "emb.npy", xb.astype("float64"))
    tasks = stages.plan(store, SID, [str(tmp_path / "emb.npy")], partition_size=2)
    assert len(tasks) == 3
    for task in tasks:
        stages.embed(store, SID, task)
    _, got, meta = read_partition(store, SID, 1)
    assert got.tolist() == [item_id("emb/2"), item_id("emb/3")]
    assert [m["key"] for m in meta] == ["emb/2", "emb/3"]
    record = read_record(store, SID, 1)
    assert record is not None and record.dtype == "float32"
    info = read_encoder_info(store, SID)
    assert info.name == "precomputed" and info.dim == 4 and not info.normalized


def test_precomputed_parquet_embeddings_with_ids_and_metadata(
    store: ObjectStore, tmp_path: Path
) -> None:
    """autofaiss's layout: an ``embedding`` list column, an ``id`` column, metadata columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    xb = unit(7, 6, 3)
    table = pa.table({
        "embedding": pa.array(xb.tolist(), type=pa.list_(pa.float32())),
        "id": pa.array([100 + i for i in range(7)], type=pa.int64()),
        "caption": [f"photo {i}" for i in range(7)],
        "url": [f"https://example.com/{i}.jpg" for i in range(7)],
    })  # fmt: skip
    pq.write_table(table, tmp_path / "emb.parquet")
    tasks = stages.plan(store, SID, [str(tmp_path / "emb.parquet")], partition_size=4)
    assert [t["spec"]["kind"] for t in tasks] == ["vectors", "vectors"]
    for task in tasks:
        stages.embed(store, SID, task)
    vectors, got, meta = read_partition(store, SID, 1)
    assert got.tolist() == [104, 105, 106]
    assert np.allclose(vectors, xb[4:])
    assert meta[0]["caption"] == "photo 4" and meta[0]["url"].endswith("/4.jpg")
    info = read_encoder_info(store, SID)
    assert info.name == "precomputed" and info.dim == 6 and info.normalized


def test_a_backfill_of_the_same_images_copies_the_embeddings(
    store: ObjectStore, tmp_path: Path
) -> None:
    write_sample_images(tmp_path / "photos", 6)
    source = [str(tmp_path / "photos")]
    (task,) = stages.plan(store, SID, source)
    first = stages.embed(store, SID, task)
    later = "20260107T000000Z"
    (task,) = stages.plan(store, later, source)
    embedded = []
    assert stages.embed(store, later, task, progress=embedded.append)["count"] == first["count"]
    assert embedded == []  # nothing went through the encoder
    record = read_record(store, later, 0)
    assert record is not None and record.snapshot_id == later
    assert record.stats["copied_from"] == f"{SID}/0"
    assert np.array_equal(read_partition(store, later, 0)[0], read_partition(store, SID, 0)[0])
    # Other images: embedded, not copied.
    write_sample_images(tmp_path / "photos", 7)
    (task,) = stages.plan(store, "20260108T000000Z", source)
    assert stages.embed(store, "20260108T000000Z", task, progress=embedded.append)["count"] == 7
    assert sum(embedded) == 7
