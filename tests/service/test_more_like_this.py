"""``id`` queries ("more like this"): an item's stored vector, by id, whatever the spec.

Regression: on the default spec (``IDMap,OPQ..,IVF..,PQ..x4fsr,Refine(SQ8)``) every
``id`` query of a base item answered 404, because ``IndexIDMap`` has no
``reconstruct``; ``vsearch.search.stored_vectors.StoredVectors`` now goes through the id
map to the finest codes the index holds.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import pytest

from tests.fixtures.snapshots import sample_vectors
from tests.service.conftest import AppFactory, BuiltSnapshot
from vsearch.index.structure import faiss_threads
from vsearch.search.stored_vectors import StoredVectors


def test_id_queries_on_the_default_spec_answer_the_items_neighbours(
    built_snapshot: BuiltSnapshot, make_app: AppFactory
) -> None:
    xb, ids, manifest = built_snapshot.xb, built_snapshot.ids, built_snapshot.manifest
    assert manifest.index.factory.startswith("IDMap,") and "Refine(SQ8)" in manifest.index.factory
    client = make_app(built_snapshot.store).test_client()
    rows = np.random.default_rng(3).choice(len(xb), 40, replace=False)
    _, truth = faiss.knn(xb[rows], xb, 11, metric=faiss.METRIC_INNER_PRODUCT)
    found = 0
    for row, neighbours in zip(rows, truth, strict=True):
        item = int(ids[row])
        r = client.post("/v1/search", json={"id": item, "k": 10})
        assert r.status_code == 200, r.json
        hits = [h["id"] for h in r.json["hits"]]
        assert item not in hits and len(hits) == 10
        expected = {int(ids[n]) for n in neighbours if n != row}
        found += len(set(hits) & expected)
    recall = found / (10 * len(rows))
    validated = dict((int(p[0]), float(p[1])) for p in manifest.recall.curve)
    assert recall >= validated[manifest.index.default_nprobe] - 0.1, recall


def test_an_unknown_id_is_still_a_404(built_snapshot: BuiltSnapshot, make_app: AppFactory) -> None:
    client = make_app(built_snapshot.store).test_client()
    absent = int(built_snapshot.ids.max()) + 1
    assert client.post("/v1/search", json={"id": absent}).status_code == 404


D = 32
N = 2000


def _index(factory: str, xb: np.ndarray, ids: np.ndarray) -> Any:
    index = faiss.index_factory(D, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        with faiss_threads(1):
            index.train(xb)
    if factory.startswith("IDMap") or ("IVF" in factory and "Refine" not in factory):
        index.add_with_ids(xb, ids)
    else:  # positions are the ids
        index.add(xb)
    return faiss.deserialize_index(faiss.serialize_index(index))  # as a shard is read


# (factory, how close a stored vector comes back: max L2 error on unit vectors)
SPECS = {
    "IDMap2,Flat": 0.0,
    "IDMap,Flat": 0.0,
    "Flat": 0.0,
    "IDMap,OPQ8,IVF16,PQ8x4fsr,Refine(SQ8)": 0.05,
    "IDMap,IVF16,PQ8x4,Refine(Flat)": 0.0,
    "IDMap,OPQ8,IVF16,PQ8x4": 0.9,  # the IVF's own PQ codes, rotated back
    "IVF16,PQ8x4": 0.9,  # ids held by the IVF itself
    "IVF16,Flat": 0.0,
    "IDMap,HNSW8": 0.0,
}


@pytest.mark.parametrize("factory", list(SPECS))
def test_stored_vectors_by_id_whatever_the_spec(factory: str) -> None:
    xb = sample_vectors(N, D, seed=11)
    sparse = "IDMap" in factory or ("IVF" in factory and "Refine" not in factory)
    ids = np.random.default_rng(0).permutation(N).astype("int64") * 7 + 5 if sparse else None
    index = _index(factory, xb, ids if ids is not None else np.arange(N))
    ids = ids if ids is not None else np.arange(N, dtype="int64")
    stored = StoredVectors(index)
    assert len(stored) == N and stored.nbytes <= 16 * N
    errors = []
    for row in range(0, N, 97):
        x = stored.vector(int(ids[row]))
        assert x is not None and x.shape == (D,) and x.dtype == np.float32
        errors.append(float(np.linalg.norm(x - xb[row])))
    assert max(errors) <= SPECS[factory] + 1e-5, (factory, max(errors))
    assert stored.vector(int(ids.max()) + 1) is None and stored.vector(-1) is None
    assert int(ids[5]) in stored and int(ids.max()) + 1 not in stored
