"""A snapshot built by the real index stage (the budgeted default spec) served and searched."""

from __future__ import annotations

import logging

import faiss
import numpy as np

from tests.service.conftest import AppFactory, BuiltSnapshot, vector_query

log = logging.getLogger(__name__)


def test_default_spec_snapshot_answers_with_its_validated_recall(
    built_snapshot: BuiltSnapshot, make_app: AppFactory
) -> None:
    xb, ids, manifest = built_snapshot.xb, built_snapshot.ids, built_snapshot.manifest
    d = xb.shape[1]
    assert "Refine" in manifest.index.factory  # the shape under test
    default = manifest.index.default_nprobe
    assert default is not None
    validated = dict((int(p[0]), float(p[1])) for p in manifest.recall.curve)[default]

    client = make_app(built_snapshot.store).test_client()
    rng = np.random.default_rng(1)
    queries = xb[rng.choice(len(xb), 100, replace=False)] + 0.05 * rng.standard_normal((100, d))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype("float32")
    _, rows = faiss.knn(queries, xb, 10, metric=faiss.METRIC_INNER_PRODUCT)
    found = 0
    for q, truth in zip(queries, ids[rows], strict=True):
        r = vector_query(client, q, k=10)
        assert r.status_code == 200, r.json
        assert r.json["nprobe"] == default
        found += len({h["id"] for h in r.json["hits"]} & set(truth.tolist()))
        for extra in ({"nprobe": 1}, {"target_recall": 0.5}, {"exact": True}):
            assert vector_query(client, q, k=10, **extra).status_code == 200
    log.warning("served recall@10 %.3f, validated %.3f", found / 1000, validated)
    assert found / 1000 >= validated - 0.1, (found / 1000, validated)
