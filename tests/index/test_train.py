"""Training: held-out queries never train, reruns are no-ops, the device is honoured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from tests.index.snapshots import SID, read_trained_record, write_snapshot
from vsearch.index import GpuUnavailable, train_index
from vsearch.index.layout import trained_key, unit_hash
from vsearch.index.partition_vectors import held_out_fraction, held_out_queries, inventory, sample
from vsearch.storage import LocalStore


def test_training_sample_excludes_the_held_out_queries(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    _, ids = write_snapshot(store, n=5000)
    inv = inventory(store, SID)
    _, q_ids = held_out_queries(store, inv, 300, seed=0)
    assert len(q_ids) == 300
    lo = held_out_fraction(inv.n, 300)
    _, t_ids, _ = sample(store, inv, lo=lo, hi=1.0, seed=0)
    assert not set(q_ids) & set(t_ids)
    assert len(q_ids) + len(t_ids) <= len(ids)
    assert (unit_hash(q_ids, 0) < lo).all()


def test_rerun_is_a_no_op_and_a_new_spec_retrains(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    write_snapshot(store, n=3000)
    key = train_index(store, SID, factory="IVF16,PQ8x4fs", nq=100)
    etag = store.head(key).etag
    assert train_index(store, SID, factory="IVF16,PQ8x4fs", nq=100) == key
    assert store.head(key).etag == etag
    train_index(store, SID, factory="IVF32,PQ8x4fs", nq=100)
    assert store.head(key).etag != etag
    record = read_trained_record(store, SID)
    assert record["spec"]["nlist"] == 32 and record["device"] == "cpu"
    index = faiss.read_index(str(tmp_path / "store" / trained_key(SID)))
    assert index.is_trained and index.ntotal == 0


def test_device_gpu_is_refused_without_one_and_used_with_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vsearch.index import kmeans as kmeans_module

    store = LocalStore(tmp_path / "store")
    write_snapshot(store, n=3000)
    monkeypatch.setattr(kmeans_module, "torch_cuda", lambda: None)  # faiss's GPU only, here
    if faiss.get_num_gpus() == 0:
        with pytest.raises(GpuUnavailable, match="neither faiss nor torch sees a GPU"):
            train_index(store, SID, factory="IVF16,PQ8x4fs", nq=100, device="gpu")
        assert not store.exists(trained_key(SID))
    else:  # a faiss-gpu build on a machine with a device
        train_index(store, SID, factory="IVF16,PQ8x4fs", nq=100, device="gpu")
        assert read_trained_record(store, SID)["device"] == "gpu"


def test_gpu_branch_clusters_through_the_index_faiss_gpu_hands_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wiring of ``train_on``'s faiss-gpu branch, on any machine (CI has no GPU).

    A fake stands in for faiss-gpu's three calls; its ``index_cpu_to_gpu`` returns a
    fresh flat index of its own (standing for the GPU copy), not the one it was given.
    Checked: the branch is taken when faiss sees a GPU, it asks for device 0 with a
    ``StandardGpuResources``, it moves a flat index of the IVF's (rotated) dimension
    and metric, the k-means clusters through the returned index (it ends holding the
    IVF's centroids), and the record says the GPU trained it. Whether an index trained
    on a real GPU searches as well as the CPU's is not checked here: it is measured on a
    GPU machine by ``bench/gpu_session.sh index`` (bench/index_train_device.py,
    recall@10 of both against exact search).
    """
    factory = "OPQ8_16,IVF32_HNSW8,PQ8x4fsr,Refine(SQ8)"
    store = LocalStore(tmp_path / "store")
    write_snapshot(store, n=4000)
    moved: list[tuple[object, int, int, int]] = []
    copies: list[faiss.Index] = []

    class FakeGpuResources:
        pass

    def index_cpu_to_gpu(res: object, device: int, index: faiss.Index) -> faiss.Index:
        moved.append((type(res), device, index.d, index.metric_type))
        assert isinstance(index, faiss.IndexFlat) and index.ntotal == 0
        copies.append(faiss.IndexFlat(index.d, index.metric_type))
        return copies[-1]

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", FakeGpuResources, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", index_cpu_to_gpu, raising=False)
    train_index(store, SID, factory=factory, nq=100, device="gpu")

    assert moved == [(FakeGpuResources, 0, 16, faiss.METRIC_INNER_PRODUCT)]
    trained = faiss.read_index(str(tmp_path / "store" / trained_key(SID)))
    ivf = faiss.extract_index_ivf(trained)
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    assert copies[0].ntotal == ivf.nlist == 32
    np.testing.assert_array_equal(copies[0].reconstruct_n(0, ivf.nlist), centroids)
    record = read_trained_record(store, SID)
    assert (record["device"], record["kmeans"]) == ("gpu", "faiss-gpu")


