"""Training: held-out queries never train, reruns are no-ops, the device is honoured."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from tests.index.snapshots import SID, write_snapshot
from vsearch.index import GpuUnavailable, train_index
from vsearch.index.layout import trained_key, unit_hash
from vsearch.index.train import read_trained_record
from vsearch.index.vectors import held_out_fraction, held_out_queries, inventory, sample
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


def test_device_gpu_is_refused_without_one_and_used_with_one(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    write_snapshot(store, n=3000)
    if faiss.get_num_gpus() == 0:
        with pytest.raises(GpuUnavailable, match="no GPU"):
            train_index(store, SID, factory="IVF16,PQ8x4fs", nq=100, device="gpu")
        assert not store.exists(trained_key(SID))
    else:  # a faiss-gpu build on a machine with a device
        train_index(store, SID, factory="IVF16,PQ8x4fs", nq=100, device="gpu")
        assert read_trained_record(store, SID)["device"] == "gpu"


def test_metric_follows_the_vectors(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    write_snapshot(store, n=3000)
    train_index(store, SID, factory="IVF16,PQ8x4fs", nq=100)
    assert read_trained_record(store, SID)["spec"]["metric"] == "ip"
    from vsearch.partitions import write_partition

    other = "20260305T000000Z"
    xb = np.random.default_rng(0).standard_normal((2000, 16)).astype("float32") * 3
    write_partition(store, other, 0, xb, np.arange(2000, dtype="int64"), [{}] * 2000, [],
                    input_fingerprint="raw", encoder_id="raw@0")  # fmt: skip
    train_index(store, other, factory="IVF8,PQ4x4fs", nq=100)
    assert read_trained_record(store, other)["spec"]["metric"] == "l2"
