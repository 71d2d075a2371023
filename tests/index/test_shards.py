"""Shard build and publish: assignment, reruns, bad input, a deterministic manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.index.snapshots import SID, planned, write_snapshot
from vsearch import stages
from vsearch.catalog import read_current
from vsearch.embedding.partitions import write_partition
from vsearch.index import (
    DuplicateIds,
    build_manifest,
    build_shard,
    created_at_for,
    train_index,
)
from vsearch.index.layout import shard_key, shard_of
from vsearch.index.structure import get_index
from vsearch.storage import LocalStore, ObjectStore

FACTORY = "IVF32,PQ8x4fs"


def test_every_id_lands_in_exactly_one_shard(store: ObjectStore) -> None:
    _, ids = write_snapshot(store, n=3000)
    train_index(store, SID, factory=FACTORY, nq=100)
    shards = [build_shard(store, SID, j, 3) for j in range(3)]
    assert sum(s["ntotal"] for s in shards) == len(ids)
    for j, s in enumerate(shards):
        index = get_index(store, s["uri"])
        held = np.sort(faiss_ids(index))
        expected = np.sort(ids[shard_of(ids, 3) == j])
        np.testing.assert_array_equal(held, expected)
        assert s["id_range"] == [int(expected.min()), int(expected.max())]
    # The assignment is a function of the id alone: stable across calls and batches.
    np.testing.assert_array_equal(shard_of(ids[::-1], 3), shard_of(ids, 3)[::-1])


def faiss_ids(index: object) -> np.ndarray:
    import faiss

    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    return np.concatenate(
        [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(ivf.nlist)
            if lists.list_size(i)
        ]
    )


def test_rerun_with_the_same_inputs_rewrites_nothing(tmp_path: object) -> None:
    store = LocalStore(f"{tmp_path}/store")
    write_snapshot(store, n=2000)
    train_index(store, SID, factory=FACTORY, nq=100)
    first = build_shard(store, SID, 0, 1)
    etag = store.head(shard_key(SID, 0)).etag
    assert build_shard(store, SID, 0, 1) == first
    assert store.head(shard_key(SID, 0)).etag == etag  # not rewritten
    # A different trained index means the shard must be rebuilt, not reused.
    train_index(store, SID, factory="IVF16,PQ8x4fs", nq=100)
    assert build_shard(store, SID, 0, 1)["sha256"] != first["sha256"]


def test_duplicate_ids_and_bad_vectors_are_refused(tmp_path: object) -> None:
    store = LocalStore(f"{tmp_path}/store")
    xb, ids = write_snapshot(store, n=2000, nparts=2)
    train_index(store, SID, factory=FACTORY, nq=100)
    dup = ids[:10]
    write_partition(store, SID, 2, xb[:10], dup, [{"id": int(i)} for i in dup], [],
                    input_fingerprint="dup", encoder_id="synthetic@1#test")  # fmt: skip
    with pytest.raises(DuplicateIds, match="10 duplicate ids"):
        build_shard(store, SID, 0, 1)
    assert not store.exists(shard_key(SID, 0))
    bad = xb[:10].copy()
    bad[3, 0] = np.nan
    write_partition(store, SID, 2, bad, ids[:10] + 1, [{"id": 0}] * 10, [],
                    input_fingerprint="nan", encoder_id="synthetic@1#test")  # fmt: skip
    with pytest.raises(ValueError, match="non-finite vectors"):
        build_shard(store, SID, 0, 1)
    with pytest.raises(ValueError, match=r"shard must be in \[0, 2\)"):
        build_shard(store, SID, 2, 2)


def test_published_manifest_says_what_the_service_needs_and_is_deterministic(
    store: ObjectStore, tmp_path: Path
) -> None:
    planned(store, tmp_path / "vectors", n=3000)
    options = {"nq": 200, "target_recall": 0.9}
    compressed = {"nq": 200, "nshards": 2, "memory_floor_mb": 0}  # the large-collection shape
    result = stages.build_index(store, SID, train_options=compressed, validate_options=options)
    assert result["moved"] and result["key"] == f"manifests/{SID}.json"
    m = read_current(store)
    assert m is not None and m.snapshot_id == SID
    assert m.created_at == created_at_for(SID) == "2026-03-01T00:00:00+00:00"
    assert m.metric == "ip" and m.ntotal == 3000 and len(m.shards) == 2
    assert m.index.factory.startswith("IDMap,OPQ") and m.index.refine == "SQ8"
    assert m.index.nlist and m.index.m and m.index.nbits == 4 and m.index.opq
    assert m.index.default_nprobe in [p for p, _, _ in m.recall.curve]
    assert m.index.trained is not None
    assert m.recall.image_to_image_at_10 is not None and m.recall.image_to_image_at_10 >= 0.9
    assert m.metadata.count == 3000 and len(m.metadata.files) == 3
    assert m.encoder.name == "synthetic" and m.lineage.dag_id == "test_dag"
    # A retry assembles the identical bytes and publishing again changes nothing.
    again = build_manifest(store, SID, encoder=m.encoder, lineage=m.lineage)
    assert again.to_json() == m.to_json()
    rerun = stages.build_index(store, SID, train_options=compressed, validate_options=options)
    assert not rerun["moved"] and "already current" in rerun["message"]
