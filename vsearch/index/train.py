"""Training: the empty, trained index of a snapshot (``indexes/{snapshot}/trained.index``).

The spec is chosen (or parsed from an explicit factory string), a training
sample is drawn by id hash — disjoint from the held-out validation queries —
and faiss trains OPQ, the IVF centroids and the PQ codebooks with fixed
seeds. The IVF k-means runs on a GPU when there is one: through faiss-gpu when
faiss sees it, else through torch (``vsearch.index.kmeans``: faiss-gpu ships
for CUDA 12 only). The index itself stays a CPU index, so what is written is
the same kind of object either way.

A commit record (``trained.json``) names the inputs; a rerun with the same
inputs finds it and does nothing, so a retry never changes the bytes that
shards were built from.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Unpack

import numpy as np

from vsearch.canonical_json import fingerprint as json_fingerprint
from vsearch.index.layout import trained_key
from vsearch.index.options import Device, IndexOptions, IndexOverrides
from vsearch.index.partition_vectors import Inventory, inventory, iter_vectors, training_sample
from vsearch.index.spec import IndexSpec, Metric, choose_spec, spec_from_factory
from vsearch.index.structure import layers, put_index
from vsearch.index.trained_record import (
    TrainedRecord,
    find_trained_record,
    read_trained_record,
    write_trained_record,
)
from vsearch.storage import ObjectStore

__all__ = ["GpuUnavailable", "read_trained_record", "resolve_spec", "train_index"]

log = logging.getLogger(__name__)

# faiss's OPQ default is 50 iterations; 10 reach the recall goal in
# bench/index_bench.py at a fifth of the cost (OPQ dominates CPU training time).
OPQ_NITER = 10


class GpuUnavailable(RuntimeError):
    """device='gpu' was asked for but faiss sees no GPU."""


def detect_metric(store: ObjectStore, inv: Inventory) -> Metric:
    """ "ip" when the vectors are L2-normalised (inner product = cosine), else "l2"."""
    for xb, _ in iter_vectors(store, inv):
        norms = np.linalg.norm(xb[:1000], axis=1)
        return "ip" if np.allclose(norms, 1.0, atol=1e-3) else "l2"
    return "ip"  # pragma: no cover - inventory() refuses an empty snapshot


def resolve_spec(inv: Inventory, options: IndexOptions, metric: Metric) -> IndexSpec:
    """The explicit factory's spec, else the one ``choose_spec`` picks for the budgets."""
    if options.factory:
        return spec_from_factory(
            options.factory, inv.n, inv.d, metric=metric, k_factor=options.k_factor
        )
    return choose_spec(
        inv.n,
        inv.d,
        bytes_per_vector_budget=options.bytes_per_vector,
        max_query_ms=options.max_query_ms,
        memory_floor_mb=options.memory_floor_mb,
        metric=metric,
        nshards=options.nshards,
        k_factor=options.k_factor,
    )


def train_index(
    store: ObjectStore,
    snapshot_id: str,
    options: IndexOptions | None = None,
    *,
    n_train: int | None = None,
    **overrides: Unpack[IndexOverrides],
) -> str:
    """Train the snapshot's index on a sample of its embeddings; return the key of
    ``trained.index``. ``options`` (default: the settings' defaults, ``overrides``
    applied) say how; an explicit ``factory`` overrides the budget-driven choice."""
    options = (options or IndexOptions()).with_overrides(**overrides)
    inv = inventory(store, snapshot_id)
    spec = resolve_spec(inv, options, options.metric or detect_metric(store, inv))
    n_train = spec.n_train if n_train is None else min(n_train, inv.n)
    seed, nq, nshards = options.seed, options.nq, options.nshards
    inputs = {
        "partitions": inv.fingerprint(),
        "spec": spec.to_dict(),
        "seed": seed,
        "nq": nq,
        "n_train": n_train,
        "nshards": nshards,
    }
    fingerprint = json_fingerprint(inputs)
    key = trained_key(snapshot_id)
    record = find_trained_record(store, snapshot_id)
    if record and record.input_fingerprint == fingerprint and _intact(store, key, record):
        log.info("%s: already trained with the same inputs", key)
        return key

    import faiss

    index = faiss.index_factory(inv.d, spec.factory, spec.faiss_metric)
    keep = configure_training(index, spec, seed)
    started, used, kmeans = time.perf_counter(), "none", "none"
    sample_size = 0
    if not index.is_trained:
        xt = training_sample(store, inv, n_train, nq, seed)
        sample_size = len(xt)
        log.info("training %s on %d x %d vectors", spec.factory, *xt.shape)
        used, kmeans = train_on(index, xt, options.device)
    release_training(index, keep)
    seconds = time.perf_counter() - started
    info = put_index(store, key, index)
    assert info.sha256 is not None
    write_trained_record(
        store,
        TrainedRecord(
            snapshot_id=snapshot_id,
            input_fingerprint=fingerprint,
            spec=spec,
            seed=seed,
            nq=nq,
            nshards=nshards,
            n_train=sample_size,
            sha256=info.sha256,
            bytes=info.size,
            train_seconds=round(seconds, 3),
            device=used,
            kmeans=kmeans,
            faiss_version=faiss.__version__,
        ),
    )
    log.info(
        "trained %s in %.1fs on %s (k-means: %s): %s", spec.factory, seconds, used, kmeans, key
    )
    return key


