"""The canary's other refusals (``service.snapshots.canary``), on real faiss files.

"faiss raises" is in test_snapshot_admission.py; here the snapshot reads and searches
without an error but answers wrongly:

- a hit no shard can stand behind: a score that is not finite (one stored vector so
  large that its inner products overflow to inf: it tops every search);
- too few stored vectors find themselves: an IVF whose coarse quantizer no longer
  matches its inverted lists (the centroids rolled by half), so every search probes
  the list of another centroid.

The "ids no shard stores" half of the first check has no file to test it with: a
shard's stored ids are read from the index itself (``StoredVectors``), and faiss
refuses a file whose lists or graph reach past its ``ntotal``.
"""

from __future__ import annotations

import dataclasses

import faiss
import numpy as np
import pytest

from tests.fixtures.snapshots import build_snapshot, publish, sample_vectors, snapshot_id
from tests.service.conftest import AppFactory
from tests.service.test_snapshot_admission import (
    D,
    N,
    assert_refused_and_still_serving,
    serving,
    with_shard,
)
from vsearch.storage import ObjectStore

FIRST = 2_000_000  # snapshot 2's ids: FIRST + row


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_a_hit_with_a_score_that_is_not_finite_is_refused(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    client, state, xb = serving(local_store, make_app)
    xb2 = sample_vectors(N, D, seed=2)
    # Item 500 (not one the canary searches for: rows 0, 142, ..., 999) points with
    # every component along the first probe's signs, each near float32's largest.
    xb2[500] = np.float32(3e38) * np.sign(xb2[0])
    ids2 = np.arange(N, dtype="int64") + FIRST
    publish(local_store, build_snapshot(local_store, snapshot_id(2), xb2, ids2, nshards=1))
    refused = assert_refused_and_still_serving(client, state, xb, "canary")
    assert refused["reason"] == (
        f"canary: searching stored item {FIRST} at the index's own settings returned id "
        f"{FIRST + 500} (score inf), which no shard stores"
    ), refused


def quantizer_rolled_ivf(xb: np.ndarray, ids: np.ndarray) -> bytes:
    """An IVF64 whose list j holds the vectors nearest centroid j, while its quantizer's
    row j is centroid j + 32: a search probes the lists of other centroids."""
    index = faiss.index_factory(D, "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(xb)
    index.add_with_ids(xb, ids)
    centroids = faiss.downcast_index(index.quantizer).reconstruct_n(0, 64)
    quantizer = faiss.IndexFlatIP(D)
    quantizer.add(np.roll(centroids, -32, axis=0))
    index.quantizer, index.own_fields = quantizer, False
    return faiss.serialize_index(index).tobytes()


def test_too_few_stored_vectors_finding_themselves_is_refused(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    client, state, xb = serving(local_store, make_app)
    xb2 = sample_vectors(N, D, seed=2)
    ids2 = np.arange(N, dtype="int64") + FIRST
    m = build_snapshot(local_store, snapshot_id(2), xb2, ids2, nshards=1)
    m = with_shard(local_store, m, 0, quantizer_rolled_ivf(xb2, ids2))
    ivf = dataclasses.replace(m.index, factory="IVF64,Flat", nlist=64, default_nprobe=1)
    publish(local_store, dataclasses.replace(m, index=ivf))
    refused = assert_refused_and_still_serving(client, state, xb, "canary")
    assert refused["reason"] == (
        "canary: 0 of 8 stored vectors found themselves in their top 10 at nprobe 1 (needed 4)"
    ), refused
