"""torch k-means (the IVF centroids where faiss has no GPU) against faiss's own Clustering."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from vsearch.index.kmeans import kmeans
from vsearch.index.synthetic import clustered_vectors


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_objective_matches_faiss_clustering(metric: str) -> None:
    x, _ = clustered_vectors(20_000, 32, nclusters=200, seed=0)
    spherical = metric == "ip"  # as an inner-product IVF clusters
    ours = kmeans(x, 64, niter=20, seed=1, metric=metric, spherical=spherical, device="cpu")  # type: ignore[arg-type]
    clus = faiss.Clustering(32, 64)
    clus.niter, clus.seed, clus.spherical = 20, 1, spherical
    clus.train(x, faiss.IndexFlatIP(32) if metric == "ip" else faiss.IndexFlatL2(32))
    theirs = faiss.vector_to_array(clus.centroids).reshape(64, 32)
    if metric == "ip":  # mean best inner product: higher is better
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
        assert (x @ ours.T).max(1).mean() >= 0.98 * (x @ theirs.T).max(1).mean()
    else:  # mean squared distance to the nearest centroid: lower is better
        mse = [faiss.knn(x, c, 1)[0].mean() for c in (ours, theirs)]
        assert mse[0] <= 1.02 * mse[1], mse


def test_empty_clusters_are_split_not_left_nan() -> None:
    # 6 distinct points, 10 centroids: some clusters must start or fall empty.
    base = np.eye(6, 8, dtype="float32")
    x = np.repeat(base, 50, axis=0)
    c = kmeans(x, 10, niter=5, seed=0, device="cpu")
    assert np.isfinite(c).all()
    assert len(np.unique(c.round(6), axis=0)) == 10
    nearest = faiss.knn(base, c, 1)[0][:, 0]
    assert (nearest < 1e-3).all()  # every distinct point has a centroid on it


def test_same_seed_same_centroids_and_subsampling() -> None:
    x, _ = clustered_vectors(5_000, 16, nclusters=50, seed=3)
    a = kmeans(x, 8, seed=5, device="cpu", max_points_per_centroid=100)
    b = kmeans(x, 8, seed=5, device="cpu", max_points_per_centroid=100)
    np.testing.assert_array_equal(a, b)
    chunked = kmeans(x, 8, seed=5, device="cpu", max_points_per_centroid=100, chunk=333)
    np.testing.assert_allclose(chunked, a, rtol=0, atol=1e-6)  # scoring in pieces: same answer
    with pytest.raises(ValueError, match="at least k=8"):
        kmeans(x[:5], 8, device="cpu")
