"""Clustered synthetic embeddings for tests, benchmarks and the demo.

Uniform random vectors are the wrong stand-in for image embeddings: in high
dimension every point is about equally far from every other, so an IVF
partition captures nothing and recall@k measures noise. Real CLIP-like
embeddings are unit vectors whose variance decays over a few hundred
principal directions and which crowd into semantic clusters of very unequal
size. ``clustered_vectors`` imitates that; ``text_queries`` adds the
"modality gap" (text vectors of CLIP sit in a cone shifted away from the
image cone), which is why text->image recall is validated separately.
"""

from __future__ import annotations

import numpy as np


def _spectrum(d: int, decay: float) -> np.ndarray:
    # Power-law decay of per-direction scale, as seen in PCA of real embeddings.
    return np.asarray((1.0 + np.arange(d)) ** -decay, dtype="float32")


def _normalize(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype="float32")


def _cluster_model(
    d: int, nclusters: int, decay: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 0])
    scale = _spectrum(d, decay)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0].astype("float32")
    centers = rng.standard_normal((nclusters, d)).astype("float32") * scale
    # Zipf-like cluster sizes: a few big classes, a long tail of small ones.
    weights = (1.0 + np.arange(nclusters)) ** -0.7
    return centers, scale, basis, weights / weights.sum()


def clustered_vectors(
    n: int,
    d: int,
    *,
    nclusters: int = 256,
    spread: float = 0.6,
    decay: float = 0.6,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(xb, labels): ``n`` unit vectors of dimension ``d`` in ``nclusters`` clusters.

    Deterministic for a given (n, d, nclusters, spread, decay, seed), and the
    first ``n`` rows of a larger call are not the same rows: generate once.
    """
    centers, scale, basis, p = _cluster_model(d, nclusters, decay, seed)
    rng = np.random.default_rng([seed, 1])
    labels = rng.choice(nclusters, size=n, p=p)
    xb = np.empty((n, d), dtype="float32")
    for i0 in range(0, n, 65536):  # bounded temporaries for large n
        lab = labels[i0 : i0 + 65536]
        noise = rng.standard_normal((len(lab), d)).astype("float32") * scale * spread
        xb[i0 : i0 + len(lab)] = _normalize((centers[lab] + noise) @ basis)
    return xb, labels.astype("int64")


def text_queries(
    nq: int,
    d: int,
    *,
    nclusters: int = 256,
    spread: float = 0.6,
    decay: float = 0.6,
    gap: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """``nq`` "caption" vectors for the clusters of ``clustered_vectors(..., seed=seed)``.

    Each is a cluster's center plus noise, shifted by one fixed direction of
    norm ``gap`` relative to the data (the modality gap), then normalised.
    """
    centers, scale, basis, p = _cluster_model(d, nclusters, decay, seed)
    rng = np.random.default_rng([seed, 2])
    labels = rng.choice(nclusters, size=nq, p=p)
    noise = rng.standard_normal((nq, d)).astype("float32") * scale * spread
    x = centers[labels] + noise
    shift = rng.standard_normal(d).astype("float32")
    shift *= gap * float(np.linalg.norm(x, axis=1).mean()) / float(np.linalg.norm(shift))
    return _normalize((x + shift) @ basis)