def test_metric_follows_the_vectors(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    write_snapshot(store, n=3000)
    train_index(store, SID, factory="IVF16,PQ8x4fs", nq=100)
    assert read_trained_record(store, SID)["spec"]["metric"] == "ip"
    from vsearch.embedding.partitions import write_partition

    other = "20260305T000000Z"
    xb = np.random.default_rng(0).standard_normal((2000, 16)).astype("float32") * 3
    write_partition(store, other, 0, xb, np.arange(2000, dtype="int64"), [{}] * 2000, [],
                    input_fingerprint="raw", encoder_id="raw@0")  # fmt: skip
    train_index(store, other, factory="IVF8,PQ4x4fs", nq=100)
    assert read_trained_record(store, other)["spec"]["metric"] == "l2"


def test_torch_kmeans_path_trains_as_well_as_faiss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path a GPU without faiss-gpu takes (torch's k-means for the IVF centroids),
    chosen by train_index itself, on torch's CPU device: only the device string
    differs on a GPU. Its index must search as well as the faiss-trained one."""
    from vsearch.index import build_shard
    from vsearch.index import kmeans as kmeans_module
    from vsearch.index.evaluate import recall_at
    from vsearch.index.structure import search_params

    factory = "OPQ8_32,IVF32_HNSW8,PQ8x4fsr"
    recalls = {}
    made: list[np.ndarray] = []
    kmeans = kmeans_module.kmeans

    def recorded(*args: Any, **kwargs: Any) -> np.ndarray:
        made.append(kmeans(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(kmeans_module, "kmeans", recorded)
    for path in ("faiss", "torch"):
        store = LocalStore(tmp_path / path)
        xb, ids = write_snapshot(store, n=6000)
        device = "cpu" if path == "torch" else None  # None: as on a machine without a GPU
        monkeypatch.setattr(kmeans_module, "torch_cuda", lambda d=device: d)
        train_index(store, SID, factory=factory, nq=100, device="auto")
        record = read_trained_record(store, SID)
        assert (record["device"], record["kmeans"]) == (
            ("cpu", "torch:cpu") if path == "torch" else ("cpu", "faiss-cpu")
        )
        shard = build_shard(store, SID, 0, 1)
        index = faiss.read_index(str(tmp_path / path / shard["uri"]))
        if path == "torch":  # faiss kept the torch centroids: it did not cluster again
            quantizer = faiss.extract_index_ivf(index).quantizer
            assert len(made) == 1
            np.testing.assert_array_equal(quantizer.reconstruct_n(0, quantizer.ntotal), made[0])
        xq = xb[:200]
        _, rows = faiss.knn(xq, xb, 10, metric=faiss.METRIC_INNER_PRODUCT)
        _, found = index.search(xq, 10, params=search_params(index, 4))
        recalls[path] = recall_at(found, ids[rows], 10)
    assert recalls["torch"] >= recalls["faiss"] - 0.03, recalls
    assert recalls["faiss"] > 0.35, recalls  # a real index, not two equally broken ones
