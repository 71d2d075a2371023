"""k-means of the IVF centroids in torch, for a GPU that faiss cannot use.

faiss's GPU build ships for CUDA 12 only (``faiss-gpu-cu12``); a machine with
another CUDA, or with faiss-cpu, still has torch on its GPU. This is the same
algorithm as faiss's ``Clustering`` for the coarse quantizer — a seeded sample
of at most ``max_points_per_centroid`` points per centroid, seeded random
initial centroids, ``niter`` Lloyd iterations assigning by the quantizer's
metric, unit-length centroids for inner product (``spherical``), an empty
cluster re-seeded by splitting a large one — written once
for any torch device. The tests run it on the CPU; on a GPU only the device
string differs.

Distances are computed in chunks of rows so that the (rows x k) score matrix
stays small whatever the sample size. ``train_with_centroids`` trains a whole
index around centroids computed here (``vsearch.index.train.train_on`` picks it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

SPLIT_EPS = 1.0 / 1024  # faiss's relative perturbation when splitting a cluster
SCORE_BUDGET = 1 << 28  # floats in one chunk's (rows x k) score matrix: 1 GiB


def kmeans(
    x: np.ndarray,
    k: int,
    *,
    niter: int = 25,
    seed: int = 0,
    metric: Literal["ip", "l2"] = "l2",
    spherical: bool = False,
    device: str = "cuda",
    max_points_per_centroid: int = 256,
    chunk: int | None = None,
) -> np.ndarray:
    """``k`` centroids of the rows of ``x`` (float32, (k, d)).

    ``spherical``: centroids scaled to unit length after each update, as faiss
    does for an inner-product IVF (its ``cp.spherical``). ``chunk``: rows scored
    at once (default: as many as keep the score matrix within 1 GiB). On CUDA the
    sums use atomic adds, so centroids may differ in the last bits between runs.
    """
    import torch

    n = len(x)
    if n < k:
        raise ValueError(f"k-means needs at least k={k} points, got {n}")
    rng = np.random.default_rng(seed)
    if n > k * max_points_per_centroid:
        x = x[np.sort(rng.choice(n, k * max_points_per_centroid, replace=False))]
        n = len(x)
    xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    centroids = xs[torch.from_numpy(rng.choice(n, k, replace=False)).to(device)].clone()
    if spherical:
        centroids = torch.nn.functional.normalize(centroids, dim=1)
    rows = chunk or max(1, min(n, SCORE_BUDGET // k))
    for _ in range(niter):
        assign = _assign(xs, centroids, metric, rows)
        sums = torch.zeros_like(centroids).index_add_(0, assign, xs)
        counts = torch.bincount(assign, minlength=k)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None].to(sums.dtype)
        _split_into_empty(centroids, counts, rng)
        if spherical:
            centroids = torch.nn.functional.normalize(centroids, dim=1)
    out: np.ndarray = centroids.cpu().numpy()
    del xs, centroids
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()  # give the training worker's GPU memory back
    return out


def _assign(xs: torch.Tensor, centroids: torch.Tensor, metric: str, chunk: int) -> torch.Tensor:
    import torch

    out = []
    norms = (centroids * centroids).sum(1) if metric == "l2" else None
    for start in range(0, len(xs), chunk):
        scores = xs[start : start + chunk] @ centroids.T
        if norms is not None:  # argmin ||x - c||^2 = argmax (2 x.c - ||c||^2), in place
            scores.mul_(2).sub_(norms)
        out.append(torch.argmax(scores, dim=1))
    return torch.cat(out)


def _split_into_empty(
    centroids: torch.Tensor, counts: torch.Tensor, rng: np.random.Generator
) -> None:
    """Give every empty centroid half of a large cluster, chosen with probability
    proportional to its size - 1 (as faiss does: a single point is never split)."""
    sizes = counts.cpu().numpy().astype(np.float64)
    for empty in np.flatnonzero(sizes == 0):
        weights = np.maximum(sizes - 1, 0)
        if weights.sum() == 0:
            return  # every point has a centroid of its own already
        donor = int(rng.choice(len(sizes), p=weights / weights.sum()))
        sign = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1.0, -1.0) * SPLIT_EPS
        s = centroids.new_tensor(sign)
        centroids[empty] = centroids[donor] * (1 + s)
        centroids[donor] = centroids[donor] * (1 - s)
        sizes[empty] = sizes[donor] / 2
        sizes[donor] -= sizes[empty]


def train_with_centroids(index: Any, xt: np.ndarray, kmeans_device: str) -> None:
    """Train with the IVF centroids from ``vsearch.index.kmeans`` on ``kmeans_device``.

    The transforms are trained first, in order, as ``IndexPreTransform.train``
    would, so the centroids are clustered in the IVF's own space; the quantizer
    is filled with them, and faiss's own ``train`` then skips what is trained
    (an IVF whose quantizer holds nlist centroids is not clustered again) and
    trains the rest (PQ on the residuals, re-ranking codes).
    """
    import faiss

    from vsearch.index.structure import layers

    lay = layers(index)
    assert lay.ivf is not None
    x = xt
    if lay.pretransform is not None:
        for i in range(lay.pretransform.chain.size()):
            vt = lay.pretransform.chain.at(i)
            if not vt.is_trained:
                vt.train(x)
            x = vt.apply(x)
    quantizer = faiss.downcast_index(lay.ivf.quantizer)
    metric: Literal["ip", "l2"] = "l2"
    if quantizer.metric_type == faiss.METRIC_INNER_PRODUCT:
        metric = "ip"
    centroids = kmeans(
        x,
        lay.ivf.nlist,
        niter=lay.ivf.cp.niter,
        seed=lay.ivf.cp.seed,
        metric=metric,
        spherical=bool(lay.ivf.cp.spherical),
        device=kmeans_device,
        max_points_per_centroid=lay.ivf.cp.max_points_per_centroid,
    )
    quantizer.reset()
    quantizer.add(centroids)
    index.train(xt)


def torch_cuda() -> str | None:
    """ "cuda" when torch sees a GPU, else None."""
    import torch

    return "cuda" if torch.cuda.is_available() else None
