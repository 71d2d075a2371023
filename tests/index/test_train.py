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


def test_gpu_wiring_trains_the_same_index_as_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The faiss-gpu branch of ``train_on``, on any machine.

    An in-process fake stands in for faiss-gpu's three calls (CI has no GPU):
    ``index_cpu_to_gpu`` hands back the exact CPU flat index it was given.
    With an exact assignment index either way, the GPU branch must write the
    very bytes the CPU branch writes (HNSW coarse quantizer and OPQ included),
    and the record must say it ran on the GPU.
    """
    factory = "OPQ8_16,IVF32_HNSW8,PQ8x4fsr,Refine(SQ8)"
    cpu, gpu = LocalStore(tmp_path / "cpu"), LocalStore(tmp_path / "gpu")
    for store in (cpu, gpu):
        write_snapshot(store, n=4000)
    train_index(cpu, SID, factory=factory, nq=100, device="cpu")

    moved: list[tuple[int, int]] = []

    def index_cpu_to_gpu(res: object, device: int, index: faiss.Index) -> faiss.Index:
        assert isinstance(res, FakeGpuResources)
        moved.append((device, index.d))
        return index

    class FakeGpuResources:
        pass

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", FakeGpuResources, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", index_cpu_to_gpu, raising=False)
    train_index(gpu, SID, factory=factory, nq=100, device="gpu")

    assert moved == [(0, 16)]  # one assignment index, in the IVF's (rotated) dimension
    assert read_trained_record(gpu, SID)["device"] == "gpu"
    assert gpu.get(trained_key(SID)) == cpu.get(trained_key(SID))


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
