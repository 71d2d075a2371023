"""The pure evaluation functions, against numpy and faiss's own exact search."""

# ruff: noqa: E741  -- D, I: the field's names for distances and ids
from __future__ import annotations

import faiss
import numpy as np
import pytest

from vsearch.index.evaluate import (
    default_nprobe,
    drop_self,
    knn_ground_truth,
    merge_results,
    nprobe_grid,
    recall_at,
    recalls,
)
from vsearch.index.synthetic import clustered_vectors


def test_recall_at_counts_the_intersection_and_never_counts_missing_results() -> None:
    gt = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at(gt, gt, 3) == 1.0
    assert recall_at(np.array([[3, 2, 9], [7, 8, 4]]), gt, 3) == pytest.approx(3 / 6)
    assert recall_at(np.array([[1, -1, -1], [-1, -1, -1]]), gt, 3) == pytest.approx(1 / 6)
    assert recall_at(np.array([[9], [5]]), gt, 1) == 0.0  # only the top-1 counts at k=1
    assert recalls(gt, gt) == {"recall@1": 1.0}  # 3 columns: no recall@10 or @100
    with pytest.raises(AssertionError):
        recall_at(gt[:1], gt, 1)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_streamed_ground_truth_equals_one_exact_search(metric: str) -> None:
    xb, _ = clustered_vectors(3000, 16, seed=3)
    xq = xb[:50] + 0.01
    ids = np.arange(len(xb), dtype="int64") * 5 + 2
    blocks = [(xb[i : i + 700], ids[i : i + 700]) for i in range(0, len(xb), 700)]
    D, I = knn_ground_truth(xq, blocks, 20, metric)
    fmetric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    D_ref, I_ref = faiss.knn(xq, xb, 20, metric=fmetric)
    np.testing.assert_allclose(D, D_ref, rtol=1e-4, atol=1e-4)
    assert recall_at(I, ids[I_ref], 20) > 0.999  # ties may swap places


def test_merge_results_keeps_the_global_top_k() -> None:
    D1, I1 = np.array([[0.9, 0.5]], "float32"), np.array([[1, 2]])
    D2, I2 = np.array([[0.7, 0.6]], "float32"), np.array([[3, 4]])
    _, I = merge_results([(D1, I1), (D2, I2)], 3, "ip")
    assert I.tolist() == [[1, 3, 4]]
    _, I = merge_results([(D1, I1), (D2, I2)], 2, "l2")  # smaller is closer
    assert I.tolist() == [[2, 4]]


def test_nprobe_grid_and_default() -> None:
    assert nprobe_grid(16) == [1, 2, 4, 8, 16]
    assert nprobe_grid(48) == [1, 2, 4, 8, 16, 32, 48]
    assert nprobe_grid(4096, max_nprobe=64)[-1] == 64
    curve = [(1, 0.5), (2, 0.8), (4, 0.96), (8, 0.99)]
    assert default_nprobe(curve, 0.95) == 4
    assert default_nprobe(curve, 0.995) is None


def test_drop_self_removes_the_query_item_and_keeps_rank_order() -> None:
    I = np.array([[7, 3, 5, 9], [1, 2, 4, 8], [6, -1, -1, -1]])
    qids = np.array([7, 4, 0])
    assert drop_self(I, qids, 3).tolist() == [[3, 5, 9], [1, 2, 8], [6, -1, -1]]