def _intact(store: ObjectStore, key: str, record: TrainedRecord) -> bool:
    try:
        sha, size = store.sha256(key)
    except KeyError:
        return False
    return bool(sha == record.sha256 and size == record.bytes)


def configure_training(index: Any, spec: IndexSpec, seed: int) -> list[Any]:
    """Fixed seeds for every k-means inside ``index``, OPQ settings, the refine
    shortlist size. Returns objects that must stay alive until training ends."""
    import faiss

    lay, keep = layers(index), []
    if lay.ivf is not None:
        lay.ivf.cp.seed = seed
    pq = getattr(lay.core, "pq", None)
    if pq is not None:
        pq.cp.seed = seed + 1
    if lay.pretransform is not None:
        for i in range(lay.pretransform.chain.size()):
            vt = faiss.downcast_VectorTransform(lay.pretransform.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix):
                vt.niter = OPQ_NITER
                if pq is not None and pq.nbits == 4:
                    # OPQ optimises the rotation for an 8-bit PQ unless told otherwise:
                    # matching the 4-bit PQ really used is both better and ~10x faster.
                    inner = faiss.ProductQuantizer(vt.d_out, vt.M, 4)
                    inner.cp.seed = seed + 2
                    vt.pq = inner
                    keep.append(inner)
    if lay.refine is not None and spec.k_factor:
        lay.refine.k_factor = float(spec.k_factor)
    return keep


def release_training(index: Any, keep: list[Any]) -> None:
    """Drop pointers to the training-only objects before they are freed."""
    import faiss

    lay = layers(index)
    if keep and lay.pretransform is not None:
        for i in range(lay.pretransform.chain.size()):
            vt = faiss.downcast_VectorTransform(lay.pretransform.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix):
                vt.pq = None
    keep.clear()


def train_on(
    index: Any, xt: np.ndarray, device: Device, *, kmeans_device: str | None = None
) -> tuple[str, str]:
    """Train ``index`` (a CPU index) on ``xt``; return (device, what ran the IVF k-means).

    The IVF centroids are clustered by, in order of preference: faiss-gpu when
    faiss sees a GPU (an explicit GPU ``clustering_index``); torch's k-means on
    CUDA when torch sees a GPU and faiss does not; faiss on the CPU (a CPU flat
    ``clustering_index`` — the same code path as faiss-gpu's, and the HNSW
    coarse quantizer is built once from the final centroids instead of at every
    k-means step). ``kmeans_device`` forces the torch path on that torch device
    (the tests use "cpu"). OPQ, PQ and re-ranking codebooks train on the CPU.
    """
    import faiss

    from vsearch.index.kmeans import torch_cuda

    ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    ivf = layers(index).ivf
    if kmeans_device is None and device != "cpu" and ngpu == 0 and ivf is not None:
        kmeans_device = torch_cuda()
    if device == "gpu" and ngpu == 0 and kmeans_device is None:
        raise GpuUnavailable("device='gpu' but neither faiss nor torch sees a GPU")
    if kmeans_device is not None and ivf is not None:
        from vsearch.index.kmeans import train_with_centroids

        train_with_centroids(index, xt, kmeans_device)
        return ("gpu" if kmeans_device.startswith("cuda") else "cpu"), f"torch:{kmeans_device}"
    use_gpu = ngpu > 0 and device != "cpu"
    keep: list[Any] = []
    if ivf is not None:
        quantizer = faiss.downcast_index(ivf.quantizer)
        assign: Any = faiss.IndexFlat(ivf.d, quantizer.metric_type)
        if use_gpu:  # tests: a fake faiss-gpu checks the wiring; a device, the real thing
            res = faiss.StandardGpuResources()
            keep.append(res)
            assign = faiss.index_cpu_to_gpu(res, 0, assign)
        keep.append(assign)
        ivf.clustering_index = assign
    try:
        index.train(xt)
    finally:
        if ivf is not None:
            ivf.clustering_index = None
    if ivf is None:
        return "cpu", "none"
    return ("gpu", "faiss-gpu") if use_gpu else ("cpu", "faiss-cpu")
